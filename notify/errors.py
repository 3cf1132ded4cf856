"""Every error notify raises on purpose, and the exit code each one means.

    NotifyError                     exit 3: stopped before anything was sent
    ├── WorkspaceError              a manifest, template folder or workspace is missing
    ├── ManifestError               a manifest key is missing or has the wrong type
    ├── SettingsError               a setting in .env or the environment is invalid
    ├── SourceError                 an export cannot be read (file, row, column)
    ├── RenderError                 templates failed for one or more recipients
    │   ├── HeaderError             a rendered header holds a control character
    │   ├── AttachmentError         an attachment is missing, unreadable, outside the
    │   │                           workspace, or makes a message too big for the relay
    │   └── RunawayError            a template ran past its time or size limit: stops at once
    ├── LedgerError                 the delivery ledger cannot be opened or written
    ├── BounceError                 a bounce mailbox cannot be read
    ├── ReplyError                  a customer's reply to mark answered is not in the ledger
    ├── OutputError                 a report, preview or check file cannot be written (path)
    ├── ConfirmationError           exit 2: sending needs --yes without a terminal
    ├── StoppedError                a send stopped part way: its cause's line and exit code
    └── DeliveryError               exit 4: the relay cannot be used at all
        ├── ConnectError            the relay is unreachable or TLS failed (host, port)
        ├── AuthError               the relay refused the login (host, port, user)
        └── SenderRefusedError      the relay refused MAIL FROM (host, port)

A third-party exception is translated once, at the module that meets it, with
``raise ... from exc``. Each message is one line: what, where, and the next action.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_UNDELIVERED = 1  # some recipients were not delivered; the summary says who
EXIT_USAGE = 2  # bad options (click's own), or --yes missing without a terminal
EXIT_STOPPED = 3  # bad input or settings: stopped before anything was sent
EXIT_DELIVERY = 4  # the relay could not be used; nothing more was sent
EXIT_INTERRUPTED = 130  # Ctrl-C: what was sent is recorded; run the same command again


def exit_status(*, undelivered: int) -> int:
    """The code of a run that went to the end: 1 while anyone it tried is not delivered."""
    return EXIT_UNDELIVERED if undelivered else EXIT_OK


class NotifyError(Exception):
    """Base of every expected failure; ``str()`` is the one line shown to the user."""

    exit_code = EXIT_STOPPED


class WorkspaceError(NotifyError):
    """A file or folder the workspace should have is missing."""


class ManifestError(NotifyError):
    """An incident manifest is malformed."""


class SettingsError(NotifyError):
    """A setting is missing or invalid."""


class SourceError(NotifyError):
    """An export cannot be read; the message names file, row and column."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        super().__init__(message)
        self.path = path
        self.row = row
        self.column = column


class RenderError(NotifyError):
    """One or more recipients' messages could not be rendered."""

    def __init__(self, message: str, *, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


class HeaderError(RenderError):
    """A rendered header value would break the header block."""


class AttachmentError(RenderError):
    """A recipient's attachment cannot be sent: the file, or the message it makes."""


class RunawayError(RenderError):
    """A template ran past its time or size limit. It would likely do so for every
    recipient, a few seconds each, so the check stops at the first instead of listing all."""


class LedgerError(NotifyError):
    """The delivery ledger cannot be used."""


class BounceError(NotifyError):
    """A bounce source (mbox, Maildir, IMAP) cannot be read."""


class ReplyError(NotifyError):
    """A customer's reply named on the command line is not in the ledger."""


class OutputError(NotifyError):
    """A file notify was asked to write (report, previews, check's lists) cannot be written."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class ConfirmationError(NotifyError):
    """Sending needs an explicit yes, and there is nobody to ask."""

    exit_code = EXIT_USAGE


class StoppedError(NotifyError):
    """A send stopped part way by another error; says how far it got and to run it again."""

    def __init__(self, cause: NotifyError, *, accepted: int) -> None:
        super().__init__(
            f"{cause} (stopped after {accepted} accepted; run the same command again to continue)"
        )
        self.exit_code = cause.exit_code


class DeliveryError(NotifyError):
    """The relay cannot be used; the run stops and unsent recipients stay pending."""

    exit_code = EXIT_DELIVERY

    def __init__(self, message: str, *, host: str = "", port: int = 0) -> None:
        super().__init__(message)
        self.host = host
        self.port = port


class ConnectError(DeliveryError):
    """The relay is unreachable, closed the connection, or failed TLS."""


class AuthError(DeliveryError):
    """The relay refused our login."""


class SenderRefusedError(DeliveryError):
    """The relay refused the envelope sender, so no recipient can be sent to."""
