"""Promise 2 under SIGKILL: a few kill trials of bench/kill_trials.py, driving the CLI as a
black box against its recording relay.

A killed send or resend is run again until it is done; then every recipient was accepted
at least once, at most one message per connection twice (the one in flight), each re-send
under the same Message-ID, and no suppressed address was mailed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import kill_trials
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

DELAY_MS = 2.0  # per message at the relay: a send of 100 lasts a fraction of a second


def options(tmp_path: Path) -> kill_trials.Options:
    return kill_trials.Options(REPO_ROOT, tmp_path, reruns=3, run_timeout=90)


@pytest.mark.parametrize(
    ("scenario", "moment", "recipients"),
    [("send-c2", "mid", 80), ("send-c4", "mid", 100), ("resend", "mid", 60)],
)
def test_a_killed_run_and_its_reruns_send_each_message_once(
    tmp_path: Path, clean_environ: None, scenario: str, moment: str, recipients: int
) -> None:
    trial = kill_trials.Trial(
        1, kill_trials.SCENARIOS[scenario], moment, recipients, DELAY_MS, seed=12
    )
    outcome = kill_trials.run_trial(trial, options(tmp_path), kill_trials.Estimates())
    assert outcome.killed_at.startswith("send@"), kill_trials.format_outcome(outcome)
    assert outcome.failures == [], kill_trials.format_outcome(outcome)


def test_an_alternate_in_doubt_is_sent_again_to_the_alternate_only(
    tmp_path: Path, clean_environ: None
) -> None:
    result = kill_trials.run_in_doubt_check(options(tmp_path), recipients=20, resends=2)
    assert result.failures == [], kill_trials.format_in_doubt(result)
