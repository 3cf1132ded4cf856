"""The ledger after the first send: bounces recorded once, suppressions, re-sends due.

A bounce changes a recipient only when it is new (its fingerprint is not in the ledger
yet) and only from ACCEPTED, so reading a mailbox twice changes nothing. A hard bounce
suppresses the address for every later incident and, where the export has an alternate
address, makes that one due; a soft one schedules a re-send; a refusal for the sender's
reasons (policy, spam, x.7.x) never marks the address bad.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from notify.bounces.parse import Bounce
from notify.ledger.schema import bounces_table, events_table, recipients_table, suppressions_table
from notify.ledger.store import Ledger, LedgerRecipient, recipients
from notify.models import BounceKind, State
from notify.replies import classify, enhanced_status
from notify.schedule import due_at


@dataclass(frozen=True)
class BounceEffect:
    """What one new bounce did to its recipient."""

    recipient: LedgerRecipient
    kind: BounceKind
    state: State  # the recipient's state afterwards (unchanged for delayed notices)
    address: str  # the address that bounced


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


# -- suppressions: addresses that bounced for good ----------------------------------------


def lift(ledger: Ledger, address: str) -> bool:
    """Remove an address from the suppression list; False when it was not on it."""
    table = suppressions_table
    with ledger.engine.begin() as connection:
        result = connection.execute(table.delete().where(table.c.address == address.lower()))
    return result.rowcount > 0


def apply_suppressions(ledger: Ledger, incident_id: str, *, now: datetime) -> int:
    """Before a send: take suppressed addresses out of what is still owed, and give back
    to PENDING those whose suppression was lifted. Returns how many are suppressed.

    Two set-wise statements, so a million recipients cost what a few do."""
    table, listed = recipients_table, suppressions_table
    is_listed = sa.exists().where(listed.c.address == table.c.key)
    reason = sa.select(listed.c.reason).where(listed.c.address == table.c.key).scalar_subquery()
    mine = table.c.incident_id == incident_id
    with ledger.engine.begin() as connection:
        connection.execute(
            table.update()
            .where(mine, table.c.state == State.PENDING.value, is_listed)
            .values(state=State.SUPPRESSED.value, reply=reason, updated_at=now)
        )
        connection.execute(
            table.update()
            .where(mine, table.c.state == State.SUPPRESSED.value, ~is_listed)
            .values(state=State.PENDING.value, reply=None, updated_at=now)
        )
        count = sa.select(sa.func.count()).where(mine, table.c.state == State.SUPPRESSED.value)
        return int(connection.execute(count).scalar_one())


def suppress(
    connection: sa.Connection,
    ledger: Ledger,
    address: str,
    reason: str,
    incident_id: str,
    now: datetime,
) -> None:
    row = {"address": address, "reason": reason, "incident_id": incident_id, "added_at": now}
    connection.execute(ledger.insert(suppressions_table).on_conflict_do_nothing(), row)
