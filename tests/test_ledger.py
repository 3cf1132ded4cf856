"""The ledger: schema versions, idempotent registration, state changes, and kill -9 safety."""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path

import pytest

from notify.errors import LedgerError
from notify.ledger import SCHEMA_VERSION, Ledger, Registration
from notify.models import Outcome, State

REPO_ROOT = Path(__file__).resolve().parent.parent
INCIDENT = "42"


def registration(key: str, row: int = 2) -> Registration:
    return Registration(
        key=key,
        email=key,
        token=f"token-{key}",
        message_id=f"<token-{key}.42@acme.example>",
        first_row=row,
        source="data/affected.csv",
    )


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / ".notify" / "ledger.sqlite3"


@pytest.fixture
def ledger(ledger_path: Path) -> Iterator[Ledger]:
    opened = Ledger.open(ledger_path)
    yield opened
    opened.dispose()


def rows(path: Path, query: str) -> list[tuple[object, ...]]:
    """Read the file with plain sqlite3, the way an operator (or another tool) would."""
    with sqlite3.connect(path) as connection:
        return connection.execute(query).fetchall()


def attempts(path: Path, key: str) -> int:
    ((count,),) = rows(path, f"SELECT attempts FROM recipients WHERE key = '{key}'")
    return int(count)  # type: ignore[call-overload]


# --- schema --------------------------------------------------------------------------


def test_open_creates_the_folder_the_schema_and_records_the_version(ledger_path: Path) -> None:
    Ledger.open(ledger_path).dispose()
    assert ledger_path.is_file()
    tables = {name for (name,) in rows(ledger_path, "SELECT name FROM sqlite_master")}
    assert {"schema_migrations", "recipients", "events", "senders", "pacing"} <= tables
    versions = rows(ledger_path, "SELECT version, name FROM schema_migrations ORDER BY version")
    assert versions == [
        (1, "recipients, events"),
        (2, "senders, pacing, fingerprints; claims and leases on recipients"),
        (3, "bounces, suppressions; alternate address and re-sends on recipients"),
        (4, "history indexed by incident, in the order it was written"),
        (5, "history names each event; a claim reserves without changing the state"),
        (6, "customers' replies, and whether each was answered"),
    ]
    assert SCHEMA_VERSION == 6
    assert {"bounces", "suppressions", "replies"} <= tables


def test_a_version_1_ledger_gains_the_claim_columns(ledger_path: Path) -> None:
    """A ledger written before claims existed is brought up to date in place."""
    import sqlite3

    ledger_path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(ledger_path) as db:
        db.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT,"
            " applied_at TIMESTAMP)"
        )
        db.execute("INSERT INTO schema_migrations VALUES (1, 'recipients, events', '2026-01-01')")
        db.execute(
            "CREATE TABLE recipients (incident_id TEXT, key TEXT, email TEXT, token TEXT,"
            " message_id TEXT, state TEXT, attempts INTEGER, code INTEGER, reply TEXT,"
            " first_row INTEGER, source TEXT, updated_at TIMESTAMP,"
            " PRIMARY KEY (incident_id, key))"
        )
        db.execute(
            "CREATE TABLE events (id INTEGER PRIMARY KEY, incident_id TEXT, key TEXT,"
            " state TEXT, code INTEGER, reply TEXT, at TIMESTAMP)"
        )
        db.execute("CREATE INDEX events_by_recipient ON events (incident_id, key)")
    Ledger.open(ledger_path).dispose()
    columns = {name for (_, name, *_) in rows(ledger_path, "PRAGMA table_info(recipients)")}
    assert {"claimed_by", "lease_until", "alt_email", "sent_to", "resends"} <= columns
    versions = [v for (v,) in rows(ledger_path, "SELECT version FROM schema_migrations")]
    assert versions == [1, 2, 3, 4, 5, 6]
    indexes = {name for (_, name, *_) in rows(ledger_path, "PRAGMA index_list(events)")}
    assert indexes == {"events_by_incident"}  # the per-recipient one is gone


def test_migrating_again_is_a_no_op(ledger: Ledger, ledger_path: Path) -> None:
    before = rows(ledger_path, "SELECT version, applied_at FROM schema_migrations")
    assert ledger.migrate() == SCHEMA_VERSION
    Ledger.open(ledger_path).dispose()
    assert rows(ledger_path, "SELECT version, applied_at FROM schema_migrations") == before


def test_the_ledger_uses_wal(ledger: Ledger, ledger_path: Path) -> None:
    assert rows(ledger_path, "PRAGMA journal_mode") == [("wal",)]


def test_a_ledger_survives_being_reopened(ledger_path: Path) -> None:
    first = Ledger.open(ledger_path)
    first.register(INCIDENT, [registration("a@x.io"), registration("b@x.io")])
    first.hand_over(INCIDENT, ["a@x.io"])
    first.record(INCIDENT, [Outcome("a@x.io", State.ACCEPTED, 250, "2.0.0 queued")])
    first.dispose()
    again = Ledger.open(ledger_path)
    assert again.states(INCIDENT) == {"a@x.io": State.ACCEPTED, "b@x.io": State.PENDING}
    again.dispose()


# --- register ------------------------------------------------------------------------


def test_register_adds_recipients_as_pending(ledger: Ledger) -> None:
    ledger.register(INCIDENT, [registration("a@x.io"), registration("b@x.io")])
    assert ledger.states(INCIDENT) == {"a@x.io": State.PENDING, "b@x.io": State.PENDING}
    assert ledger.states("43") == {}


def test_register_is_idempotent_and_never_resets_a_state(ledger: Ledger, ledger_path: Path) -> None:
    ledger.register(INCIDENT, [registration("a@x.io"), registration("b@x.io")])
    ledger.hand_over(INCIDENT, ["a@x.io"])
    ledger.record(INCIDENT, [Outcome("a@x.io", State.ACCEPTED, 250, "ok")])
    ledger.hand_over(INCIDENT, ["b@x.io"])
    ledger.register(INCIDENT, [registration("a@x.io", row=99), registration("b@x.io")])
    ledger.register(INCIDENT, [registration("c@x.io")])
    assert ledger.states(INCIDENT) == {
        "a@x.io": State.ACCEPTED,
        "b@x.io": State.SENDING,
        "c@x.io": State.PENDING,
    }
    assert rows(
        ledger_path, "SELECT first_row, attempts, code FROM recipients WHERE key='a@x.io'"
    ) == [(2, 1, 250)]
    assert rows(ledger_path, "SELECT count(*) FROM recipients") == [(3,)]


def test_register_nothing_is_fine(ledger: Ledger) -> None:
    ledger.register(INCIDENT, [])
    assert ledger.states(INCIDENT) == {}


def test_incidents_are_kept_apart(ledger: Ledger) -> None:
    ledger.register("42", [registration("a@x.io")])
    ledger.register("43", [registration("a@x.io")])
    ledger.hand_over("42", ["a@x.io"])
    ledger.record("42", [Outcome("a@x.io", State.ACCEPTED, 250)])
    assert ledger.states("43") == {"a@x.io": State.PENDING}


# --- hand over, record ----------------------------------------------------------------


def test_hand_over_marks_sending_and_counts_an_attempt(ledger: Ledger, ledger_path: Path) -> None:
    ledger.register(INCIDENT, [registration("a@x.io"), registration("b@x.io")])
    ledger.hand_over(INCIDENT, ["a@x.io"])
    assert ledger.states(INCIDENT) == {"a@x.io": State.SENDING, "b@x.io": State.PENDING}
    assert (attempts(ledger_path, "a@x.io"), attempts(ledger_path, "b@x.io")) == (1, 0)
    ledger.hand_over(INCIDENT, ["a@x.io"])
    assert attempts(ledger_path, "a@x.io") == 2


def test_an_outcome_for_a_message_never_handed_over_is_refused(
    ledger: Ledger, ledger_path: Path
) -> None:
    ledger.register(INCIDENT, [registration("a@x.io"), registration("b@x.io")])
    ledger.hand_over(INCIDENT, ["a@x.io"])
    with pytest.raises(LedgerError, match="an outcome arrived for a message that was not being"):
        ledger.record(
            INCIDENT,
            [Outcome("a@x.io", State.ACCEPTED, 250), Outcome("b@x.io", State.ACCEPTED, 250)],
        )
    assert ledger.states(INCIDENT) == {"a@x.io": State.SENDING, "b@x.io": State.PENDING}
    assert rows(ledger_path, "SELECT key, event FROM events") == [("a@x.io", "handed over")]


def test_an_accepted_message_is_never_handed_over_again(ledger: Ledger) -> None:
    ledger.register(INCIDENT, [registration("a@x.io")])
    ledger.hand_over(INCIDENT, ["a@x.io"])
    ledger.record(INCIDENT, [Outcome("a@x.io", State.ACCEPTED, 250)])
    assert ledger.hand_over(INCIDENT, ["a@x.io"]) == []
    assert ledger.states(INCIDENT) == {"a@x.io": State.ACCEPTED}


def test_record_writes_states_and_one_event_per_outcome(ledger: Ledger, ledger_path: Path) -> None:
    ledger.register(INCIDENT, [registration(k) for k in ("a@x.io", "b@x.io", "c@x.io")])
    ledger.hand_over(INCIDENT, ["a@x.io", "b@x.io", "c@x.io"])
    ledger.record(
        INCIDENT,
        [
            Outcome("a@x.io", State.ACCEPTED, 250, "2.0.0 queued"),
            Outcome("b@x.io", State.DEFERRED, 451, "4.2.2 mailbox full"),
            Outcome("c@x.io", State.REFUSED, 550, "5.1.1 no such user"),
        ],
    )
    assert ledger.states(INCIDENT) == {
        "a@x.io": State.ACCEPTED,
        "b@x.io": State.DEFERRED,
        "c@x.io": State.REFUSED,
    }
    assert rows(ledger_path, "SELECT key, code, reply FROM recipients ORDER BY key") == [
        ("a@x.io", 250, "2.0.0 queued"),
        ("b@x.io", 451, "4.2.2 mailbox full"),
        ("c@x.io", 550, "5.1.1 no such user"),
    ]
    assert rows(
        ledger_path, "SELECT incident_id, key, event, state, code FROM events ORDER BY key, id"
    ) == [
        ("42", "a@x.io", "handed over", "sending", None),
        ("42", "a@x.io", "accepted", "accepted", 250),
        ("42", "b@x.io", "handed over", "sending", None),
        ("42", "b@x.io", "deferred", "deferred", 451),
        ("42", "c@x.io", "handed over", "sending", None),
        ("42", "c@x.io", "refused", "refused", 550),
    ]


def test_record_is_one_transaction(ledger: Ledger, ledger_path: Path) -> None:
    ledger.register(INCIDENT, [registration("a@x.io"), registration("boom@x.io")])
    with sqlite3.connect(ledger_path) as connection:
        connection.execute(
            "CREATE TRIGGER fail BEFORE INSERT ON events WHEN NEW.key = 'boom@x.io' "
            "AND NEW.state = 'accepted' BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
    ledger.hand_over(INCIDENT, ["a@x.io", "boom@x.io"])
    outcomes = [
        Outcome("a@x.io", State.ACCEPTED, 250),
        Outcome("boom@x.io", State.ACCEPTED, 250),
    ]
    with pytest.raises(LedgerError) as caught:
        ledger.record(INCIDENT, outcomes)
    assert str(caught.value) == (
        f"cannot write the ledger at sqlite+pysqlite:///{ledger_path} (disk full); "
        "nothing more is sent; check the disk or NOTIFY_LEDGER, then run again"
    )
    assert ledger.states(INCIDENT) == {"a@x.io": State.SENDING, "boom@x.io": State.SENDING}
    assert rows(ledger_path, "SELECT count(*) FROM events WHERE state = 'accepted'") == [(0,)]


def test_record_nothing_writes_nothing(ledger: Ledger, ledger_path: Path) -> None:
    ledger.record(INCIDENT, [])
    assert rows(ledger_path, "SELECT count(*) FROM events") == [(0,)]


def test_counts_cover_every_state(ledger: Ledger) -> None:
    ledger.register(INCIDENT, [registration(f"{n}@x.io") for n in range(5)])
    ledger.hand_over(INCIDENT, ["0@x.io", "1@x.io", "2@x.io", "3@x.io"])
    ledger.record(
        INCIDENT,
        [
            Outcome("0@x.io", State.ACCEPTED, 250),
            Outcome("1@x.io", State.ACCEPTED, 250),
            Outcome("2@x.io", State.REFUSED, 550),
        ],
    )
    assert ledger.counts(INCIDENT) == {
        **dict.fromkeys(State, 0),
        State.PENDING: 1,
        State.SENDING: 1,
        State.ACCEPTED: 2,
        State.REFUSED: 1,
    }
    assert ledger.counts("43") == dict.fromkeys(State, 0)


def test_undelivered_lists_everyone_not_accepted_by_first_row(ledger: Ledger) -> None:
    ledger.register(
        INCIDENT,
        [
            registration("late@x.io", row=90),
            registration("early@x.io", row=3),
            registration("sent@x.io", row=1),
            registration("mid@x.io", row=40),
        ],
    )
    ledger.hand_over(INCIDENT, ["sent@x.io", "mid@x.io"])
    ledger.record(
        INCIDENT,
        [Outcome("sent@x.io", State.ACCEPTED, 250), Outcome("mid@x.io", State.REFUSED, 550, "no")],
    )
    shown = ("email", "state", "code", "reply", "first_row")
    assert [{k: getattr(row, k) for k in shown} for row in ledger.undelivered(INCIDENT)] == [
        {"email": "early@x.io", "state": "pending", "code": None, "reply": None, "first_row": 3},
        {"email": "mid@x.io", "state": "refused", "code": 550, "reply": "no", "first_row": 40},
        {"email": "late@x.io", "state": "pending", "code": None, "reply": None, "first_row": 90},
    ]


# --- failures ------------------------------------------------------------------------


def test_a_folder_is_not_a_ledger(tmp_path: Path) -> None:
    with pytest.raises(LedgerError) as caught:
        Ledger.open(tmp_path)
    assert str(caught.value) == (
        f"cannot open the ledger at sqlite+pysqlite:///{tmp_path} (unable to open database file); "
        "check NOTIFY_LEDGER"
    )


@pytest.mark.parametrize("url", ["nosuchdb://host/ledger", "mysql://root@127.0.0.1/test"])
def test_a_database_kind_other_than_sqlite_or_postgresql_is_one_line(url: str) -> None:
    with pytest.raises(LedgerError) as caught:
        Ledger.open(url)
    assert str(caught.value) == (
        f"NOTIFY_LEDGER={url}: the ledger lives in SQLite (one machine) or PostgreSQL "
        "(several); use a sqlite:// or postgresql:// URL"
    )


@pytest.mark.skipif(bool(find_spec("pysqlcipher3")), reason="needs the driver to be missing")
def test_a_missing_driver_is_one_line_and_hides_the_password() -> None:
    with pytest.raises(LedgerError) as caught:
        Ledger.open("sqlite+pysqlcipher://:s3cret@/ledger.db")
    assert str(caught.value) == (
        "cannot open the ledger at sqlite+pysqlcipher://:***@/ledger.db "
        "(No module named 'pysqlcipher3'); check NOTIFY_LEDGER"
    )


def test_a_url_that_cannot_be_parsed_names_the_setting() -> None:
    with pytest.raises(LedgerError) as caught:
        Ledger.open("postgresql://user@host:notaport/db")
    assert str(caught.value) == (
        "NOTIFY_LEDGER='postgresql://user@host:notaport/db' is not a database URL or path; "
        "write it like postgresql://user@host/ledger or .notify/ledger.db"
    )


# --- kill -9 -------------------------------------------------------------------------

_KILLED_CHILD = textwrap.dedent(
    """\
    import os, sys
    from notify.ledger import Ledger
    from notify.models import Outcome, State

    ledger = Ledger.open(sys.argv[1])
    ledger.record("42", [Outcome("a@x.io", State.ACCEPTED, 250, "ok")])
    ledger.hand_over("42", ["b@x.io", "c@x.io"])
    os.kill(os.getpid(), 9)
    """
)


def test_a_process_killed_between_begin_and_record_leaves_the_batch_sending(
    ledger: Ledger, ledger_path: Path
) -> None:
    keys = ["a@x.io", "b@x.io", "c@x.io", "d@x.io"]
    ledger.register(INCIDENT, [registration(k) for k in keys])
    ledger.hand_over(INCIDENT, ["a@x.io"])
    ledger.dispose()
    child = subprocess.run(
        [sys.executable, "-c", _KILLED_CHILD, str(ledger_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert rows(ledger_path, "PRAGMA integrity_check") == [("ok",)]
    reopened = Ledger.open(ledger_path)
    assert reopened.states(INCIDENT) == {
        "a@x.io": State.ACCEPTED,
        "b@x.io": State.SENDING,
        "c@x.io": State.SENDING,
        "d@x.io": State.PENDING,
    }
    reopened.dispose()


_BUSY_CHILD = textwrap.dedent(
    """\
    import sys
    from notify.ledger import Ledger, Registration
    from notify.models import Outcome, State

    ledger = Ledger.open(sys.argv[1])
    keys = [f"{n}@x.io" for n in range(20000)]
    ledger.register("42", [Registration(k, k, k, f"<{k}>", n, "s") for n, k in enumerate(keys)])
    print("ready", flush=True)
    previous = []
    for key in keys:  # as a connection does: the last outcome, and the next hand-over
        ledger.settle("42", previous, [key])
        previous = [Outcome(key, State.ACCEPTED, 250, "ok")]
    """
)


def test_a_process_killed_while_writing_leaves_at_most_one_in_doubt(
    ledger_path: Path,
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _BUSY_CHILD, str(ledger_path)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    time.sleep(0.1)
    child.send_signal(signal.SIGKILL)
    assert child.wait(timeout=60) == -signal.SIGKILL
    assert rows(ledger_path, "PRAGMA integrity_check") == [("ok",)]
    reopened = Ledger.open(ledger_path)
    counts = reopened.counts(INCIDENT)
    reopened.dispose()
    assert counts[State.PENDING] > 0, "the child finished before it was killed"
    assert counts[State.SENDING] <= 1
    assert sum(counts.values()) == 20000
    accepted_with_event = rows(
        ledger_path,
        "SELECT count(*) FROM recipients r WHERE state = 'accepted' AND EXISTS "
        "(SELECT 1 FROM events e WHERE e.key = r.key AND e.state = 'accepted')",
    )
    assert accepted_with_event == [(counts[State.ACCEPTED],)]
    accepted_events = rows(ledger_path, "SELECT count(*) FROM events WHERE state = 'accepted'")
    assert accepted_events == [(counts[State.ACCEPTED],)]


def test_registrations_store_timestamps_as_the_rest_of_the_ledger_does(
    ledger: Ledger, ledger_path: Path
) -> None:
    """Registration goes straight through the driver; its timestamps must still be in
    the form SQLAlchemy writes and compares (an ISO form with '+00:00' would not match)."""
    ledger.register(INCIDENT, [registration("a@x.io"), registration("b@x.io", row=3)])
    ledger.hand_over(INCIDENT, ["b@x.io"])
    stamps = [text for (text,) in rows(ledger_path, "SELECT updated_at FROM recipients")]
    assert len(stamps) == 2
    for text in stamps:
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", text), text
