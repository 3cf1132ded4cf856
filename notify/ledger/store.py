"""The delivery ledger: every recipient's state, written as it happens, kill -9 safe.

SQLite (WAL) by default, any SQLAlchemy URL otherwise, through one code path. A batch
is marked SENDING in one transaction before it goes and its outcomes are written in
another after, so a crash leaves at most that batch "in doubt"; the next run re-sends
those with the same Message-ID and nothing that was recorded as accepted.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from notify.errors import LedgerError
from notify.ledger.schema import (
    bounces_table,
    events_table,
    fingerprints_table,
    metadata,
    migrate,
    migrations_table,
    recipients_table,
    suppressions_table,
)
from notify.models import (
    TRANSITIONS,
    Event,
    Outcome,
    State,
    Undelivered,
    outcome_event,
    sources_of,
    target_of,
)
from notify.schedule import as_utc

RESENT_STATES = (
    State.SENDING,  # in doubt: settled at once, to the same address
    State.DEFERRED,
    State.SOFT_BOUNCED,
    State.ALTERNATE,
    State.BLOCKED,
)  # what a re-send picks up
REGISTER_CHUNK = 5_000  # registrations written per statement
_REGISTER_COLUMNS = (
    *("incident_id", "key", "email", "token", "message_id", "state", "attempts"),
    *("first_row", "source", "alt_email", "updated_at"),
)


# Built once: they run for every message of every send.
_RECORD_OUTCOME = (
    recipients_table.update()
    .where(
        recipients_table.c.incident_id == sa.bindparam("i"),
        recipients_table.c.key == sa.bindparam("k"),
        recipients_table.c.state == State.SENDING.value,  # the one state outcomes leave
    )
    .values(
        state=sa.bindparam("s"),
        code=sa.bindparam("c"),
        reply=sa.bindparam("r"),
        updated_at=sa.bindparam("t"),
    )
)
_RECORD_EVENT = events_table.insert()
_SUPPRESSED_ADDRESS = sa.exists().where(
    suppressions_table.c.address
    == sa.func.lower(sa.func.coalesce(recipients_table.c.sent_to, recipients_table.c.key))
)


@dataclass(frozen=True)
class Registration:
    """A recipient the ledger should know about before anything is sent."""

    key: str
    email: str
    token: str
    message_id: str
    first_row: int
    source: str
    alt_email: str | None = None


class Ledger:
    """One incident-agnostic ledger; every method names the incident it touches."""

    def __init__(self, engine: Engine, *, where: str) -> None:
        self.engine = engine
        self.where = where
        # SQLite has one writer at a time. Writers of this process take turns here rather
        # than in SQLite's busy handler, which sleeps a millisecond or more per collision.
        self._write_turn: contextlib.AbstractContextManager[object] = (
            threading.RLock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )

    @contextlib.contextmanager
    def writing(self) -> Iterator[sa.Connection]:
        """A write transaction; use it (not engine.begin) on a path that writes often."""
        with self._write_turn, self.engine.begin() as connection:
            yield connection

    @classmethod
    def open(cls, location: str | Path, *, setting: str = "NOTIFY_LEDGER") -> Ledger:
        """A file path or SQLAlchemy URL; the schema is brought up to date on first use.
        `setting` is where the location came from, for the error line."""
        url = _url(location, setting)
        where = url.render_as_string(hide_password=True)
        if url.get_backend_name() not in ("sqlite", "postgresql"):
            raise LedgerError(
                f"{setting}={where}: the ledger lives in SQLite (one machine) or "
                "PostgreSQL (several); use a sqlite:// or postgresql:// URL"
            )
        try:
            is_sqlite = url.get_backend_name() == "sqlite"
            # LIFO: writers taking turns reuse one connection, whose page cache stays
            # valid; SQLite empties a connection's cache whenever another one writes.
            engine = sa.create_engine(url, pool_use_lifo=is_sqlite)
            if is_sqlite:
                sa.event.listen(engine, "connect", _sqlite_pragmas)
            ledger = cls(engine, where=where)
            ledger.migrate()
        except (SQLAlchemyError, ImportError) as exc:  # ImportError: no driver for the URL
            raise LedgerError(
                f"cannot open the ledger at {where} ({_reason(exc)}); check {setting}"
            ) from exc
        return ledger

    def migrate(self) -> int:
        """Apply every migration not yet recorded in the database; returns the version."""
        return migrate(self.engine)

    def register(self, incident_id: str, registrations: Iterable[Registration]) -> None:
        """Add recipients not yet known as PENDING; known ones keep their state. Written in
        chunks within one transaction, so a million registrations never sit in memory."""
        now = _now()
        statement = self.insert(recipients_table).on_conflict_do_nothing()
        driver_sql, parameters = self._driver_insert(statement, _REGISTER_COLUMNS)
        pending = State.PENDING.value
        rows = (
            parameters(
                (incident_id, r.key, r.email, r.token, r.message_id, pending, 0)
                + (r.first_row, r.source, r.alt_email, now)
            )
            for r in registrations
        )

        def write(connection: sa.Connection) -> None:
            while chunk := list(itertools.islice(rows, REGISTER_CHUNK)):
                connection.exec_driver_sql(driver_sql, chunk)  # type: ignore[arg-type]

        self._write(write)

    def _driver_insert(
        self, statement: sa.Insert, columns: Sequence[str]
    ) -> tuple[str, Callable[[tuple[object, ...]], object]]:
        """The statement as the driver's SQL, and a function turning values (in `columns`
        order) into the driver's parameters: a million rows through SQLAlchemy's per-row
        parameter handling cost four times the insert itself."""
        dialect = self.engine.dialect
        compiled = statement.compile(dialect=dialect, column_keys=list(columns))
        types = {column.name: column.type for column in statement.table.columns}  # type: ignore[union-attr]
        processors = [  # e.g. SQLite's text form of timestamps
            (index, processor)
            for index, name in enumerate(columns)
            if (processor := types[name].dialect_impl(dialect).bind_processor(dialect))
        ]

        def processed(values: tuple[object, ...]) -> list[object]:
            row = list(values)
            for index, processor in processors:
                row[index] = processor(row[index])
            return row

        if compiled.positional:
            order = [list(columns).index(name) for name in compiled.positiontup or ()]

            def positional(values: tuple[object, ...]) -> tuple[object, ...]:
                row = processed(values)
                return tuple(row[index] for index in order)

            return str(compiled), positional
        return str(compiled), lambda values: dict(zip(columns, processed(values), strict=True))

    def states(self, incident_id: str) -> dict[str, State]:
        """Every known recipient's state for one incident."""
        query = sa.select(recipients_table.c.key, recipients_table.c.state).where(
            recipients_table.c.incident_id == incident_id
        )
        with self.engine.connect() as connection:
            return {key: State(state) for key, state in connection.execute(query)}

    def counts(self, incident_id: str) -> dict[State, int]:
        """How many recipients are in each state."""
        query = (
            sa.select(recipients_table.c.state, sa.func.count())
            .where(recipients_table.c.incident_id == incident_id)
            .group_by(recipients_table.c.state)
        )
        with self.engine.connect() as connection:
            found = {State(state): count for state, count in connection.execute(query)}
        return {state: found.get(state, 0) for state in State}

    def undelivered(self, incident_id: str, *, dead: Sequence[str] = ()) -> list[Undelivered]:
        """Recipients not accepted, with the last reply, for summaries and reports; what a
        live sender is working on right now (not one of `dead`) is not counted."""
        table = recipients_table
        held_elsewhere = sa.and_(
            table.c.claimed_by.is_not(None),
            table.c.lease_until >= time.time(),
            table.c.claimed_by.not_in(list(dead)),
        )
        query = (
            sa.select(
                table.c.key,
                table.c.email,
                table.c.state,
                table.c.code,
                table.c.reply,
                table.c.first_row,
            )
            .where(
                table.c.incident_id == incident_id,
                table.c.state != State.ACCEPTED.value,
                sa.not_(held_elsewhere),
            )
            .order_by(table.c.first_row)
        )
        with self.engine.connect() as connection:
            return [
                Undelivered(key, email, State(state), code, reply, first_row)
                for key, email, state, code, reply, first_row in connection.execute(query)
            ]

    def migrations(self) -> list[tuple[int, str]]:
        """The migrations recorded in this database, oldest first."""
        table = migrations_table
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(table.c.version, table.c.name).order_by("version"))
            return [(version, name) for version, name in rows]

    def incidents(self) -> dict[str, int]:
        """Every incident the ledger knows, with its number of recipients."""
        table = recipients_table
        query = sa.select(table.c.incident_id, sa.func.count()).group_by(table.c.incident_id)
        with self.engine.connect() as connection:
            return {incident: count for incident, count in connection.execute(query)}

    def copy_to(self, target: Ledger) -> int:
        """Copy every row into another ledger (same schema), before switching NOTIFY_LEDGER.

        Rows the target has already are kept; history events are appended, so copy once."""
        copied = 0
        with self.engine.connect() as source, target.engine.begin() as destination:
            for table in metadata.sorted_tables:
                if table is migrations_table:
                    continue
                rows = [dict(row._mapping) for row in source.execute(sa.select(table))]
                if not rows:
                    continue
                if table is events_table:  # let the target number its history itself
                    for row in rows:
                        del row["id"]
                    destination.execute(table.insert(), rows)
                else:
                    destination.execute(target.insert(table).on_conflict_do_nothing(), rows)
                copied += len(rows)
        return copied

    def check_fingerprint(
        self, incident_id: str, *, templates: str, data: str, accept_changes: bool = False
    ) -> None:
        """Decide an incident's content once: refuse a run whose templates or export differ
        from what earlier runs (or other senders) sent, unless told to accept the change."""
        table = fingerprints_table
        row = {"incident_id": incident_id, "templates": templates, "data": data}
        with self.engine.begin() as connection:
            connection.execute(
                self.insert(table).on_conflict_do_nothing(), {**row, "recorded_at": _now()}
            )
            recorded = connection.execute(
                sa.select(table).where(table.c.incident_id == incident_id)
            ).one()
            changed = [
                what for what in ("templates", "data") if getattr(recorded, what) != row[what]
            ]
            if changed and accept_changes:
                connection.execute(
                    table.update()
                    .where(table.c.incident_id == incident_id)
                    .values(templates=templates, data=data, recorded_at=_now())
                )
            elif changed:
                raise LedgerError(
                    f"incident {incident_id} was sent with other {' and '.join(changed)} "
                    f"(recorded {recorded.recorded_at:%Y-%m-%d %H:%M}); sending now would mix "
                    "two versions: restore them, or pass --accept-changes to go on with these"
                )

    def fingerprint_changes(self, incident_id: str, *, templates: str, data: str) -> list[str]:
        """What differs from the incident's first send ("templates", "data"); records nothing."""
        table = fingerprints_table
        with self.engine.connect() as connection:
            recorded = connection.execute(
                sa.select(table).where(table.c.incident_id == incident_id)
            ).one_or_none()
        if recorded is None:
            return []
        current = {"templates": templates, "data": data}
        return [what for what in ("templates", "data") if getattr(recorded, what) != current[what]]

    def hand_over(
        self, incident_id: str, keys: Sequence[str], *, holder: str | None = None
    ) -> list[str]:
        """Mark messages SENDING just before they go; returns those that may go."""
        return self.settle(incident_id, (), keys, holder=holder)

    def record(self, incident_id: str, outcomes: Sequence[Outcome]) -> None:
        """Write what the relay said about messages handed over, with their history."""
        self.settle(incident_id, outcomes, ())

    def settle(
        self,
        incident_id: str,
        outcomes: Sequence[Outcome],
        hand_over: Sequence[str],
        *,
        holder: str | None = None,
    ) -> list[str]:
        """Record outcomes and hand the next messages over, in one transaction.

        A key may be handed over only from a state TRANSITIONS allows, only while
        `holder` (when given) holds its claim, and never to a suppressed address: those
        are moved to SUPPRESSED instead. Returns the keys handed over."""
        if not outcomes and not hand_over:
            return []
        now = _now()
        taken: list[str] = []

        def write(connection: sa.Connection) -> None:
            if outcomes:
                _record_outcomes(connection, incident_id, outcomes, now)
            if hand_over:
                taken.extend(_hand_over(connection, incident_id, hand_over, holder, now))

        self._write(write)
        return taken

    def insert(self, table: sa.Table) -> sqlite.Insert | postgresql.Insert:
        """An INSERT that can say ON CONFLICT DO NOTHING in this database's dialect."""
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        return dialect.insert(table)

    def _write(self, action: object) -> None:
        try:
            with self.writing() as connection:
                action(connection)  # type: ignore[operator]
        except SQLAlchemyError as exc:
            raise LedgerError(
                f"cannot write the ledger at {self.where} ({_reason(exc)}); "
                "nothing more is sent; check the disk or NOTIFY_LEDGER, then run again"
            ) from exc

    def dispose(self) -> None:
        self.engine.dispose()


def _url(location: str | Path, setting: str) -> sa.URL:
    text = str(location)
    if "://" in text:
        try:
            url = sa.make_url(text)
            if url.drivername in ("postgresql", "postgres"):  # psycopg 3 is what we install
                url = url.set(drivername="postgresql+psycopg")
            return url
        except (sa.exc.ArgumentError, ValueError) as exc:  # ValueError: a port like ':abc'
            raise LedgerError(
                f"{setting}={text!r} is not a database URL or path; write it like "
                "postgresql://user@host/ledger or .notify/ledger.db"
            ) from exc
    path = Path(text)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LedgerError(
            f"{setting}={text}: cannot create its folder ({exc.strerror or exc}); "
            f"point {setting} at a file in a folder you may write to"
        ) from exc
    return sa.URL.create("sqlite+pysqlite", database=str(path))


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    """WAL keeps readers off the writer's back; NORMAL sync survives a killed process."""
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA cache_size=-16384")  # KiB: the claim and record paths stay cached
    cursor.close()


def _reason(exc: Exception) -> str:
    original = getattr(exc, "orig", None)
    return str(original or exc).splitlines()[0]


def _now() -> datetime:
    return datetime.now(UTC)


# -- reading recipients, history and suppressions --------------------------------------


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
class Suppression:
    """An address no incident mails again, and why."""

    address: str
    reason: str
    incident_id: str | None
    added_at: datetime


def recipients(
    ledger: Ledger,
    incident_id: str,
    *,
    states: Iterable[State] | None = None,
    unclaimed: bool = False,
    dead: Sequence[str] = (),
) -> list[LedgerRecipient]:
    """Every recipient of an incident (or those in `states`), in source order. With
    `unclaimed`, only those no live sender holds (`dead` names killed ones): what another
    `resend` is sending now is neither due nor given up here."""
    table = recipients_table
    query = sa.select(table).where(table.c.incident_id == incident_id)
    if states is not None:
        query = query.where(table.c.state.in_([s.value for s in states]))
    if unclaimed:
        query = query.where(
            sa.or_(
                table.c.claimed_by.is_(None),
                table.c.claimed_by.in_(list(dead)),
                table.c.lease_until < time.time(),
            )
        )
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


def bounce_times(ledger: Ledger, incident_id: str) -> list[datetime]:
    """When each bounce of this incident was read, oldest first, for the report's timeline."""
    table = bounces_table
    query = (
        sa.select(table.c.read_at)
        .where(table.c.incident_id == incident_id)
        .order_by(table.c.read_at)
    )
    with ledger.engine.connect() as connection:
        return [as_utc(at) for (at,) in connection.execute(query)]


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


def _record_outcomes(
    connection: sa.Connection, incident_id: str, outcomes: Sequence[Outcome], now: datetime
) -> None:
    """SENDING -> the outcome's state, each with its history event."""
    for outcome in outcomes:
        if (State.SENDING, outcome_event(outcome.state)) not in TRANSITIONS:
            raise LedgerError(f"{outcome.key}: {outcome.state} is not a relay's outcome")
    params = [
        {"i": incident_id, "k": o.key, "s": o.state.value, "c": o.code, "r": o.reply, "t": now}
        for o in outcomes
    ]
    result = connection.execute(_RECORD_OUTCOME, params)
    if connection.dialect.supports_sane_multi_rowcount and result.rowcount != len(outcomes):
        raise LedgerError(
            f"incident {incident_id}: an outcome arrived for a message that was not being "
            "sent; nothing of this group was recorded, run the same command again"
        )
    connection.execute(
        _RECORD_EVENT,
        [
            {
                "incident_id": incident_id,
                "key": o.key,
                "event": outcome_event(o.state).value,
                "state": o.state.value,
                "code": o.code,
                "reply": o.reply,
                "at": now,
            }
            for o in outcomes
        ],
    )


def _hand_over(
    connection: sa.Connection,
    incident_id: str,
    keys: Sequence[str],
    holder: str | None,
    now: datetime,
) -> list[str]:
    """-> SENDING where allowed; a suppressed address -> SUPPRESSED instead."""
    table = recipients_table
    chosen = [
        table.c.incident_id == incident_id,
        table.c.key.in_(list(keys)),
        table.c.state.in_([s.value for s in sources_of(Event.HANDED_OVER)]),
    ]
    if holder is not None:
        chosen.append(table.c.claimed_by == holder)
    taken = list(
        connection.execute(
            table.update()
            .where(*chosen, ~_SUPPRESSED_ADDRESS)
            .values(state=State.SENDING.value, attempts=table.c.attempts + 1, updated_at=now)
            .returning(table.c.key)
        ).scalars()
    )
    append_history(connection, incident_id, taken, Event.HANDED_OVER, now)
    if len(taken) < len(keys):
        refused = list(
            connection.execute(
                table.update()
                .where(*chosen, _SUPPRESSED_ADDRESS)
                .values(state=State.SUPPRESSED.value, reply=_SUPPRESSION_REASON, updated_at=now)
                .returning(table.c.key)
            ).scalars()
        )
        append_history(connection, incident_id, refused, Event.SUPPRESSED, now)
    order = {key: position for position, key in enumerate(keys)}
    return sorted(taken, key=order.__getitem__)


_SUPPRESSION_REASON = (
    sa.select(suppressions_table.c.reason)
    .where(
        suppressions_table.c.address
        == sa.func.lower(sa.func.coalesce(recipients_table.c.sent_to, recipients_table.c.key))
    )
    .limit(1)
    .scalar_subquery()
)


def append_history(
    connection: sa.Connection,
    incident_id: str,
    keys: Sequence[str],
    event: Event,
    now: datetime,
    *,
    reply: str | None = None,
) -> None:
    """One history row per key: what happened, and the state it led to."""
    if keys:
        state = target_of(event).value
        rows: list[dict[str, object]] = [
            {
                "incident_id": incident_id,
                "key": k,
                "event": event.value,
                "state": state,
                "reply": reply,
                "at": now,
            }
            for k in keys
        ]
        connection.execute(_RECORD_EVENT, rows)
