"""Addresses that bounced for good: no incident mails them again until lifted.

The list lives in the ledger, shared by every incident. A send takes suppressed
addresses out of what it owes (they end SUPPRESSED, listed with the reason, never
silently dropped); lifting one gives its recipients back to PENDING.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from notify.ledger import Ledger, recipients_table, suppressions_table
from notify.models import State
from notify.schedule import as_utc


@dataclass(frozen=True)
class Suppression:
    """An address no incident mails again, and why."""

    address: str
    reason: str
    incident_id: str | None
    added_at: datetime


def suppressed(ledger: Ledger, keys: Iterable[str] | None = None) -> dict[str, str]:
    """Suppressed addresses (all, or those among `keys`) with the reason. The list is
    read whole: it holds bounced addresses, far fewer than an incident's recipients."""
    table = suppressions_table
    with ledger.engine.connect() as connection:
        rows = connection.execute(sa.select(table.c.address, table.c.reason))
        listed = {address: reason for address, reason in rows}
    if keys is None:
        return listed
    return {key: listed[key] for key in keys if key in listed}


def suppression_list(ledger: Ledger) -> list[Suppression]:
    """Every suppressed address, newest first."""
    table = suppressions_table
    query = sa.select(table).order_by(table.c.added_at.desc(), table.c.address)
    with ledger.engine.connect() as connection:
        return [
            Suppression(row.address, row.reason, row.incident_id, as_utc(row.added_at))
            for row in connection.execute(query)
        ]


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
