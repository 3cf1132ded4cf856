"""What every mailbox hands over: one stored message at a time, with an id to move it by."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self


@dataclass(frozen=True)
class Mail:
    """One message exactly as stored, with an id that names it within its mailbox."""

    id: str  # mbox: message number; Maildir: unique name; IMAP: "UIDVALIDITY:UID"
    raw: bytes


class Mailbox(Protocol):
    """Where bounces are read from; `where` is shown to the user and never holds a password."""

    where: str

    def messages(self) -> Iterator[Mail]: ...

    def move(self, ids: Sequence[str], folder: str) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class MailboxBase:
    """`with open_…(…) as box:` closes the mailbox whatever happens."""

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def modified_utf7(name: str) -> str:
    """A folder name as IMAP and Dovecot's Maildir++ store it: non-ASCII in modified
    UTF-7 (RFC 3501 5.1.3), '&' as '&-'."""
    runs = re.split(r"([^\x20-\x7e]+)", name)  # odd items are the non-ASCII runs
    return "".join(
        _utf7(run) if odd % 2 else run.replace("&", "&-") for odd, run in enumerate(runs)
    )


def _utf7(run: str) -> str:
    utf16 = base64.b64encode(run.encode("utf-16-be")).decode().rstrip("=")
    return "&" + utf16.replace("/", ",") + "-"


@dataclass(frozen=True)
class Unmatched:
    """A message no recipient of the incident could be found for; left where it was."""

    mail_id: str
    reason: str
