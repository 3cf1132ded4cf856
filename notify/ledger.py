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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from notify.errors import LedgerError
from notify.models import Outcome, State

metadata = sa.MetaData()

migrations_table = sa.Table(
    "schema_migrations",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)

recipients_table = sa.Table(
    "recipients",
    metadata,
    sa.Column("incident_id", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(320), primary_key=True),  # the normalised address
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("token", sa.String(64), nullable=False, index=True),  # VERP / Message-ID token
    sa.Column("message_id", sa.String(400), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("code", sa.Integer),
    sa.Column("reply", sa.Text),
    sa.Column("first_row", sa.Integer),
    sa.Column("source", sa.Text),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("claimed_by", sa.String(120)),  # the sender holding it while SENDING
    sa.Column("lease_until", sa.Float),  # epoch seconds; past it, another sender may take over
    sa.Column("alt_email", sa.String(320)),  # the export's alternate address, if any
    sa.Column("sent_to", sa.String(320)),  # the address now in use when it is not `email`
    sa.Column("resends", sa.Integer),  # scheduled re-sends made to the address in use
    sa.Index("recipients_by_state", "incident_id", "state", "first_row"),
)

events_table = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("incident_id", sa.String(64), nullable=False),
    sa.Column("key", sa.String(320), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("code", sa.Integer),
    sa.Column("reply", sa.Text),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    # Rows arrive in id order, so this index only ever grows at its end: recording a batch
    # touches one page of it, where (incident_id, key) touched one per recipient.
    sa.Index("events_by_incident", "incident_id"),
)

senders_table = sa.Table(
    "senders",
    metadata,
    sa.Column("id", sa.String(120), primary_key=True),  # host:pid:random
    sa.Column("incident_id", sa.String(64), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
    sa.Column("claimed", sa.Integer, nullable=False, default=0),
    sa.Column("sent", sa.Integer, nullable=False, default=0),
    sa.Column("finished", sa.Boolean, nullable=False, default=False),
)

pacing_table = sa.Table(  # one row per incident: the next free send slot, for NOTIFY_RATE
    "pacing",
    metadata,
    sa.Column("incident_id", sa.String(64), primary_key=True),
    sa.Column("next_slot", sa.Float, nullable=False),
)

fingerprints_table = sa.Table(  # what an incident's messages are made of, decided once
    "fingerprints",
    metadata,
    sa.Column("incident_id", sa.String(64), primary_key=True),
    sa.Column("templates", sa.String(64), nullable=False),
    sa.Column("data", sa.String(64), nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
)

bounces_table = sa.Table(  # each bounce read, once: its fingerprint makes a re-read a no-op
    "bounces",
    metadata,
    sa.Column("fingerprint", sa.String(64), primary_key=True),
    sa.Column("incident_id", sa.String(64), nullable=False),
    sa.Column("key", sa.String(320), nullable=False),
    sa.Column("address", sa.String(320)),  # the address that bounced, as the bounce names it
    sa.Column("kind", sa.String(16), nullable=False),  # hard, soft, sender, delayed, unknown
    sa.Column("status", sa.String(16)),  # the enhanced status code, e.g. 5.1.1
    sa.Column("diagnostic", sa.Text),
    sa.Column("mailbox", sa.Text),  # where it was read
    sa.Column("read_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("bounces_by_recipient", "incident_id", "key"),
)

suppressions_table = sa.Table(  # addresses that bounced for good: never mailed again
    "suppressions",
    metadata,
    sa.Column("address", sa.String(320), primary_key=True),  # normalised, as a ledger key
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("incident_id", sa.String(64)),  # where it bounced
    sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class Migration:
    """One schema step. Each is idempotent, so a fresh ledger (whose tables already have
    every column and index) and an old one end at the same schema."""

    name: str
    tables: tuple[sa.Table, ...] = ()  # created
    columns: tuple[tuple[sa.Table, str], ...] = ()  # added to older tables
    dropped_indexes: tuple[str, ...] = ()
    indexes: tuple[sa.Index, ...] = ()  # created on older tables


MIGRATIONS: dict[int, Migration] = {
    1: Migration("recipients, events", (recipients_table, events_table)),
    2: Migration(
        "senders, pacing, fingerprints; claims and leases on recipients",
        (senders_table, pacing_table, fingerprints_table),
        ((recipients_table, "claimed_by"), (recipients_table, "lease_until")),
    ),
    3: Migration(
        "bounces, suppressions; alternate address and re-sends on recipients",
        (bounces_table, suppressions_table),
        (
            (recipients_table, "alt_email"),
            (recipients_table, "sent_to"),
            (recipients_table, "resends"),
        ),
    ),
    4: Migration(
        "history indexed by incident, in the order it was written",
        dropped_indexes=("events_by_recipient",),
        indexes=tuple(i for i in events_table.indexes if i.name == "events_by_incident"),
    ),
}
SCHEMA_VERSION = max(MIGRATIONS)
REGISTER_CHUNK = 5_000  # registrations written per statement
_REGISTER_COLUMNS = (
    *("incident_id", "key", "email", "token", "message_id", "state", "attempts"),
    *("first_row", "source", "alt_email", "updated_at"),
)


# Built once: they run for every batch of every send.
_RECORD_OUTCOME = (
    recipients_table.update()
    .where(
        recipients_table.c.incident_id == sa.bindparam("i"),
        recipients_table.c.key == sa.bindparam("k"),
    )
    .values(
        state=sa.bindparam("s"),
        code=sa.bindparam("c"),
        reply=sa.bindparam("r"),
        updated_at=sa.bindparam("t"),
    )
)
_RECORD_EVENT = events_table.insert()


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
        with self.engine.begin() as connection:
            if self.engine.dialect.name == "postgresql":  # two senders starting together
                connection.execute(sa.text("SELECT pg_advisory_xact_lock(4242424242)"))
            migrations_table.create(connection, checkfirst=True)
            applied = set(connection.scalars(sa.select(migrations_table.c.version)))
            for version, step in sorted(MIGRATIONS.items()):
                if version in applied:
                    continue
                for table in step.tables:
                    table.create(connection, checkfirst=True)
                for table, column in step.columns:
                    _add_column(connection, table, column)
                for name in step.dropped_indexes:
                    connection.execute(sa.text(f"DROP INDEX IF EXISTS {name}"))
                for index in step.indexes:
                    index.create(connection, checkfirst=True)
                connection.execute(
                    migrations_table.insert().values(
                        version=version, name=step.name, applied_at=_now()
                    )
                )
        return SCHEMA_VERSION

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

    def undelivered(self, incident_id: str) -> list[dict[str, object]]:
        """Recipients not accepted, with the last reply, for summaries and reports."""
        table = recipients_table
        query = (
            sa.select(
                table.c.key,
                table.c.email,
                table.c.state,
                table.c.code,
                table.c.reply,
                table.c.first_row,
            )
            .where(table.c.incident_id == incident_id, table.c.state != State.ACCEPTED.value)
            .order_by(table.c.first_row)
        )
        with self.engine.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(query)]

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

    def begin(self, incident_id: str, keys: Iterable[str]) -> None:
        """Mark a batch SENDING before it goes: after a crash these are the ones in doubt."""
        self._set_state(incident_id, list(keys), State.SENDING, count_attempt=True)

    def release(self, incident_id: str, keys: Iterable[str]) -> None:
        """Put back to PENDING what was marked SENDING but certainly never handed over."""
        self._set_state(incident_id, list(keys), State.PENDING, count_attempt=False)

    def record(self, incident_id: str, outcomes: Sequence[Outcome]) -> None:
        """Write a batch of outcomes and their history in one transaction."""
        if not outcomes:
            return
        now = _now()
        params = [
            {"i": incident_id, "k": o.key, "s": o.state.value, "c": o.code, "r": o.reply, "t": now}
            for o in outcomes
        ]
        events = [
            {
                "incident_id": incident_id,
                "key": o.key,
                "state": o.state.value,
                "code": o.code,
                "reply": o.reply,
                "at": now,
            }
            for o in outcomes
        ]

        def write(connection: sa.Connection) -> None:
            connection.execute(_RECORD_OUTCOME, params)
            connection.execute(_RECORD_EVENT, events)

        self._write(write)

    def _set_state(
        self, incident_id: str, keys: list[str], state: State, *, count_attempt: bool
    ) -> None:
        if not keys:
            return
        table = recipients_table
        values: dict[str, object] = {"state": state.value, "updated_at": _now()}
        if state is State.PENDING:
            values.update(claimed_by=None, lease_until=None)
        if count_attempt:
            values["attempts"] = table.c.attempts + 1
        statement = (
            table.update()
            .where(table.c.incident_id == incident_id, table.c.key.in_(keys))
            .values(**values)
        )
        self._write(lambda c: c.execute(statement))

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


def _add_column(connection: sa.Connection, table: sa.Table, name: str) -> None:
    existing = {c["name"] for c in sa.inspect(connection).get_columns(table.name)}
    if name not in existing:
        column = table.c[name]
        kind = column.type.compile(dialect=connection.dialect)
        connection.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {name} {kind}"))


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
