"""The values that flow between stages: what a source is, who a recipient is, what was sent."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

ROW_COLUMN = "__row__"  # each source row's line (CSV) or row number (SQL, sheet), 1-based
SOURCE_COLUMN = "__source__"  # which export a row came from (path or URL without password)
NOTE_COLUMN = "__note__"  # only when a row needs a look: why (a line that was not UTF-8)
ORIGIN_COLUMNS = (ROW_COLUMN, SOURCE_COLUMN, NOTE_COLUMN)  # not columns of the export


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


class RejectKind(enum.StrEnum):
    """Why a source row is not sent to: the first words of its reason."""

    NO_ADDRESS = "no address"  # the address cell is empty
    INVALID_ADDRESS = "not a valid address"  # email-validator refused it
    TYPO_DOMAIN = "likely typo domain"  # held back unless --allow-typo-domains


@dataclass(frozen=True)
class Reject:
    """A source row that will not be sent to, with the reason, so nobody is dropped silently."""

    source: str
    row: int
    column: str
    value: str
    reason: str  # starts with the kind's words: "not a valid address: ..."

    @property
    def kind(self) -> RejectKind:
        return RejectKind(self.reason.partition(":")[0])


@dataclass(frozen=True, slots=True)  # a million of them: no __dict__ each
class LookAlike:
    """Two distinct recipients an operator should glance at; they are never merged."""

    first: str
    second: str
    reason: str


@dataclass(frozen=True)
class Review:
    """An address or row an operator should glance at: a typo domain, a role mailbox,
    SMTPUTF8, a line that was not UTF-8, a value holding bidirectional controls, a line
    break folded out of a header."""

    email: str
    kind: str  # typo domain, role address, SMTPUTF8, not UTF-8, bidi control, line break
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
    review: list[Review] = field(default_factory=list)  # flagged: one line per address or row

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


class Event(enum.StrEnum):
    """What happens to a recipient; each is allowed only from the states TRANSITIONS lists."""

    HANDED_OVER = "handed over"  # its message is about to be committed at the relay
    ACCEPTED = "accepted"  # the relay said 250 after the data
    DEFERRED = "deferred"  # 4xx, or the connection was lost before the data went
    REFUSED = "refused"  # 5xx
    IN_DOUBT = "in doubt"  # the data went, the reply never came
    SUPPRESSED = "suppressed"  # its address is on the suppression list
    LIFTED = "lifted"  # its address came off the suppression list
    HARD_BOUNCE = "hard bounce"  # bounced for good, no alternate address
    TO_ALTERNATE = "to alternate"  # bounced or refused for good; the alternate is due
    SOFT_BOUNCE = "soft bounce"  # bounced for now (mailbox full): re-sent on the schedule
    BLOCKED = "blocked"  # refused or bounced for the sender's reasons (policy, spam)
    GAVE_UP = "gave up"  # the re-send schedule ran out


_OUTCOMES = {  # what the relay can say about a message handed over
    Event.ACCEPTED: State.ACCEPTED,
    Event.DEFERRED: State.DEFERRED,
    Event.REFUSED: State.REFUSED,
    Event.IN_DOUBT: State.SENDING,
}
_SENDABLE = (  # states a message may be handed over from
    State.PENDING,  # never sent
    State.SENDING,  # in doubt after a crash: sent again, same address, same Message-ID
    State.DEFERRED,
    State.SOFT_BOUNCED,
    State.ALTERNATE,
    State.BLOCKED,  # only when the operator says the cause is fixed (resend --blocked)
)
# Every allowed change of a recipient's state: (from, event) -> to. The ledger refuses any
# other. No event leads out of ACCEPTED but a bounce: a message the relay accepted is
# never handed over again unless a bounce said it did not arrive.
TRANSITIONS: dict[tuple[State, Event], State] = {
    **{(state, Event.HANDED_OVER): State.SENDING for state in _SENDABLE},
    **{(State.SENDING, event): state for event, state in _OUTCOMES.items()},
    **{(state, Event.SUPPRESSED): State.SUPPRESSED for state in _SENDABLE},
    (State.SUPPRESSED, Event.LIFTED): State.PENDING,
    (State.ACCEPTED, Event.HARD_BOUNCE): State.HARD_BOUNCED,
    (State.ACCEPTED, Event.TO_ALTERNATE): State.ALTERNATE,
    (State.REFUSED, Event.TO_ALTERNATE): State.ALTERNATE,
    (State.ACCEPTED, Event.SOFT_BOUNCE): State.SOFT_BOUNCED,
    (State.REFUSED, Event.SOFT_BOUNCE): State.SOFT_BOUNCED,
    (State.ACCEPTED, Event.BLOCKED): State.BLOCKED,
    (State.REFUSED, Event.BLOCKED): State.BLOCKED,
    (State.ACCEPTED, Event.GAVE_UP): State.GAVE_UP,  # soft-bounced with the schedule spent
    (State.DEFERRED, Event.GAVE_UP): State.GAVE_UP,
    (State.SOFT_BOUNCED, Event.GAVE_UP): State.GAVE_UP,
}


def target_of(event: Event) -> State:
    """The state an event leads to (one per event, whatever the state it left)."""
    return next(to for (_, happening), to in TRANSITIONS.items() if happening is event)


def sources_of(event: Event) -> tuple[State, ...]:
    """The states `event` may happen in, for set-wise statements."""
    return tuple(state for state, happening in TRANSITIONS if happening is event)


def outcome_event(state: State) -> Event:
    """The event that records a relay's outcome: its state after the message was handed over."""
    return next(event for event, to in _OUTCOMES.items() if to is state)


@dataclass(frozen=True)
class Outcome:
    """What the relay said about one message."""

    key: str
    state: State
    code: int | None = None
    reply: str = ""


@dataclass(frozen=True)
class Undelivered:
    """A recipient a run tried and did not deliver, as the ledger has it now."""

    key: str
    email: str
    state: State
    code: int | None
    reply: str | None
    first_row: int | None


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
