"""What the ledger says: an incident's counts and what is due next, the senders at work,
and where the ledger lives. Read-only (bar migrating and copying), so `notify status`
is cheap enough to run every few seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime

from notify import schedule
from notify.ledger import SCHEMA_VERSION, Ledger, inbox, store
from notify.ledger.claims import SenderInfo, fleet, in_flight
from notify.manifest import load_manifest
from notify.models import State
from notify.workspace import Context


@dataclass
class StatusReport:
    """Counts by state, the senders at work, and the next thing to do."""

    incident_id: str
    counts: dict[State, int]
    due: str
    in_flight: int = 0  # SENDING rows a live sender holds; the rest of SENDING is in doubt
    senders: list[SenderInfo] = field(default_factory=list)
    awaiting_answer: int = 0  # customers who replied and wait for an answer

    @property
    def in_doubt(self) -> int:
        return self.counts[State.SENDING] - self.in_flight

    def as_dict(self) -> dict[str, object]:
        return {
            "incident": self.incident_id,
            "counts": {state.value: n for state, n in self.counts.items()},
            "in_flight": self.in_flight,
            "in_doubt": self.in_doubt,
            "total": sum(self.counts.values()),
            "awaiting_answer": self.awaiting_answer,
            "due": self.due,
            "senders": [asdict(s) for s in self.senders],
        }


def status(context: Context, incident_id: str) -> StatusReport:
    """Read the ledger only: cheap enough to run every few seconds."""
    load_manifest(context.workspace, incident_id)  # a typo in the id should say so, not zeros
    settings = context.settings
    if not context.ledger_exists():
        return StatusReport(
            incident_id,
            dict.fromkeys(State, 0),
            f"nothing sent yet: run notify check --incident {incident_id}",
        )
    ledger = context.ledger()
    counts = ledger.counts(incident_id)
    next_due = None
    if counts[State.DEFERRED] or counts[State.SOFT_BOUNCED]:
        scheduled = store.recipients(ledger, incident_id, states=store.RESENT_STATES)
        next_due = schedule.next_due(scheduled, settings.resend_schedule)
    awaiting = len(inbox.waiting(ledger, incident_id))
    due = _what_is_due(incident_id, counts, next_due, awaiting=awaiting)
    return StatusReport(
        incident_id,
        counts,
        due,
        in_flight(ledger, incident_id),
        fleet(ledger, incident_id),
        awaiting,
    )


def _what_is_due(
    incident_id: str,
    counts: Mapping[State, int],
    next_due: datetime | None,
    *,
    awaiting: int = 0,
) -> str:
    """The next thing to do, most urgent first; several clauses when several apply."""
    if sum(counts.values()) == 0:
        return f"nothing sent yet: run notify check --incident {incident_id}"
    owed = counts[State.PENDING] + counts[State.SENDING]
    later = counts[State.DEFERRED] + counts[State.SOFT_BOUNCED]
    unreachable = sum(
        counts[s] for s in (State.HARD_BOUNCED, State.GAVE_UP, State.REFUSED, State.SUPPRESSED)
    )
    clauses = []
    if awaiting:  # a customer who asked and never heard back is the worst outcome
        clauses.append(
            f"{awaiting} replied and wait for an answer: notify report --incident "
            f"{incident_id} lists them first"
        )
    if owed:
        clauses.append(
            f"{owed + counts[State.DEFERRED]} not yet accepted: run notify send "
            f"--incident {incident_id}"
        )
    if counts[State.ALTERNATE]:
        clauses.append(
            f"{counts[State.ALTERNATE]} due at their alternate address now: run "
            f"notify resend --incident {incident_id}"
        )
    if later and next_due is not None:
        clauses.append(
            f"{later} re-send(s) scheduled, the next due {next_due:%Y-%m-%d %H:%M} "
            f"UTC: notify resend --incident {incident_id} (notify schedule "
            "automates it)"
        )
    if counts[State.BLOCKED]:
        clauses.append(
            f"{counts[State.BLOCKED]} refused for the sender's reasons (policy, "
            "spam): fix the sending, then run notify resend --incident "
            f"{incident_id} --blocked"
        )
    if unreachable:
        clauses.append(
            f"{unreachable} unreachable: notify report --incident {incident_id} "
            "lists them with their phone numbers"
        )
    return "; ".join(clauses) or "nothing is due"


@dataclass
class LedgerInfo:
    """Where the ledger lives and which schema it has."""

    where: str
    version: int
    migrations: list[tuple[int, str]]
    incidents: dict[str, int]


def ledger_info(context: Context) -> LedgerInfo:
    """Open (and so migrate) the configured ledger and describe it."""
    ledger = context.ledger()
    return LedgerInfo(ledger.where, SCHEMA_VERSION, ledger.migrations(), ledger.incidents())


def ledger_copy(context: Context, *, target: str) -> tuple[int, str]:
    """Copy every row of the configured ledger into another (e.g. SQLite to PostgreSQL)."""
    destination = Ledger.open(target, setting="--to")  # first: a bad --to creates nothing here
    source = context.ledger()
    return source.copy_to(destination), destination.where
