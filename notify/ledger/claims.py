"""One `notify send` process among possibly several sharing a ledger (SQLite or PostgreSQL).

A sender claims small batches of recipients atomically, with a lease it renews by
heartbeat. A claim only reserves: the state changes when each message is handed over
(ledger/store.py `settle`), so a crash leaves in doubt only what was really in flight.
A sender that dies stops renewing: after the lease (or at once, when it ran on this
host and its process is gone) another sender takes its claims over, and what it
had in flight is in doubt exactly as after a crash on one machine. Send slots for
NOTIFY_RATE come from one row per incident, so the cap holds for the whole fleet.
"""

from __future__ import annotations

import functools
import os
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from notify.ledger.schema import pacing_table, recipients_table, senders_table
from notify.ledger.store import RESENT_STATES, Ledger, LedgerRecipient
from notify.models import State

DEFAULT_LEASE_SECONDS = 60.0
DEAD_SENDERS_TTL = 1.0  # seconds between looks for dead senders on this host
PACING_WINDOW_SECONDS = 0.25  # slots reserved per round trip: a quarter second's worth


@dataclass(frozen=True)
class Claim:
    """A recipient reserved for sending, and the address in use when it is not the first."""

    key: str
    sent_to: str | None = None


@dataclass(frozen=True)
class SenderInfo:
    """One row of `notify status`'s fleet listing."""

    id: str
    host: str
    pid: int
    claimed: int
    sent: int
    heartbeat_age: float
    finished: bool


class Sender:
    """Claims, leases, heartbeats and pacing for one process on one incident."""

    def __init__(
        self,
        ledger: Ledger,
        incident_id: str,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        rate: float | None = None,
    ) -> None:
        self.ledger = ledger
        self.incident_id = incident_id
        self.lease_seconds = lease_seconds
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.id = f"{self.host}:{self.pid}:{secrets.token_hex(4)}"
        self.interval = 1.0 / rate if rate else 0.0
        self._slots: deque[float] = deque()
        self._slot_lock = threading.Lock()
        self._claim_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._unreported_sent = 0  # accepted since the last claim wrote the count
        self._dead: list[str] = []
        self._dead_checked_at = -DEAD_SENDERS_TTL
        self._stopped = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def start(self) -> None:
        """Announce ourselves and keep our leases alive until finish()."""
        now = time.time()
        with self.ledger.writing() as connection:
            connection.execute(
                senders_table.insert().values(
                    id=self.id,
                    incident_id=self.incident_id,
                    host=self.host,
                    pid=self.pid,
                    started_at=now,
                    heartbeat_at=now,
                    claimed=0,
                    sent=0,
                    finished=False,
                )
            )
            if self.interval:
                statement = self.ledger.insert(pacing_table).on_conflict_do_nothing()
                connection.execute(statement, {"incident_id": self.incident_id, "next_slot": now})
        self._heartbeat = threading.Thread(target=self._beat, daemon=True)
        self._heartbeat.start()

    def claim(self, limit: int) -> list[Claim]:
        """Atomically reserve up to `limit` recipients nobody else is working on."""
        if limit <= 0:
            return []
        now = time.time()
        with self._claim_lock:
            with self._count_lock:
                sent, self._unreported_sent = self._unreported_sent, 0
            values = {
                "now": now,
                "dead": self._dead_local_senders(now),
                "lease_until": now + self.lease_seconds,
            }
            rows: list[tuple[str, int, str | None]] = []
            with self.ledger.writing() as connection:
                for statement in self._claim_statements:
                    if len(rows) >= limit:
                        break
                    wanted = {**values, "limit": limit - len(rows)}
                    rows.extend(tuple(row) for row in connection.execute(statement, wanted))  # type: ignore[misc]
                connection.execute(self._count_statement, {"claimed": len(rows), "sent": sent})
        return [Claim(key, sent_to) for key, _, sent_to in sorted(rows, key=lambda row: row[1])]

    def count_sent(self, accepted: int) -> None:
        """Counted in memory; written with the next claim, or when the sender finishes."""
        with self._count_lock:
            self._unreported_sent += accepted

    @functools.cached_property
    def _claim_statements(self) -> tuple[sa.Update, ...]:
        """Pending recipients first, then what dead or expired senders left SENDING, then
        the deferred: each one walk down the (incident, state, first_row) index that stops
        at the limit. One query over all three states sorted the whole incident on every
        claim, which grew with the incident (quadratic over a send)."""
        table = recipients_table
        free = sa.or_(  # never our own: another of our threads may be sending it now
            table.c.claimed_by.is_(None),
            table.c.lease_until < sa.bindparam("now"),
            table.c.claimed_by.in_(sa.bindparam("dead", expanding=True)),
        )
        return (
            self._claim_where(sa.and_(table.c.state == State.PENDING.value, free)),
            self._claim_where(sa.and_(table.c.state == State.SENDING.value, free)),
            self._claim_where(sa.and_(table.c.state == State.DEFERRED.value, free)),
        )

    def _claim_where(self, claimable: sa.ColumnElement[bool]) -> sa.Update:
        table = recipients_table
        chosen = (
            sa.select(table.c.key)
            .where(table.c.incident_id == self.incident_id, claimable)
            .order_by(table.c.first_row)
            .limit(sa.bindparam("limit"))
        )
        if self.ledger.engine.dialect.name == "postgresql":
            chosen = chosen.with_for_update(skip_locked=True)
        # Materialised, so PostgreSQL runs the LIMIT once (as an IN-subquery it may run it
        # again per row and claim more than asked).
        picked = chosen.cte("picked").prefix_with("MATERIALIZED", dialect="postgresql")
        return (
            table.update()
            .where(table.c.incident_id == self.incident_id, table.c.key == picked.c.key)
            .values(claimed_by=self.id, lease_until=sa.bindparam("lease_until"))
            .returning(table.c.key, table.c.first_row, table.c.sent_to)
        )

    @functools.cached_property
    def _count_statement(self) -> sa.Update:
        table = senders_table
        return (
            table.update()
            .where(table.c.id == self.id)
            .values(
                claimed=table.c.claimed + sa.bindparam("claimed"),
                sent=table.c.sent + sa.bindparam("sent"),
            )
        )

    def pace(self) -> None:
        """Wait for this process's next slot in the incident-wide rate (NOTIFY_RATE)."""
        if not self.interval:
            return
        with self._slot_lock:
            now = time.time()
            while self._slots and self._slots[0] < now - self.interval:
                self._slots.popleft()  # missed while busy: using it late would make a burst
            if not self._slots:
                self._reserve_slots()
            slot = self._slots.popleft()
        delay = slot - time.time()
        if delay > 0:
            time.sleep(delay)

    def finish(self) -> None:
        """Stop the heartbeat and let go of every claim: nothing of ours is in flight now,
        so what is still SENDING (in doubt) or reserved and unsent is free at once."""
        self._stopped.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5)
        table = recipients_table
        with self._count_lock:
            sent, self._unreported_sent = self._unreported_sent, 0
        with self.ledger.writing() as connection:
            connection.execute(
                table.update()
                .where(table.c.incident_id == self.incident_id, table.c.claimed_by == self.id)
                .values(claimed_by=None, lease_until=None)
            )
            connection.execute(self._count_statement, {"claimed": 0, "sent": sent})
            connection.execute(
                senders_table.update().where(senders_table.c.id == self.id).values(finished=True)
            )

    def _reserve_slots(self) -> None:
        count = max(1, int(PACING_WINDOW_SECONDS / self.interval))
        now = time.time()
        table = pacing_table
        start_at = sa.case((table.c.next_slot > now, table.c.next_slot), else_=now)
        statement = (
            table.update()
            .where(table.c.incident_id == self.incident_id)
            .values(next_slot=start_at + count * self.interval)
            .returning(table.c.next_slot)
        )
        with self.ledger.writing() as connection:
            end = connection.execute(statement).scalar_one()
        first = end - count * self.interval
        self._slots.extend(first + n * self.interval for n in range(count))

    def _beat(self) -> None:
        """Renew our leases and heartbeat until stopped."""
        table = recipients_table
        while not self._stopped.wait(self.lease_seconds / 3):
            now = time.time()
            with self.ledger.writing() as connection:
                connection.execute(
                    table.update()
                    .where(table.c.incident_id == self.incident_id, table.c.claimed_by == self.id)
                    .values(lease_until=now + self.lease_seconds)
                )
                connection.execute(
                    senders_table.update()
                    .where(senders_table.c.id == self.id)
                    .values(heartbeat_at=now)
                )

    def _dead_local_senders(self, now: float) -> list[str]:
        """Senders of this incident on this host whose process is gone: no need to wait
        for their leases. Looked up at most once a second, not for every batch."""
        if now - self._dead_checked_at < DEAD_SENDERS_TTL:
            return self._dead
        self._dead = [d for d in dead_holders(self.ledger, self.incident_id) if d != self.id]
        self._dead_checked_at = now
        return self._dead


def dead_holders(ledger: Ledger, incident_id: str) -> list[str]:
    """Senders of this incident on this host whose process is gone (killed): what they
    held is free at once, without waiting for their leases to run out."""
    host = socket.gethostname()
    query = sa.select(senders_table.c.id, senders_table.c.pid).where(
        senders_table.c.incident_id == incident_id,
        senders_table.c.host == host,
        senders_table.c.finished.is_(False),
    )
    with ledger.engine.connect() as connection:
        rows = connection.execute(query).all()
    return [sender_id for sender_id, pid in rows if not _alive(pid)]


def fleet(ledger: Ledger, incident_id: str) -> list[SenderInfo]:
    """Every sender that worked on the incident, newest first."""
    table = senders_table
    query = (
        sa.select(table)
        .where(table.c.incident_id == incident_id)
        .order_by(table.c.started_at.desc())
    )
    now = time.time()
    with ledger.engine.connect() as connection:
        return [
            SenderInfo(
                row.id,
                row.host,
                row.pid,
                row.claimed,
                row.sent,
                now - row.heartbeat_at,
                row.finished,
            )
            for row in connection.execute(query)
        ]


def in_flight(ledger: Ledger, incident_id: str) -> int:
    """SENDING rows under a live lease: being sent now, not in doubt."""
    table = recipients_table
    query = sa.select(sa.func.count()).where(
        table.c.incident_id == incident_id,
        table.c.state == State.SENDING.value,
        table.c.claimed_by.is_not(None),
        table.c.lease_until >= time.time(),
    )
    with ledger.engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- claims for re-sends: each only if nobody changed it since it was read ------------


def claim(
    ledger: Ledger,
    chosen: Sequence[LedgerRecipient],
    *,
    holder: str,
    lease_until: float,
    now: datetime,
    dead: Sequence[str] = (),
) -> list[LedgerRecipient]:
    """Reserve the chosen recipients for this holder, each only if nobody changed it since
    it was read: two `notify resend` started together never send the same one. What
    `dead` holders (killed senders) held is free."""
    table = recipients_table
    taken = []
    with ledger.writing() as connection:
        for recipient in (r for r in chosen if r.state in RESENT_STATES):
            step = 0 if recipient.state in (State.ALTERNATE, State.SENDING) else 1
            result = connection.execute(
                table.update()
                .where(
                    table.c.incident_id == recipient.incident_id,
                    table.c.key == recipient.key,
                    table.c.state == recipient.state.value,
                    table.c.updated_at == recipient.updated_at,
                    sa.or_(
                        table.c.claimed_by.is_(None),
                        table.c.claimed_by == holder,
                        table.c.claimed_by.in_(list(dead)),
                        table.c.lease_until < time.time(),
                    ),
                )
                .values(
                    claimed_by=holder,
                    lease_until=lease_until,
                    resends=sa.func.coalesce(table.c.resends, 0) + step,
                )
            )
            if result.rowcount == 1:
                taken.append(recipient)
    return taken
