"""The ledger after the first send: bounces recorded once, suppressions, re-sends due.

A bounce changes a recipient only when it is new (its fingerprint is not in the ledger
yet) and only from ACCEPTED, so reading a mailbox twice changes nothing. A hard bounce
suppresses the address for every later incident and, where the export has an alternate
address, makes that one due; a soft one schedules a re-send; a refusal for the sender's
reasons (policy, spam, x.7.x) never marks the address bad.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from notify.bounces.parse import Bounce
from notify.ledger import (
    Ledger,
    bounces_table,
    events_table,
    recipients_table,
)
from notify.models import BounceKind, State
from notify.replies import classify, enhanced_status
from notify.schedule import as_utc, due_at
from notify.suppressions import suppress

RESENT_STATES = (State.DEFERRED, State.SOFT_BOUNCED, State.ALTERNATE, State.BLOCKED)


@dataclass(frozen=True)
class LedgerRecipient:
    """What the ledger knows of one recipient, for bounces, re-sends and reports."""

    incident_id: str
    key: str
    email: str
    state: State
    sent_to: str | None
    alt_email: str | None
    resends: int
    attempts: int
    code: int | None
    reply: str | None
    first_row: int | None
    source: str | None
    updated_at: datetime

    @property
    def address(self) -> str:
        """The address now in use: the alternate one after a hard bounce."""
        return self.sent_to or self.email


@dataclass(frozen=True)
class BounceEffect:
    """What one new bounce did to its recipient."""

    recipient: LedgerRecipient
    kind: BounceKind
    state: State  # the recipient's state afterwards (unchanged for delayed notices)
    address: str  # the address that bounced


def recipients(
    ledger: Ledger, incident_id: str, *, states: Iterable[State] | None = None
) -> list[LedgerRecipient]:
    """Every recipient of an incident (or those in `states`), in source order."""
    table = recipients_table
    query = sa.select(table).where(table.c.incident_id == incident_id)
    if states is not None:
        query = query.where(table.c.state.in_([s.value for s in states]))
    with ledger.engine.connect() as connection:
        rows = connection.execute(query.order_by(table.c.first_row)).all()
    return [_recipient(row) for row in rows]


def by_tokens(ledger: Ledger, tokens: Iterable[str]) -> dict[str, LedgerRecipient]:
    """Recipients of any incident by their VERP / Message-ID token."""
    wanted = sorted(set(tokens))
    if not wanted:
        return {}
    table = recipients_table
    with ledger.engine.connect() as connection:
        rows = connection.execute(sa.select(table).where(table.c.token.in_(wanted))).all()
    return {row.token: _recipient(row) for row in rows}


def record_bounce(
    ledger: Ledger,
    recipient: LedgerRecipient,
    bounce: Bounce,
    *,
    mailbox: str,
    schedule: Sequence[float],
    now: datetime,
) -> BounceEffect | None:
    """Record a bounce for its recipient in one transaction; None when already recorded."""
    failed = bounce.recipients[0] if bounce.recipients else None
    address = _bounced_address(recipient, failed.address if failed else None)
    diagnostic = _one_line(failed.diagnostic if failed else "")
    status = failed.status if failed else None
    row: dict[str, object] = {
        "fingerprint": bounce.fingerprint,
        "incident_id": recipient.incident_id,
        "key": recipient.key,
        "address": address,
        "kind": bounce.kind.value,
        "status": status,
        "diagnostic": diagnostic,
        "mailbox": mailbox,
        "read_at": now,
    }
    state = _state_after(recipient, bounce.kind, address, schedule=schedule, now=now)
    with ledger.engine.begin() as connection:
        inserted = connection.execute(ledger.insert(bounces_table).on_conflict_do_nothing(), row)
        if inserted.rowcount == 0:
            return None
        if bounce.kind is BounceKind.HARD:
            reason = " ".join(filter(None, ("hard bounce:", status, diagnostic)))
            suppress(connection, ledger, address, reason, recipient.incident_id, now)
        if state is not recipient.state:
            changes = _changes(recipient, state)
            _set(connection, recipient, state, now, reply=diagnostic, **changes)
    return BounceEffect(recipient, bounce.kind, state, address)


def _bounced_address(recipient: LedgerRecipient, named: str | None) -> str:
    """The address of ours that bounced: the one the bounce names when it is one we used
    (a late bounce from the first address), else the one in use (a forwarded mailbox
    may name an address we never wrote to)."""
    used = {recipient.email.lower(), (recipient.sent_to or "").lower()}
    if named and named.lower() in used:
        return named.lower()
    return recipient.address.lower()


def _state_after(
    recipient: LedgerRecipient,
    kind: BounceKind,
    address: str,
    *,
    schedule: Sequence[float],
    now: datetime,
) -> State:
    """The recipient's next state; only a message the relay accepted can bounce, and a
    late bounce from an address no longer in use changes nothing."""
    if recipient.state is not State.ACCEPTED or address != recipient.address.lower():
        return recipient.state
    if kind is BounceKind.HARD:
        alternate = recipient.alt_email
        usable = alternate and alternate.lower() != address and not recipient.sent_to
        return State.ALTERNATE if usable else State.HARD_BOUNCED
    if kind is BounceKind.SOFT:
        if due_at(now, recipient.resends, schedule) is None:
            return State.GAVE_UP
        return State.SOFT_BOUNCED
    if kind is BounceKind.SENDER:
        return State.BLOCKED
    return recipient.state  # delayed, unknown: the relay is still at it, or we cannot tell


def _changes(recipient: LedgerRecipient, state: State) -> dict[str, object]:
    if state is State.ALTERNATE:
        return {"sent_to": recipient.alt_email, "resends": 0}
    return {}


def settle_refusals(ledger: Ledger, incident_id: str, *, now: datetime) -> int:
    """A 5xx during the send is a bounce that came back at once, classified like one: a
    hard one suppresses the address and makes the export's alternate address due; a
    policy refusal (x.7.x) is the sender's problem and suppresses nothing; a full mailbox
    is re-sent on the schedule. Returns how many recipients changed state."""
    changed = 0
    refused = recipients(ledger, incident_id, states=[State.REFUSED])
    with ledger.engine.begin() as connection:
        for recipient in refused:
            kind = _refusal_kind(recipient)
            if kind in (BounceKind.SENDER, BounceKind.SOFT):
                state = State.BLOCKED if kind is BounceKind.SENDER else State.SOFT_BOUNCED
                _set(connection, recipient, state, now, reply=recipient.reply)
                changed += 1
                continue
            reason = f"refused during the send: {_one_line(recipient.reply or '')}"
            suppress(connection, ledger, recipient.address.lower(), reason, incident_id, now)
            alternate = recipient.alt_email
            if alternate and not recipient.sent_to and alternate.lower() != recipient.key:
                changes = _changes(recipient, State.ALTERNATE)
                _set(connection, recipient, State.ALTERNATE, now, reply=recipient.reply, **changes)
                changed += 1
    return changed


def _refusal_kind(recipient: LedgerRecipient) -> BounceKind:
    """A refusal read the way a bounce is: '552 5.2.2 mailbox full' is soft even as a 5xx."""
    reply = recipient.reply or ""
    status = enhanced_status(reply)
    code = ".".join(map(str, status)) if status else None
    return classify(code, f"{recipient.code or ''} {reply}".strip())


def due(
    candidates: Sequence[LedgerRecipient],
    schedule: Sequence[float],
    now: datetime,
    *,
    blocked: bool = False,
) -> tuple[list[LedgerRecipient], list[LedgerRecipient]]:
    """(due now, given up): soft bounces and deferrals by the schedule, alternates at
    once, blocked ones only when the operator says the cause is fixed."""
    ready: list[LedgerRecipient] = []
    exhausted: list[LedgerRecipient] = []
    for recipient in candidates:
        if recipient.state is State.ALTERNATE or (blocked and recipient.state is State.BLOCKED):
            ready.append(recipient)
        elif recipient.state in (State.DEFERRED, State.SOFT_BOUNCED):
            when = due_at(recipient.updated_at, recipient.resends, schedule)
            if when is None:
                exhausted.append(recipient)
            elif when <= now:
                ready.append(recipient)
    return ready, exhausted


def next_due(candidates: Sequence[LedgerRecipient], schedule: Sequence[float]) -> datetime | None:
    """The earliest moment a scheduled re-send falls due, for `notify status`."""
    times = [
        due_at(r.updated_at, r.resends, schedule)
        for r in candidates
        if r.state in (State.DEFERRED, State.SOFT_BOUNCED)
    ]
    return min((t for t in times if t is not None), default=None)


def claim(
    ledger: Ledger,
    chosen: Sequence[LedgerRecipient],
    *,
    holder: str,
    lease_until: float,
    now: datetime,
) -> list[LedgerRecipient]:
    """Mark the chosen recipients SENDING for this holder, each only if nobody changed it
    since it was read: two `notify resend` started together never send the same one."""
    table = recipients_table
    taken = []
    with ledger.engine.begin() as connection:
        for recipient in (r for r in chosen if r.state in RESENT_STATES):
            step = 0 if recipient.state is State.ALTERNATE else 1
            result = connection.execute(
                table.update()
                .where(
                    table.c.incident_id == recipient.incident_id,
                    table.c.key == recipient.key,
                    table.c.state == recipient.state.value,
                    table.c.updated_at == recipient.updated_at,
                )
                .values(
                    state=State.SENDING.value,
                    claimed_by=holder,
                    lease_until=lease_until,
                    attempts=table.c.attempts + 1,
                    resends=sa.func.coalesce(table.c.resends, 0) + step,
                    updated_at=now,
                )
            )
            if result.rowcount == 1:
                taken.append(recipient)
    return taken


def restore(ledger: Ledger, claimed: Sequence[LedgerRecipient]) -> None:
    """Put claimed recipients that never left back as they were, schedule and all."""
    table = recipients_table
    with ledger.engine.begin() as connection:
        for recipient in claimed:
            connection.execute(
                table.update()
                .where(table.c.incident_id == recipient.incident_id, table.c.key == recipient.key)
                .values(
                    state=recipient.state.value,
                    resends=recipient.resends,
                    updated_at=recipient.updated_at,
                    claimed_by=None,
                    lease_until=None,
                )
            )


def accepted_at(ledger: Ledger, incident_id: str) -> dict[str, datetime]:
    """When the relay last accepted each recipient's message, from the history."""
    table = events_table
    query = (
        sa.select(table.c.key, sa.func.max(table.c.at))
        .where(table.c.incident_id == incident_id, table.c.state == State.ACCEPTED.value)
        .group_by(table.c.key)
    )
    with ledger.engine.connect() as connection:
        return {key: as_utc(at) for key, at in connection.execute(query)}


def give_up(ledger: Ledger, exhausted: Sequence[LedgerRecipient], *, now: datetime) -> None:
    """The schedule ran out: list them for a personal follow-up, send no more."""
    with ledger.engine.begin() as connection:
        for recipient in exhausted:
            _set(connection, recipient, State.GAVE_UP, now, reply=recipient.reply)


def _set(
    connection: sa.Connection,
    recipient: LedgerRecipient,
    state: State,
    now: datetime,
    *,
    reply: str | None,
    **changes: object,
) -> None:
    table = recipients_table
    connection.execute(
        table.update()
        .where(table.c.incident_id == recipient.incident_id, table.c.key == recipient.key)
        .values(state=state.value, reply=reply, updated_at=now, **changes)
    )
    connection.execute(
        events_table.insert().values(
            incident_id=recipient.incident_id,
            key=recipient.key,
            state=state.value,
            code=None,
            reply=reply,
            at=now,
        )
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]


def _recipient(row: sa.Row[object]) -> LedgerRecipient:  # type: ignore[type-var]
    m = row._mapping
    return LedgerRecipient(
        incident_id=m["incident_id"],
        key=m["key"],
        email=m["email"],
        state=State(m["state"]),
        sent_to=m["sent_to"],
        alt_email=m["alt_email"],
        resends=m["resends"] or 0,
        attempts=m["attempts"] or 0,
        code=m["code"],
        reply=m["reply"],
        first_row=m["first_row"],
        source=m["source"],
        updated_at=as_utc(m["updated_at"]),
    )


def utc_now() -> datetime:
    return datetime.now(UTC)
