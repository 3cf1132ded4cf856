"""Several `notify send` processes on one incident, sharing a PostgreSQL ledger."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from notify.ledger import Ledger
from notify.models import State
from tests.conftest import REPO_ROOT, make_rows, notify_env

CONNECTIONS = 4


def start_senders(workspace, count: int) -> list[subprocess.Popen[str]]:
    command = [sys.executable, "-m", "notify", "send", "--incident", "42", "--yes",
               "--workspace", str(workspace.root)]  # fmt: skip
    return [
        subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=notify_env(),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for _ in range(count)
    ]


def finish(senders: list[subprocess.Popen[str]], timeout: float = 240) -> list[int]:
    codes = []
    for sender in senders:
        _, stderr = sender.communicate(timeout=timeout)
        codes.append(sender.returncode)
        assert sender.returncode in (0, -signal.SIGKILL), stderr[-2000:]
    return codes


def final_counts(url: str) -> dict[State, int]:
    return {state: n for state, n in Ledger.open(url).counts("42").items() if n}


@pytest.mark.slow
def test_three_senders_deliver_each_recipient_exactly_once(workspace, smtp_server, pg_ledger_url):
    workspace.smtp(smtp_server, ledger=pg_ledger_url, connections=CONNECTIONS)
    workspace.rows(make_rows(5000))
    finish(start_senders(workspace, 3))
    delivered = Counter(m.rcpt_tos[0] for m in smtp_server.messages)
    assert len(delivered) == 5000 and set(delivered.values()) == {1}
    assert final_counts(pg_ledger_url) == {State.ACCEPTED: 5000}
    senders = Ledger.open(pg_ledger_url)
    from notify.ledger.claims import fleet

    shares = sorted(s.sent for s in fleet(senders, "42"))
    assert sum(shares) == 5000 and len(shares) == 3
    assert shares[0] > 0, "every sender should get a share of the work"


@pytest.mark.slow
def test_a_killed_sender_leaves_only_its_in_flight_messages_in_doubt(
    workspace, smtp_server, pg_ledger_url
):
    workspace.smtp(smtp_server, ledger=pg_ledger_url, connections=CONNECTIONS)
    workspace.rows(make_rows(3000))
    smtp_server.delay = 0.001
    senders = start_senders(workspace, 3)
    deadline = time.monotonic() + 120
    while len(smtp_server.messages) < 600 and time.monotonic() < deadline:
        time.sleep(0.01)
    senders[0].send_signal(signal.SIGKILL)
    codes = finish(senders)
    assert codes[0] == -signal.SIGKILL and codes[1:] == [0, 0]
    assert len(smtp_server.messages) <= 3000 + CONNECTIONS
    settle = start_senders(workspace, 1)  # a later run settles anything still in doubt
    finish(settle)
    by_address = Counter(m.rcpt_tos[0] for m in smtp_server.messages)
    assert len(by_address) == 3000
    duplicated = [address for address, n in by_address.items() if n > 1]
    assert len(duplicated) <= CONNECTIONS  # the killed one's in flight: one per connection
    assert max(by_address.values()) <= 2
    for address in duplicated:
        ids = {m.message["Message-ID"] for m in smtp_server.messages if m.rcpt_tos[0] == address}
        assert len(ids) == 1
    assert final_counts(pg_ledger_url) == {State.ACCEPTED: 3000}


@pytest.mark.slow
def test_one_rate_cap_holds_for_three_senders(workspace, smtp_server, pg_ledger_url):
    rate = 100
    workspace.smtp(smtp_server, ledger=pg_ledger_url, connections=2, rate=rate)
    workspace.rows(make_rows(450))
    finish(start_senders(workspace, 3))
    arrivals = sorted(m.at for m in smtp_server.messages)
    assert len(arrivals) == 450
    overall = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0])
    assert overall <= rate * 1.10
    window = 2.0  # arrival times carry the relay's own jitter; 2 s smooths a few ms of it
    busiest = max(sum(1 for t in arrivals if start <= t < start + window) for start in arrivals)
    assert busiest <= rate * window * 1.10


def test_a_sender_with_changed_templates_is_refused(workspace, run_cli, smtp_server, pg_ledger_url):
    workspace.smtp(smtp_server, ledger=pg_ledger_url)
    workspace.rows(make_rows(6))
    assert run_cli(workspace, "send", "--incident", "42", "--yes", "--limit", "2").exit_code == 0
    workspace.write("templates/apology/subject.j2", "A different subject\n")
    refused = run_cli(workspace, "send", "--incident", "42", "--yes")
    assert refused.exit_code == 3
    assert "Error: incident 42 was sent with other templates (recorded " in refused.output
    assert len(smtp_server.messages) == 2
    accepted = run_cli(workspace, "send", "--incident", "42", "--yes", "--accept-changes")
    assert accepted.exit_code == 0
    assert len(smtp_server.messages) == 6


def test_status_lists_the_senders(workspace, run_cli, smtp_server, pg_ledger_url):
    workspace.smtp(smtp_server, ledger=pg_ledger_url)
    workspace.rows(make_rows(3))
    assert run_cli(workspace, "send", "--incident", "42", "--yes").exit_code == 0
    status = run_cli(workspace, "status", "--incident", "42")
    lines = status.output.splitlines()
    assert "Senders (0 active):" in lines
    assert any(line.endswith(": claimed 3, sent 3, finished") for line in lines)
