"""The ledger's tables and their migrations, recorded in the database itself.

Every table is declared once here; a fresh ledger and an old one migrated step by step end
at the same schema (tests hold both to that).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

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
    sa.Column("state", sa.String(16), nullable=False),  # the state it led to
    sa.Column("code", sa.Integer),
    sa.Column("reply", sa.Text),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("event", sa.String(32)),  # what happened (models.Event); older rows: none
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

replies_table = (
    sa.Table(  # each customer's reply read, once: its fingerprint makes a re-read a no-op
        "replies",
        metadata,
        sa.Column("fingerprint", sa.String(64), primary_key=True),
        sa.Column("incident_id", sa.String(64), nullable=False),
        sa.Column("key", sa.String(320), nullable=False),
        sa.Column("address", sa.String(320), nullable=False),  # the From: of the reply
        sa.Column("subject", sa.Text),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),  # Date:, else read
        sa.Column("excerpt", sa.Text, nullable=False),  # its first lines, quotes and signature cut
        sa.Column("answered_at", sa.DateTime(timezone=True)),  # None: the customer waits
        sa.Index("replies_by_recipient", "incident_id", "key"),
    )
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
    5: Migration(
        "history names each event; a claim reserves without changing the state",
        columns=((events_table, "event"),),
    ),
    6: Migration("customers' replies, and whether each was answered", (replies_table,)),
}
SCHEMA_VERSION = max(MIGRATIONS)


def migrate(engine: Engine) -> int:
    """Apply every migration not yet recorded in the database; returns the version."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":  # two senders starting together
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
                migrations_table.insert().values(version=version, name=step.name, applied_at=_now())
            )
    return SCHEMA_VERSION


def _add_column(connection: sa.Connection, table: sa.Table, name: str) -> None:
    existing = {c["name"] for c in sa.inspect(connection).get_columns(table.name)}
    if name not in existing:
        column = table.c[name]
        kind = column.type.compile(dialect=connection.dialect)
        connection.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {name} {kind}"))


def _now() -> datetime:
    return datetime.now(UTC)
