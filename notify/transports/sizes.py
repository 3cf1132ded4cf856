"""Every message of a run against the relay's SIZE (RFC 1870), before the first one leaves.

The relay states its limit only on an open connection, so the send's first connection
has every message checked as soon as it is open: one too big stops the run with nothing
sent, naming its recipient and row, instead of a refusal half way through.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from notify.compose import Outgoing
from notify.errors import AttachmentError
from notify.models import Outcome, Recipient
from notify.transports.smtp import SmtpTransport


class SizeLimited:
    """An SMTP transport whose opening checks the run's messages against the relay's SIZE."""

    def __init__(self, inner: SmtpTransport, check: Callable[[int], None]) -> None:
        self.inner = inner
        self.check = check  # given the relay's limit in bytes; raises when a message is over

    def open(self) -> None:
        self.inner.open()
        limit = self.inner.size_limit
        if limit is not None:
            self.check(limit)

    def send(self, message: Outgoing) -> Outcome:
        return self.inner.send(message)

    def close(self) -> None:
        self.inner.close()


def require_fits(sizes: Iterable[tuple[Recipient, int]], limit: int, *, relay: str) -> None:
    """Raise AttachmentError listing every message over `limit` bytes."""
    problems = [
        f"{recipient.where()}: the message is {_megabytes(size)}, over the "
        f"{_megabytes(limit)} the relay at {relay} takes (SIZE {limit}); "
        "attach fewer or smaller files"
        for recipient, size in sizes
        if size > limit
    ]
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise AttachmentError(
            f"{len(problems)} message(s) too big for the relay; nothing was sent. "
            f"First: {problems[0]}{more}",
            problems=problems,
        )


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"
