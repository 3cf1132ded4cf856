"""The ledger after the send: bounces recorded once, what they change, what falls due."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from notify import schedule
from notify.bounces.parse import Bounce, FailedRecipient
from notify.ledger import Ledger, Registration, claims, store, transitions
from notify.models import BounceKind, Outcome, State

INCIDENT = "42"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
SCHEDULE = (3600.0, 4 * 3600.0)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    opened = Ledger.open(tmp_path / "ledger.sqlite3")
    people = [("ann@example.com", "ann@example.org"), ("bob@example.com", None)]
    opened.register(
        INCIDENT,
        [
            Registration(key, key, f"t-{key}", f"<t-{key}.42@acme.example>", n + 2, "x.csv", alt)
            for n, (key, alt) in enumerate(people)
        ],
    )
    keys = [key for key, _ in people]
    opened.hand_over(INCIDENT, keys)
    opened.record(INCIDENT, [Outcome(key, State.ACCEPTED, 250, "2.0.0 Ok") for key in keys])
    yield opened
    opened.dispose()


def bounce(kind: BounceKind, address: str | None, *, status: str = "5.1.1", fp: str = "b1"):
    failed = FailedRecipient(address, status, kind, f"550 {status} said the server")
    return Bounce(kind, [failed], [], [], None, fp)


def person(ledger: Ledger, key: str) -> store.LedgerRecipient:
    return next(r for r in store.recipients(ledger, INCIDENT) if r.key == key)


def record(ledger: Ledger, key: str, found: Bounce, now: datetime = NOW):
    return transitions.record_bounce(
        ledger, person(ledger, key), found, mailbox="test", schedule=SCHEDULE, now=now
    )


def test_a_hard_bounce_suppresses_and_moves_to_the_alternate_once(ledger):
    effect = record(ledger, "ann@example.com", bounce(BounceKind.HARD, "ann@example.com"))
    assert effect is not None and effect.state is State.ALTERNATE
    ann = person(ledger, "ann@example.com")
    assert (ann.state, ann.sent_to, ann.address) == (
        State.ALTERNATE,
        "ann@example.org",
        "ann@example.org",
    )
    assert store.suppressed(ledger) == {
        "ann@example.com": "hard bounce: 5.1.1 550 5.1.1 said the server"
    }
    assert record(ledger, "ann@example.com", bounce(BounceKind.HARD, "ann@example.com")) is None


def test_a_hard_bounce_without_an_alternate_is_unreachable(ledger):
    effect = record(ledger, "bob@example.com", bounce(BounceKind.HARD, None))
    assert effect is not None and effect.state is State.HARD_BOUNCED
    assert "bob@example.com" in store.suppressed(ledger)


def test_a_late_bounce_from_the_first_address_does_not_undo_the_alternate(ledger):
    record(ledger, "ann@example.com", bounce(BounceKind.HARD, "ann@example.com", fp="first"))
    claimed = person(ledger, "ann@example.com")
    claims.claim(ledger, [claimed], holder="me", lease_until=1e12, now=NOW)
    assert ledger.hand_over(INCIDENT, ["ann@example.com"], holder="me") == ["ann@example.com"]
    ledger.record(INCIDENT, [Outcome("ann@example.com", State.ACCEPTED, 250, "ok")])
    late = bounce(BounceKind.HARD, "ann@example.com", fp="late")
    effect = record(ledger, "ann@example.com", late)
    assert effect is not None and effect.state is State.ACCEPTED


def test_sender_problems_never_mark_the_address_bad(ledger):
    policy = bounce(BounceKind.SENDER, "bob@example.com", status="5.7.1")
    effect = record(ledger, "bob@example.com", policy)
    assert effect is not None and effect.state is State.BLOCKED
    assert store.suppressed(ledger) == {}


def test_a_delayed_notice_changes_nothing(ledger):
    delayed = bounce(BounceKind.DELAYED, "bob@example.com", status="4.4.1")
    effect = record(ledger, "bob@example.com", delayed)
    assert effect is not None and effect.state is State.ACCEPTED
    assert person(ledger, "bob@example.com").state is State.ACCEPTED


def test_soft_bounces_fall_due_step_by_step_then_are_given_up(ledger):
    record(ledger, "bob@example.com", bounce(BounceKind.SOFT, None, status="4.2.2", fp="s1"))
    bob = person(ledger, "bob@example.com")
    assert bob.state is State.SOFT_BOUNCED
    assert schedule.due([bob], SCHEDULE, NOW + timedelta(minutes=59)) == ([], [])
    assert schedule.due([bob], SCHEDULE, NOW + timedelta(minutes=60)) == ([bob], [])
    assert schedule.next_due([bob], SCHEDULE) == NOW + timedelta(hours=1)
    spent = replace(bob, resends=2)
    assert schedule.due([spent], SCHEDULE, NOW + timedelta(days=9)) == ([], [spent])


def test_a_soft_bounce_after_the_last_step_gives_up_at_once(ledger):
    for step, fingerprint in enumerate(("s1", "s2"), start=1):
        record(
            ledger, "bob@example.com", bounce(BounceKind.SOFT, None, status="4.2.2", fp=fingerprint)
        )
        bob = person(ledger, "bob@example.com")
        assert [
            r.key for r in claims.claim(ledger, [bob], holder="me", lease_until=1e12, now=NOW)
        ] == ["bob@example.com"]
        assert (
            claims.claim(
                ledger, [person(ledger, "bob@example.com")], holder="b", lease_until=1e12, now=NOW
            )
            == []
        )
        ledger.hand_over(INCIDENT, ["bob@example.com"], holder="me")
        ledger.record(INCIDENT, [Outcome("bob@example.com", State.ACCEPTED, 250)])
        assert person(ledger, "bob@example.com").resends == step
    effect = record(
        ledger, "bob@example.com", bounce(BounceKind.SOFT, None, status="4.2.2", fp="s3")
    )
    assert effect is not None and effect.state is State.GAVE_UP


def test_two_claims_of_the_same_recipients_take_each_once(ledger):
    record(ledger, "bob@example.com", bounce(BounceKind.SOFT, None, status="4.2.2"))
    seen = store.recipients(ledger, INCIDENT, states=[State.SOFT_BOUNCED])
    first = claims.claim(ledger, seen, holder="a", lease_until=1e12, now=NOW)
    second = claims.claim(ledger, seen, holder="b", lease_until=1e12, now=NOW)
    assert [r.key for r in first] == ["bob@example.com"] and second == []
    assert ledger.hand_over(INCIDENT, ["bob@example.com"], holder="b") == []
    assert person(ledger, "bob@example.com").state is State.SOFT_BOUNCED  # a claim only reserves


def test_suppressions_are_applied_before_a_send_and_lifted(ledger):
    ledger.register(
        "43", [Registration("bob@example.com", "bob@example.com", "t43", "<t43>", 2, "x")]
    )
    record(ledger, "bob@example.com", bounce(BounceKind.HARD, None))
    assert transitions.apply_suppressions(ledger, "43", now=NOW) == 1
    assert ledger.states("43") == {"bob@example.com": State.SUPPRESSED}
    assert transitions.lift(ledger, "BOB@example.com")
    assert not transitions.lift(ledger, "bob@example.com")
    assert transitions.apply_suppressions(ledger, "43", now=NOW) == 0
    assert ledger.states("43") == {"bob@example.com": State.PENDING}
