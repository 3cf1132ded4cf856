"""The values that flow between stages: what a source is, who a recipient is, what was sent."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

ROW_COLUMN = "__row__"  # each source row's line (CSV) or row number (SQL, sheet), 1-based
SOURCE_COLUMN = "__source__"  # which export a row came from (path or URL without password)


@dataclass(frozen=True)
class SourceSpec:
    """One export named by the manifest's [source] (or one entry of [[source]])."""

    path: str | None = None  # relative to the workspace
    url: str | None = None  # SQLAlchemy URL; ${VAR} read from .env or the environment
    query: str | None = None
    query_file: str | None = None
    encoding: str | None = None  # override detection
    delimiter: str | None = None  # override detection
    sheet: str | None = None  # .xlsx sheet name; first sheet when None


@dataclass(frozen=True)
class Reject:
    """A source row that will not be sent to, with the reason, so nobody is dropped silently."""

    source: str
    row: int
    column: str
    value: str
    reason: str


@dataclass(frozen=True, slots=True)  # a million of them: no __dict__ each
class LookAlike:
    """Two distinct recipients an operator should glance at; they are never merged."""

    first: str
    second: str
    reason: str


@dataclass(frozen=True)
class Review:
    """An address an operator should glance at: a typo domain, a role mailbox, SMTPUTF8,
    a line break folded out of a header."""

    email: str
    kind: str  # "typo domain", "role address", "SMTPUTF8" or "line break"
    detail: str  # why, and whether it is sent or held back
    source: str
    row: int  # its first source row


@dataclass(slots=True)  # a million of them: no __dict__ each, and no frozen __init__
class Recipient:
    """One person to tell: every affected row with the same address, merged."""

    key: str  # the normalised address: the identity used by the ledger
    email: str  # the address to send to
    fields: dict[str, Any]  # template field -> value (empty values left out)
    items: list[dict[str, Any]]  # one entry per affected row, in source order
    rows: list[int]  # source row numbers of every merged row
    source: str = ""  # the export of the first row

    @property
    def first_row(self) -> int:
        return self.rows[0]

    def where(self) -> str:
        """'<address> (<source> row N)' for error lines."""
        return f"{self.email} ({self.source} row {self.first_row})"


@dataclass(frozen=True)
class CleanResult:
    """What cleaning made of the raw rows."""

    recipients: list[Recipient]
    rejects: list[Reject]
    lookalikes: list[LookAlike]
    rows_read: int
    review: list[Review] = field(default_factory=list)  # flagged, one line per address

    @property
    def duplicates_merged(self) -> int:
        """Rows folded into another row's recipient."""
        return self.rows_read - len(self.rejects) - len(self.recipients)


@dataclass(frozen=True)
class Rendered:
    """One recipient's rendered texts, before the MIME message is built."""

    recipient: Recipient
    subject: str
    text: str
    html: str | None


class State(enum.StrEnum):
    """Where one recipient of one incident stands in the ledger."""

    PENDING = "pending"  # known, never handed to a relay
    SENDING = "sending"  # handed to the relay, outcome not yet recorded (in doubt after a crash)
    ACCEPTED = "accepted"  # the relay accepted it (2xx after DATA)
    DEFERRED = "deferred"  # temporary failure (4xx, lost connection): try again later
    REFUSED = "refused"  # permanent refusal (5xx): never retried to this address
    SOFT_BOUNCED = "soft-bounced"  # accepted, then bounced softly (mailbox full): re-sent later
    HARD_BOUNCED = "hard-bounced"  # bounced for good (no such user), no alternate: call them
    ALTERNATE = "alternate"  # bounced for good; due to be sent to the export's alternate address
    BLOCKED = "blocked"  # refused for the sender's reasons (policy, spam, x.7.x): fix, then resend
    GAVE_UP = "gave-up"  # still failing when the re-send schedule ran out
    SUPPRESSED = "suppressed"  # hard-bounced in an earlier incident: not sent to


@dataclass(frozen=True)
class Outcome:
    """What the relay said about one message."""

    key: str
    state: State
    code: int | None = None
    reply: str = ""


@dataclass
class RunSummary:
    """Counts a send (or preview) run prints at the end."""

    attempted: int = 0
    accepted: int = 0
    deferred: int = 0
    refused: int = 0
    in_doubt: int = 0
    undelivered: list[Outcome] = field(default_factory=list)


class BounceKind(enum.StrEnum):
    """What a bounce means for the recipient it names."""

    HARD = "hard"  # the address is bad (unknown user, mailbox or domain): never retry it
    SOFT = "soft"  # mailbox full, server down, greylisting: retry later
    SENDER = "sender"  # policy, auth, spam, reputation, rate, content: ours to fix, not theirs
    DELAYED = "delayed"  # a "still trying" notice: no action, never a re-send
    AUTO_REPLY = "auto-reply"  # out-of-office, vacation, autoresponder: not a bounce
    UNKNOWN = "unknown"  # looks like a bounce but cannot be classified
