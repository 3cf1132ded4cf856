"""Random sequences of what can happen to one recipient, driven through a real ledger:
the invariants of "once means once" hold whatever the order."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from notify.errors import LedgerError
from notify.ledger import Ledger, Registration, transitions
from notify.ledger.store import recipients
from notify.models import TRANSITIONS, Event, Outcome, State, sources_of, target_of

KEY = "ann@example.com"
INCIDENT = "42"
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)

_STEPS = st.lists(
    st.sampled_from(
        ["hand over", "accepted", "deferred", "refused", "in doubt", "suppress", "lift"]
    ),
    max_size=25,
)
_OUTCOMES = {
    "accepted": State.ACCEPTED,
    "deferred": State.DEFERRED,
    "refused": State.REFUSED,
    "in doubt": State.SENDING,
}


def test_every_event_leads_to_one_state_and_none_leaves_accepted_but_a_bounce() -> None:
    for event in Event:
        assert {to for (_, e), to in TRANSITIONS.items() if e is event} == {target_of(event)}
    leaving_accepted = {event for (state, event) in TRANSITIONS if state is State.ACCEPTED}
    assert leaving_accepted == {
        Event.HARD_BOUNCE,
        Event.TO_ALTERNATE,
        Event.SOFT_BOUNCE,
        Event.BLOCKED,
        Event.GAVE_UP,
    }
    assert State.SUPPRESSED not in sources_of(Event.HANDED_OVER)


@settings(max_examples=40, deadline=None)
@given(steps=_STEPS)
def test_random_sequences_keep_once_means_once(steps: list[str]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        ledger = Ledger.open(Path(folder) / "ledger.sqlite3")
        ledger.register(INCIDENT, [Registration(KEY, KEY, "t", "<t.42@x>", 2, "x.csv")])
        suppressed = False
        for step in steps:
            before = ledger.states(INCIDENT)[KEY]
            if step == "hand over":
                taken = ledger.hand_over(INCIDENT, [KEY])
                after = ledger.states(INCIDENT)[KEY]
                if suppressed:  # never claimed: refused, and listed why
                    assert taken == []
                    assert after in (State.SUPPRESSED, before)
                elif before in sources_of(Event.HANDED_OVER):
                    assert taken == [KEY] and after is State.SENDING
                else:
                    assert taken == [] and after is before
            elif step in _OUTCOMES:
                outcome = Outcome(KEY, _OUTCOMES[step], 250, "reply")
                if before is State.SENDING:
                    ledger.record(INCIDENT, [outcome])
                    assert ledger.states(INCIDENT)[KEY] is _OUTCOMES[step]
                else:  # an outcome for a message not handed over is refused, not written
                    try:
                        ledger.record(INCIDENT, [outcome])
                    except LedgerError:
                        pass
                    else:
                        raise AssertionError(f"an outcome was recorded from {before}")
                    assert ledger.states(INCIDENT)[KEY] is before
            elif step == "suppress":
                with ledger.writing() as connection:
                    transitions.suppress(connection, ledger, KEY, "hard bounce", INCIDENT, NOW)
                suppressed = True
            elif step == "lift":
                transitions.lift(ledger, KEY)
                suppressed = False
            assert len(ledger.states(INCIDENT)) == 1  # exactly one state, always
        _assert_history_is_once(ledger)
        ledger.dispose()


def _assert_history_is_once(ledger: Ledger) -> None:
    """Two acceptances always have a hand-over between them, and every acceptance
    follows one: the relay got the message once per hand-over at most."""
    with ledger.engine.connect() as connection:
        events = [
            row[0]
            for row in connection.exec_driver_sql(
                "SELECT event FROM events WHERE key = ? ORDER BY id", (KEY,)
            )
        ]
    handed = False
    for event in events:
        if event == Event.HANDED_OVER.value:
            handed = True
        elif event == Event.ACCEPTED.value:
            assert handed, events
            handed = False
    assert recipients(ledger, INCIDENT)[0].key == KEY
