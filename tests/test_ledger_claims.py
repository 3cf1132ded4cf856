"""Claims, leases and pacing between senders sharing one ledger, on SQLite and PostgreSQL."""

from __future__ import annotations

import time

import pytest

from notify.errors import LedgerError
from notify.ledger import Ledger, Registration
from notify.ledger.claims import Claim, Sender, fleet, in_flight
from notify.models import Outcome, State


@pytest.fixture
def ledger(request, ledger_settings, tmp_path) -> Ledger:
    return Ledger.open(ledger_settings.get("ledger") or tmp_path / "ledger.sqlite3")


def keys_of(claims: list[Claim]) -> list[str]:
    return [claimed.key for claimed in claims]


def register(ledger: Ledger, count: int, incident: str = "42") -> list[str]:
    keys = [f"c{n:04d}@example.com" for n in range(count)]
    ledger.register(
        incident,
        [Registration(k, k, f"t{n}", f"<m{n}@x>", n + 2, "data.csv") for n, k in enumerate(keys)],
    )
    return keys


def test_two_senders_claim_disjoint_batches_in_source_order(ledger):
    keys = register(ledger, 50)
    first, second = Sender(ledger, "42"), Sender(ledger, "42")
    first.start()
    second.start()
    a, b, c = keys_of(first.claim(20)), keys_of(second.claim(20)), keys_of(first.claim(20))
    assert a == keys[:20] and b == keys[20:40] and c == keys[40:]
    assert first.claim(20) == [] and second.claim(20) == []
    assert in_flight(ledger, "42") == 0  # a claim reserves; nothing is in flight yet
    assert ledger.hand_over("42", b, holder=first.id) == []  # not first's to send
    assert ledger.hand_over("42", a + c, holder=first.id) == a + c
    assert ledger.hand_over("42", b, holder=second.id) == b
    assert in_flight(ledger, "42") == 50
    first.finish()
    second.finish()
    assert in_flight(ledger, "42") == 0
    assert {s.claimed for s in fleet(ledger, "42")} == {20, 30}


def test_a_sender_never_reclaims_its_own_work_in_flight(ledger):
    register(ledger, 5)
    sender = Sender(ledger, "42")
    sender.start()
    assert len(sender.claim(3)) == 3
    assert len(sender.claim(10)) == 2
    assert sender.claim(10) == []
    sender.finish()


def test_an_expired_lease_on_another_host_is_taken_over(ledger):
    keys = register(ledger, 10)
    remote = Sender(ledger, "42", lease_seconds=0.3)
    remote.host = "elsewhere"  # its process cannot be checked from here: only the lease helps
    remote.start()
    assert keys_of(remote.claim(10)) == keys
    remote._stopped.set()  # it dies: no more heartbeats
    survivor = Sender(ledger, "42")
    survivor.start()
    assert survivor.claim(10) == []
    time.sleep(0.4)
    assert keys_of(survivor.claim(10)) == keys
    survivor.finish()


def test_a_dead_process_on_this_host_is_taken_over_at_once(ledger):
    keys = register(ledger, 4)
    gone = Sender(ledger, "42")
    gone.pid = 2**22 + 12345  # no such process
    gone.id = f"{gone.host}:{gone.pid}:dead"
    gone.start()
    assert keys_of(gone.claim(4)) == keys
    gone._stopped.set()
    survivor = Sender(ledger, "42")
    survivor.start()
    assert keys_of(survivor.claim(4)) == keys
    survivor.finish()


def test_deferred_recipients_of_a_live_sender_are_not_taken(ledger):
    keys = register(ledger, 2)
    owner, other = Sender(ledger, "42"), Sender(ledger, "42")
    owner.start()
    other.start()
    owner.claim(2)
    ledger.hand_over("42", keys, holder=owner.id)
    ledger.record("42", [Outcome(keys[0], State.DEFERRED, 451, "4.3.0 later")])
    assert other.claim(2) == []  # the owner retries it within its run
    owner.finish()
    assert keys_of(other.claim(2)) == keys  # deferred and in doubt: free once the owner is done
    other.finish()


def test_pacing_slots_of_two_senders_never_overlap(ledger):
    register(ledger, 1)
    rate = 200.0
    first, second = Sender(ledger, "42", rate=rate), Sender(ledger, "42", rate=rate)
    first.start()
    second.start()
    for _ in range(3):
        first._reserve_slots()
        second._reserve_slots()
    slots = sorted([*first._slots, *second._slots])
    gaps = [b - a for a, b in zip(slots, slots[1:], strict=False)]
    assert min(gaps) == pytest.approx(1 / rate, rel=1e-3)
    assert len(slots) == len(set(slots)) == 6 * int(0.25 * rate)
    first.finish()
    second.finish()


def test_changed_templates_are_refused_unless_accepted(ledger):
    ledger.check_fingerprint("42", templates="t1", data="d1")
    ledger.check_fingerprint("42", templates="t1", data="d1")  # same: fine
    with pytest.raises(LedgerError) as caught:
        ledger.check_fingerprint("42", templates="t2", data="d1")
    assert "incident 42 was sent with other templates" in str(caught.value)
    assert str(caught.value).endswith(
        "sending now would mix two versions: restore them, or pass --accept-changes "
        "to go on with these"
    )
    ledger.check_fingerprint("42", templates="t2", data="d2", accept_changes=True)
    ledger.check_fingerprint("42", templates="t2", data="d2")


def test_sent_counts_are_written_with_the_next_claim_and_at_finish(ledger):
    register(ledger, 30)
    sender = Sender(ledger, "42")
    sender.start()
    sender.claim(10)
    sender.count_sent(7)
    assert [s.sent for s in fleet(ledger, "42")] == [0]  # no transaction of its own
    sender.claim(10)
    assert [s.sent for s in fleet(ledger, "42")] == [7]
    sender.count_sent(3)
    sender.finish()
    assert [(s.claimed, s.sent, s.finished) for s in fleet(ledger, "42")] == [(20, 10, True)]


def test_a_claim_walks_the_index_instead_of_sorting_the_incident(tmp_path):
    """A claim that sorts every recipient of the incident makes a send quadratic in its
    size; each claim query must read the (incident, state, first_row) index in order."""
    import sqlalchemy as sa

    ledger = Ledger.open(tmp_path / "ledger.sqlite3")
    register(ledger, 30)
    statements: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().startswith("WITH picked"):
            statements.append((statement, parameters))

    sa.event.listen(ledger.engine, "before_cursor_execute", capture)
    sender = Sender(ledger, "42")
    sender.start()
    assert len(sender.claim(40)) == 30  # pending, then in-doubt, then deferred
    sender.finish()
    sa.event.remove(ledger.engine, "before_cursor_execute", capture)
    assert len(statements) == 3
    with ledger.engine.connect() as connection:
        for statement, parameters in statements:
            plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
            details = " | ".join(str(row[-1]) for row in plan)
            assert "recipients_by_state" in details, details
            assert "TEMP B-TREE" not in details, details
