"""Customers' replies in the ledger: each recorded once, then marked answered.

A reply is keyed by its fingerprint, so reading a mailbox twice records nothing new; a
reply waits for an answer until `answered_at` is set.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from notify.ledger.schema import replies_table
from notify.ledger.store import Ledger
from notify.schedule import as_utc


@dataclass(frozen=True)
class RecordedReply:
    """One customer's reply as the ledger keeps it."""

    fingerprint: str
    incident_id: str
    key: str
    address: str
    subject: str
    received_at: datetime
    excerpt: str
    answered_at: datetime | None = None


def record(ledger: Ledger, reply: RecordedReply) -> bool:
    """Record a reply; False when its fingerprint is in the ledger already."""
    row = {
        "fingerprint": reply.fingerprint,
        "incident_id": reply.incident_id,
        "key": reply.key,
        "address": reply.address,
        "subject": reply.subject,
        "received_at": reply.received_at,
        "excerpt": reply.excerpt,
        "answered_at": reply.answered_at,
    }
    with ledger.writing() as connection:
        inserted = connection.execute(ledger.insert(replies_table).on_conflict_do_nothing(), row)
    return bool(inserted.rowcount)


def waiting(ledger: Ledger, incident_id: str) -> dict[str, RecordedReply]:
    """Each customer's oldest reply not yet answered, by ledger key: the longest wait."""
    table = replies_table
    query = (
        sa.select(table)
        .where(table.c.incident_id == incident_id, table.c.answered_at.is_(None))
        .order_by(table.c.received_at.desc())
    )
    with ledger.engine.connect() as connection:
        rows = connection.execute(query).all()
    return {row.key: _reply(row) for row in rows}  # the oldest is written last and wins


def mark_answered(
    ledger: Ledger, incident_id: str, keys: Iterable[str], *, now: datetime
) -> tuple[int, int]:
    """Mark every reply from these customers answered: (replies found, newly answered)."""
    table = replies_table
    mine = sa.and_(table.c.incident_id == incident_id, table.c.key.in_(sorted(set(keys))))
    with ledger.writing() as connection:
        found = connection.scalar(sa.select(sa.func.count()).select_from(table).where(mine))
        updated = connection.execute(
            table.update().where(mine, table.c.answered_at.is_(None)).values(answered_at=now)
        )
    return int(found or 0), updated.rowcount


def keys_of(ledger: Ledger, incident_id: str, address: str) -> set[str]:
    """The customers whose replies came from `address` (as its From: said)."""
    table = replies_table
    query = sa.select(table.c.key).where(
        table.c.incident_id == incident_id, sa.func.lower(table.c.address) == address.lower()
    )
    with ledger.engine.connect() as connection:
        return set(connection.scalars(query))


def _reply(row: sa.Row[object]) -> RecordedReply:  # type: ignore[type-var]
    answered = row.answered_at
    return RecordedReply(
        row.fingerprint,
        row.incident_id,
        row.key,
        row.address,
        row.subject or "",
        as_utc(row.received_at),
        row.excerpt,
        as_utc(answered) if answered is not None else None,
    )
