"""Every change of a recipient's state, each checked against `models.TRANSITIONS` and
written with a history event in the same transaction.

Sending: a message is handed over (-> SENDING) in the same transaction that records the
previous outcome on its connection, so a crash leaves at most the one in flight in doubt.
After the send, a bounce changes a recipient only when it is new (its fingerprint is not
in the ledger yet) and only from ACCEPTED, so reading a mailbox twice changes nothing. A hard bounce
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
from notify.errors import LedgerError
from notify.ledger.schema import bounces_table, recipients_table, suppressions_table
from notify.ledger.store import Ledger, LedgerRecipient, append_history, recipients
from notify.models import TRANSITIONS, BounceKind, Event, State, sources_of, target_of
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
    event = _event_after(recipient, bounce.kind, address, schedule=schedule, now=now)
    with ledger.engine.begin() as connection:
        inserted = connection.execute(ledger.insert(bounces_table).on_conflict_do_nothing(), row)
        if inserted.rowcount == 0:
            return None
        if bounce.kind is BounceKind.HARD:
            reason = " ".join(filter(None, ("hard bounce:", status, diagnostic)))
            suppress(connection, ledger, address, reason, recipient.incident_id, now)
        if event is not None:
            _move(connection, recipient, event, now, reply=diagnostic, **_changes(recipient, event))
    state = target_of(event) if event is not None else recipient.state
    return BounceEffect(recipient, bounce.kind, state, address)


def _bounced_address(recipient: LedgerRecipient, named: str | None) -> str:
    """The address of ours that bounced: the one the bounce names when it is one we used
    (a late bounce from the first address), else the one in use (a forwarded mailbox
    may name an address we never wrote to)."""
    used = {recipient.email.lower(), (recipient.sent_to or "").lower()}
    if named and named.lower() in used:
        return named.lower()
    return recipient.address.lower()


def _event_after(
    recipient: LedgerRecipient,
    kind: BounceKind,
    address: str,
    *,
    schedule: Sequence[float],
    now: datetime,
) -> Event | None:
    """What a bounce does to its recipient; only a message the relay accepted can bounce,
    and a late bounce from an address no longer in use changes nothing."""
    if recipient.state is not State.ACCEPTED or address != recipient.address.lower():
        return None
    if kind is BounceKind.HARD:
        return Event.TO_ALTERNATE if _alternate_usable(recipient) else Event.HARD_BOUNCE
    if kind is BounceKind.SOFT:
        if due_at(now, recipient.resends, schedule) is None:
            return Event.GAVE_UP
        return Event.SOFT_BOUNCE
    if kind is BounceKind.SENDER:
        return Event.BLOCKED
    return None  # delayed, unknown: the relay is still at it, or we cannot tell


def _alternate_usable(recipient: LedgerRecipient) -> bool:
    """An alternate address exists, is another address, and was not already used."""
    alternate = recipient.alt_email
    return alternate is not None and alternate.lower() != recipient.key and not recipient.sent_to


def _changes(recipient: LedgerRecipient, event: Event) -> dict[str, object]:
    if event is Event.TO_ALTERNATE:
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
                event = Event.BLOCKED if kind is BounceKind.SENDER else Event.SOFT_BOUNCE
                changed += _move(connection, recipient, event, now, reply=recipient.reply)
                continue
            reason = f"refused during the send: {_one_line(recipient.reply or '')}"
            suppress(connection, ledger, recipient.address.lower(), reason, incident_id, now)
            if _alternate_usable(recipient):
                changes = _changes(recipient, Event.TO_ALTERNATE)
                changed += _move(
                    connection, recipient, Event.TO_ALTERNATE, now, reply=recipient.reply, **changes
                )
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
            _move(connection, recipient, Event.GAVE_UP, now, reply=recipient.reply)


def _move(
    connection: sa.Connection,
    recipient: LedgerRecipient,
    event: Event,
    now: datetime,
    *,
    reply: str | None,
    **changes: object,
) -> bool:
    """One recipient's change by `event`, only from the state it was read in; False when
    another command changed it first (two `resend` at once), which is theirs to finish."""
    state = TRANSITIONS.get((recipient.state, event))
    if state is None:
        raise LedgerError(
            f"{recipient.key} of incident {recipient.incident_id} cannot go from "
            f"{recipient.state} by '{event}'; nothing was changed, run the command again"
        )
    table = recipients_table
    moved = connection.execute(
        table.update()
        .where(
            table.c.incident_id == recipient.incident_id,
            table.c.key == recipient.key,
            table.c.state == recipient.state.value,
        )
        .values(state=state.value, reply=reply, updated_at=now, **changes)
    )
    if moved.rowcount != 1:
        return False
    append_history(connection, recipient.incident_id, [recipient.key], event, now, reply=reply)
    return True


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

    Set-wise statements, so a million recipients cost what a few do."""
    table, listed = recipients_table, suppressions_table
    is_listed = sa.exists().where(listed.c.address == table.c.key)
    reason = sa.select(listed.c.reason).where(listed.c.address == table.c.key).scalar_subquery()
    mine = table.c.incident_id == incident_id
    with ledger.engine.begin() as connection:
        suppressed = connection.execute(
            table.update()
            .where(mine, table.c.state == State.PENDING.value, is_listed)
            .values(state=target_of(Event.SUPPRESSED).value, reply=reason, updated_at=now)
            .returning(table.c.key)
        ).scalars()
        append_history(connection, incident_id, list(suppressed), Event.SUPPRESSED, now)
        lifted = connection.execute(
            table.update()
            .where(mine, table.c.state.in_(_values(sources_of(Event.LIFTED))), ~is_listed)
            .values(state=target_of(Event.LIFTED).value, reply=None, updated_at=now)
            .returning(table.c.key)
        ).scalars()
        append_history(connection, incident_id, list(lifted), Event.LIFTED, now)
        count = sa.select(sa.func.count()).where(mine, table.c.state == State.SUPPRESSED.value)
        return int(connection.execute(count).scalar_one())


def _values(states: Sequence[State]) -> list[str]:
    return [state.value for state in states]


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
