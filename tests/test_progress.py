"""The send's progress line: a rate measured over the latest sending, and an ETA from it."""

from __future__ import annotations

import pytest

from notify.progress import SendRate, clock_text, progress_text, summary_text


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "--:--"), (0, "00:00"), (29.6, "00:30"), (61, "01:01"), (3725, "1:02:05")],
)
def test_clock_text(seconds, text):
    assert clock_text(seconds) == text


def test_progress_text_shows_outcomes_rate_and_eta():
    text = progress_text(accepted=120, deferred=2, refused=1, in_doubt=0, rate=41.25, eta=95)
    assert text == "accepted 120 deferred 2 refused 1  41.2 messages/s  ETA 01:35"
    unknown = progress_text(accepted=0, deferred=0, refused=0, in_doubt=1, rate=None, eta=None)
    assert unknown == "accepted 0 deferred 0 refused 0 in doubt 1  -- messages/s  ETA --:--"


def test_summary_text():
    assert summary_text("1,000 accepted", attempted=1000, elapsed=30.0) == (
        "Sent: 1,000 accepted in 00:30 (33.3 messages/s)."
    )


def test_eta_comes_from_the_rate_of_sending_not_from_a_slow_start():
    clock = Clock()
    rate = SendRate(window=10.0, clock=clock)
    assert rate.rate is None and rate.eta(1000) is None
    clock.now += 120.0  # a long check and confirmation before the first message: not counted
    rate.tick()
    assert rate.rate is None
    for _ in range(100):  # then 50 messages/s
        clock.now += 0.02
        rate.tick()
    assert rate.rate == pytest.approx(50.0)
    assert rate.eta(1000) == pytest.approx(20.0)
    assert rate.eta(0) == 0.0


def test_the_rate_follows_the_latest_window():
    clock = Clock()
    rate = SendRate(window=10.0, clock=clock)
    for _ in range(100):  # 10 messages/s for 10 s
        clock.now += 0.1
        rate.tick()
    for _ in range(1000):  # then 100 messages/s for 10 s
        clock.now += 0.01
        rate.tick()
    assert rate.rate == pytest.approx(100.0, rel=0.02)
