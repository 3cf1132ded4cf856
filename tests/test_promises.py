"""The promises of PRODUCT.md, each with a test that fails if it breaks."""

from __future__ import annotations

import csv
import io
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from email import message_from_bytes, policy

from notify.ledger import Ledger
from notify.models import State
from tests.conftest import REPO_ROOT, make_rows, notify_env

CONNECTIONS = 2
IN_FLIGHT = CONNECTIONS  # what a crash may leave in doubt at most: one per connection


def test_a_template_error_in_the_last_recipient_sends_nothing(
    workspace, ledger_settings, run_cli, smtp_server
):
    """Promise 1: nothing is sent unless every message rendered."""
    workspace.smtp(smtp_server, **ledger_settings)
    rows = make_rows(50)
    rows[-1][0] = ""  # the last customer has no name ...
    workspace.write("templates/apology/subject.j2", "Sorry, {{ customer.name }}\n")  # ... required
    workspace.rows(rows)
    result = run_cli(workspace, "send", "--incident", "42", "--yes")
    assert result.exit_code == 3
    assert "customer49@example.com (data/affected.csv row 51)" in result.output
    assert smtp_server.messages == [] and smtp_server.connections == 0


def test_a_rerun_never_sends_twice(workspace, ledger_settings, run_cli, smtp_server):
    """Promise 2: a recipient recorded as sent is never sent the same message again."""
    workspace.smtp(smtp_server, **ledger_settings)
    workspace.rows(make_rows(30))
    smtp_server.fail_next(1, "421 4.7.0 Shutting down")  # retried within the run
    assert run_cli(workspace, "send", "--incident", "42", "--yes", "--limit", "12").exit_code == 0
    for _ in range(2):
        assert run_cli(workspace, "send", "--incident", "42", "--yes").exit_code == 0
    delivered = Counter(m.rcpt_tos[0] for m in smtp_server.messages)
    assert len(delivered) == 30
    assert set(delivered.values()) == {1}


def test_sigkill_mid_send_then_rerun_leaves_everyone_told_once(
    workspace, ledger_settings, smtp_server
):
    """Promise 2 and 5: kill -9 mid-run; the re-run settles the in-flight ones only."""
    workspace.smtp(smtp_server, connections=CONNECTIONS, **ledger_settings)
    workspace.rows(make_rows(200))
    smtp_server.delay = 0.004
    command = [
        sys.executable,
        "-m",
        "notify",
        "send",
        "--incident",
        "42",
        "--yes",
        "--workspace",
        str(workspace.root),
    ]
    sender = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=notify_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while len(smtp_server.messages) < 70 and time.monotonic() < deadline:
        time.sleep(0.005)
    sender.send_signal(signal.SIGKILL)
    sender.wait(timeout=10)
    killed_at = len(smtp_server.messages)
    assert 70 <= killed_at < 200, "the kill must land mid-run"

    location = ledger_settings.get("ledger") or workspace.root / ".notify" / "ledger.sqlite3"
    if not ledger_settings:
        with sqlite3.connect(location) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    in_doubt = Ledger.open(location).counts("42")[State.SENDING]
    assert 0 < in_doubt <= IN_FLIGHT

    smtp_server.delay = 0
    rerun = subprocess.run(
        command, cwd=REPO_ROOT, env=notify_env(), capture_output=True, text=True, timeout=120
    )
    assert rerun.returncode == 0, rerun.stderr
    by_address = Counter(m.rcpt_tos[0] for m in smtp_server.messages)
    assert sorted(by_address) == sorted(f"customer{n}@example.com" for n in range(200))
    duplicated = [address for address, n in by_address.items() if n > 1]
    assert len(duplicated) <= in_doubt
    assert max(by_address.values()) <= 2
    for address in duplicated:  # a re-sent message is the same message
        ids = {
            message_from_bytes(m.data, policy=policy.default)["Message-ID"]
            for m in smtp_server.messages
            if m.rcpt_tos[0] == address
        }
        assert len(ids) == 1
    counts = Ledger.open(location).counts("42")
    assert {state: n for state, n in counts.items() if n} == {State.ACCEPTED: 200}


def test_no_customer_is_silently_dropped(workspace, ledger_settings, run_cli, smtp_server):
    """Promise 3: each row ends as sent, or in the rejects list with a reason."""
    workspace.smtp(smtp_server, **ledger_settings)
    rows = make_rows(10, items_each=2) + [
        ["X", "not-an-address", "", "A-x", "1"],
        ["Y", "", "", "A-y", "1"],
    ]
    workspace.rows(rows)
    result = run_cli(workspace, "send", "--incident", "42", "--yes")
    assert result.exit_code == 0, result.output
    rejects = (workspace.root / ".notify" / "incident-42" / "rejects.csv").read_text().splitlines()
    assert len(rejects) == 1 + 2
    assert len({m.rcpt_tos[0] for m in smtp_server.messages}) == 10


def test_a_name_with_a_line_break_cannot_add_a_header(
    workspace, ledger_settings, run_cli, smtp_server
):
    """Promise 4: a line break in a header value is folded into a space and listed for
    review; it neither adds a header nor stops the send."""
    workspace.smtp(smtp_server, **ledger_settings)
    workspace.rows(
        [
            ["Ann", "ann@example.com", "", "A-1", "1"],
            ["Eve\r\nBcc: victim@example.net", "eve@example.com", "", "A-2", "2"],
        ]
    )
    workspace.write("templates/apology/subject.j2", "Hello {{ customer.name }}\n")
    result = run_cli(workspace, "send", "--incident", "42", "--yes")
    assert result.exit_code == 0, result.output
    assert "    line break                1" in result.output.splitlines()
    assert sorted(r for m in smtp_server.messages for r in m.rcpt_tos) == [
        "ann@example.com",
        "eve@example.com",
    ]
    eve = next(m.message for m in smtp_server.messages if m.rcpt_tos == ["eve@example.com"])
    assert "Bcc" not in eve
    assert eve["Subject"] == "Hello Eve Bcc: victim@example.net"
    assert [a.display_name for a in eve["To"].addresses] == ["Eve Bcc: victim@example.net"]
    assert "Dear Eve\r\nBcc: victim@example.net," in eve.get_body(("plain",)).get_content()
    review = (workspace.root / ".notify" / "incident-42" / "review.csv").read_text()
    assert review.splitlines()[1] == (
        "eve@example.com,line break,line break or tab in name: shown as one space in the "
        "header (the body keeps it),data/affected.csv,3"
    )


def test_a_name_with_a_control_character_stops_the_send(
    workspace, ledger_settings, run_cli, smtp_server
):
    """Promise 4: other control characters stop the check with the row."""
    workspace.smtp(smtp_server, **ledger_settings)
    workspace.rows(
        [
            ["Ann", "ann@example.com", "", "A-1", "1"],
            ["Eve\x1b[2J", "eve@example.com", "", "A-2", "2"],
        ]
    )
    result = run_cli(workspace, "send", "--incident", "42", "--yes")
    assert result.exit_code == 3
    assert result.output.splitlines()[-1] == (
        "Error: 1 problem(s) stop the send; nothing was sent. First: eve@example.com "
        "(data/affected.csv row 3): the name holds the control character U+001B; remove it "
        "from the export"
    )
    assert smtp_server.messages == []


def test_html_in_a_name_is_escaped_in_the_html_part(
    workspace, ledger_settings, run_cli, smtp_server
):
    """Promise 4: personalised fields cannot inject markup."""
    workspace.smtp(smtp_server, **ledger_settings)
    workspace.rows([["<b>Bold</b> <script>x()</script>", "b@example.com", "", "A-1", "1"]])
    assert run_cli(workspace, "send", "--incident", "42", "--yes").exit_code == 0
    message = message_from_bytes(smtp_server.messages[0].data, policy=policy.default)
    html = message.get_body(("html",)).get_content()
    assert "&lt;b&gt;Bold&lt;/b&gt; &lt;script&gt;x()&lt;/script&gt;" in html
    assert "<script>" not in html
    assert "<b>Bold</b>" in message.get_body(("plain",)).get_content()


def test_every_customer_ends_in_the_report_with_a_reason(
    workspace, ledger_settings, run_cli, smtp_server
):
    """Promise 3, after the send: sent, or listed with the reason (invalid, refused,
    suppressed, bounced)."""
    workspace.smtp(smtp_server, **ledger_settings)
    rows = make_rows(5) + [
        ["Typo", "t@gmial.com", "", "A-t", "1"],
        ["Bad", "bad@@example.com", "", "A-b", "1"],
        ["Refused", "fail-550@example.com", "", "A-r", "1"],
    ]
    workspace.rows(rows)
    assert run_cli(workspace, "send", "--incident", "42", "--yes").exit_code == 1
    result = run_cli(workspace, "report", "--incident", "42")
    assert result.exit_code == 0, result.output
    report = list(csv.DictReader(io.StringIO(result.output)))
    assert sorted(int(r["row"]) for r in report) == list(range(2, 2 + len(rows)))
    unreachable = {r["email"]: r for r in report if r["outcome"] == "unreachable"}
    assert set(unreachable) == {"t@gmial.com", "bad@@example.com", "fail-550@example.com"}
    assert all(r["reason"] for r in unreachable.values())
    assert unreachable["t@gmial.com"]["server_said"].startswith("likely typo domain")
    assert [r["outcome"] for r in report].count("delivered") == 5
