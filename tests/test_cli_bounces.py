"""`notify bounces`, `resend`, `report`, `schedule`, `suppressions`, end to end.

An incident is sent to the real SMTP server on loopback with VERP return paths; bounces
for some of the messages are written as a relay would into a Maildir, an mbox and a real
IMAP server (Dovecot); then re-sends are run at later (rehearsed) times.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from tests.bounce_factory import auto_reply, dsn, write_maildir, write_mbox
from tests.conftest import DEFAULT_MANIFEST, notify_env

HEADER = ["Customer", "Email Address", "Phone", "Alt Email", "order_id", "amount"]
ROWS = [
    ["Ann Lee", "ann@example.com", "+1 555 0100", "ann.home@example.org", "A-1", "1.00"],
    ["Bob Roe", "bob@example.com", "+1 555 0101", "", "A-2", "2.00"],
    ["Cat Poe", "cat@example.com", "+1 555 0102", "", "A-3", "3.00"],
    ["Dan Fry", "dan@example.com", "+1 555 0103", "", "A-4", "4.00"],
    ["Eve Orr", "eve@example.com", "+1 555 0104", "", "A-5", "5.00"],
    ["Fay Kim", "fay@example.com", "+1 555 0105", "", "A-6", "6.00"],
    ["Gus Ng", "gus@example.com", "+1 555 0106", "", "A-7", "7.00"],
]
MANIFEST = DEFAULT_MANIFEST.replace('phone = "Phone"', 'phone = "Phone"\nalt_email = "Alt Email"')


def at(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


@pytest.fixture
def sent(workspace, run_cli, smtp_server):
    """The incident sent once, with VERP; returns the received messages by address."""
    workspace.write("incidents/42.toml", MANIFEST)
    workspace.rows(ROWS, header=HEADER)
    workspace.smtp(smtp_server, return_path="bounces@acme.example", resend_schedule="1h,4h")
    result = run_cli(workspace, "send", "--incident", "42", "--yes")
    assert result.exit_code == 0, result.output
    received = {m.rcpt_tos[0]: m for m in smtp_server.messages}
    assert len(received) == 7
    assert received["ann@example.com"].mail_from.startswith("bounces+")
    smtp_server.reset()
    return received


def states(run_cli, workspace) -> dict[str, int]:
    result = run_cli(workspace, "status", "--incident", "42", "--json")
    assert result.exit_code == 0, result.output
    import json

    return {k: v for k, v in json.loads(result.output)["counts"].items() if v}


def test_bounces_from_every_mailbox_kind_then_resends_on_the_schedule(
    workspace, run_cli, smtp_server, sent, imap_account, tmp_path
):
    now = datetime.now(UTC)
    maildir, mbox = tmp_path / "Maildir", tmp_path / "bounces.mbox"
    write_maildir(
        maildir,
        [
            dsn(sent["ann@example.com"], status="5.1.1", diagnostic="550 5.1.1 No such user"),
            dsn(sent["bob@example.com"], status="5.1.1", diagnostic="550 5.1.1 User unknown"),
        ],
    )
    write_mbox(
        mbox,
        [
            dsn(sent["cat@example.com"], status="4.2.2", diagnostic="452 4.2.2 Mailbox full"),
            dsn(sent["dan@example.com"], status="5.7.1", diagnostic="550 5.7.1 Spam refused"),
        ],
    )
    imap_account.append(
        dsn(sent["eve@example.com"], status="4.4.1", diagnostic="timed out", action="delayed")
    )
    imap_account.append(auto_reply(sent["fay@example.com"]))
    gus = sent["gus@example.com"]
    gus_token = gus.mail_from.split("+")[1].split("@")[0].encode()
    stranger = dataclasses.replace(  # a bounce of a message this ledger never sent
        gus,
        mail_from="bounces+0123456789abcdef01234567@acme.example",
        rcpt_tos=["zed@example.com"],
        data=gus.data.replace(b"gus@", b"zed@").replace(gus_token, b"0123456789abcdef01234567"),
    )
    imap_account.append(dsn(stranger, status="5.1.1", diagnostic="550 5.1.1 unknown"))
    imap_env = imap_account.settings()
    workspace.smtp(
        smtp_server,
        return_path="bounces@acme.example",
        resend_schedule="1h,4h",
        imap_host=imap_env.imap_host,
        imap_port=imap_env.imap_port,
        imap_user=imap_env.imap_user,
        imap_password=imap_env.imap_password,
    )

    first = run_cli(workspace, "bounces", "--incident", "42", "--maildir", str(maildir))
    assert first.exit_code == 0, first.output
    assert "    hard                      2" in first.output.splitlines()
    assert "Recipients now alternate: 1" in first.output
    assert "Recipients now hard-bounced: 1" in first.output
    second = run_cli(
        workspace, "bounces", "--incident", "42", "--mbox", str(mbox), "--now", at(now)
    )
    assert second.exit_code == 0, second.output
    assert "Recipients now soft-bounced: 1" in second.output
    assert "Recipients now blocked: 1" in second.output
    third = run_cli(workspace, "bounces", "--incident", "42", "--imap")
    assert third.exit_code == 0, third.output
    lines = third.output.splitlines()
    assert "    delayed                   1" in lines
    assert "  auto-replies                1" in lines
    assert "  unmatched                   1" in lines
    assert any("names zed@example.com, which is no recipient" in line for line in lines)
    assert imap_account.flags() and all("\\Seen" not in f for f in imap_account.flags().values())

    # Reading every mailbox again changes nothing.
    before = states(run_cli, workspace)
    again = run_cli(workspace, "bounces", "--incident", "42", "--maildir", str(maildir))
    assert "  already recorded            2" in again.output.splitlines()
    run_cli(workspace, "bounces", "--incident", "42", "--mbox", str(mbox))
    assert (
        states(run_cli, workspace)
        == before
        == {
            "accepted": 3,
            "alternate": 1,
            "hard-bounced": 1,
            "soft-bounced": 1,
            "blocked": 1,
        }
    )

    # Half an hour later: only the alternate address is due.
    early = run_cli(
        workspace, "resend", "--incident", "42", "--now", at(now + timedelta(minutes=30))
    )
    assert early.exit_code == 1, early.output  # the soft bounce and the hard one wait
    assert "recipient(s) not delivered (" in early.output
    assert [m.rcpt_tos for m in smtp_server.messages] == [["ann.home@example.org"]]
    assert "Ann Lee" in smtp_server.messages[0].message.get_body(("plain",)).get_content()
    # After the first step: the soft bounce once, and only once however often cron runs.
    for minutes in (61, 62, 90):
        run_cli(
            workspace, "resend", "--incident", "42", "--now", at(now + timedelta(minutes=minutes))
        )
    assert [m.rcpt_tos[0] for m in smtp_server.messages] == [
        "ann.home@example.org",
        "cat@example.com",
    ]
    # It bounces softly again: the next step is 4 hours after that bounce.
    resent = smtp_server.messages[1]
    second_bounce_at = now + timedelta(minutes=95)
    write_mbox(mbox, [dsn(resent, status="4.2.2", diagnostic="452 4.2.2 Mailbox full again")])
    bounced = run_cli(
        workspace, "bounces", "--incident", "42", "--mbox", str(mbox), "--now", at(second_bounce_at)
    )
    assert "Recipients now soft-bounced: 1" in bounced.output
    run_cli(
        workspace, "resend", "--incident", "42", "--now", at(second_bounce_at + timedelta(hours=3))
    )
    assert len(smtp_server.messages) == 2
    run_cli(
        workspace,
        "resend",
        "--incident",
        "42",
        "--now",
        at(second_bounce_at + timedelta(hours=4, minutes=1)),
    )
    assert [m.rcpt_tos[0] for m in smtp_server.messages][2:] == ["cat@example.com"]
    # Blocked and hard-bounced addresses were never re-sent to.
    assert not {"bob@example.com", "dan@example.com"} & {
        m.rcpt_tos[0] for m in smtp_server.messages
    }

    report = run_cli(workspace, "report", "--incident", "42")
    assert report.exit_code == 0, report.output
    rows = list(csv.DictReader(io.StringIO(report.output)))
    assert (rows[0]["outcome"], rows[0]["email"], rows[0]["export: Phone"]) == (
        "unreachable",
        "bob@example.com",
        "'+1 555 0101",  # quoted, or a spreadsheet reads it as a formula
    )
    assert (rows[0]["state"], rows[0]["phone"], rows[0]["reason"]) == (
        "hard-bounced",
        "'+1 555 0101",
        "no such mailbox",
    )
    assert len(rows) == len({row["email"] for row in rows})  # one row per customer
    by_email = {row["email"]: row for row in rows}
    assert by_email["ann@example.com"]["sent_to"] == "ann.home@example.org"
    assert by_email["ann@example.com"]["outcome"] == "delivered"
    assert by_email["dan@example.com"]["state"] == "blocked"


def test_a_hard_bounce_suppresses_the_address_for_later_incidents(
    workspace, run_cli, smtp_server, sent, tmp_path
):
    maildir = tmp_path / "Maildir"
    write_maildir(maildir, [dsn(sent["bob@example.com"], status="5.1.1", diagnostic="550 5.1.1")])
    assert (
        run_cli(workspace, "bounces", "--incident", "42", "--maildir", str(maildir)).exit_code == 0
    )
    workspace.write("incidents/43.toml", MANIFEST.replace("Duplicate charge", "Late refund"))
    check = run_cli(workspace, "check", "--incident", "43")
    assert "  suppressed                  1" in check.output.splitlines()
    send = run_cli(workspace, "send", "--incident", "43", "--yes")
    assert send.exit_code == 0, send.output
    assert "bob@example.com" not in {m.rcpt_tos[0] for m in smtp_server.messages}
    assert len(smtp_server.messages) == 6
    listed = run_cli(workspace, "suppressions", "list")
    assert listed.output.startswith("bob@example.com  ")
    assert "hard bounce: 5.1.1" in listed.output
    lifted = run_cli(workspace, "suppressions", "lift", "BOB@example.com")
    assert lifted.output.strip() == "BOB@example.com: lifted"
    smtp_server.reset()
    assert run_cli(workspace, "send", "--incident", "43", "--yes").exit_code == 0
    assert [m.rcpt_tos[0] for m in smtp_server.messages] == ["bob@example.com"]


def test_a_refusal_during_the_send_goes_to_the_alternate_address(workspace, run_cli, smtp_server):
    workspace.write("incidents/42.toml", MANIFEST)
    rows = [["Ann Lee", "fail-550@example.com", "+1 555 0100", "ann@example.org", "A-1", "1"]]
    workspace.rows(rows, header=HEADER)
    workspace.smtp(smtp_server)
    sent = run_cli(workspace, "send", "--incident", "42", "--yes")
    assert sent.exit_code == 1
    assert "row 2: fail-550@example.com: alternate 5.1.1" in sent.output
    assert (
        "1 refused for good have an alternate address: notify resend --incident 42 sends to it"
        in sent.output
    )
    smtp_server.reset()
    result = run_cli(workspace, "resend", "--incident", "42")
    assert result.exit_code in (0, 1), result.output
    assert [m.rcpt_tos[0] for m in smtp_server.messages] == ["ann@example.org"]
    listed = run_cli(workspace, "suppressions", "list")
    assert listed.output.startswith("fail-550@example.com  ")


def test_two_resends_started_together_send_each_due_message_once(
    workspace, smtp_server, tmp_path, clean_environ, ledger_settings
):
    workspace.write("incidents/42.toml", MANIFEST)
    addresses = [f"c{n}@example.com" for n in range(60)]
    workspace.rows(
        [[f"C {n}", a, "", "", f"A-{n}", "1"] for n, a in enumerate(addresses)], header=HEADER
    )
    workspace.smtp(
        smtp_server, return_path="bounces@acme.example", resend_schedule="1h", **ledger_settings
    )
    env = notify_env()
    command = [sys.executable, "-m", "notify"]
    where = ["--incident", "42", "--workspace", str(workspace.root)]
    subprocess.run([*command, "send", *where, "--yes"], env=env, check=True, capture_output=True)
    box = tmp_path / "bounces.mbox"
    write_mbox(box, [dsn(m, status="4.2.2", diagnostic="452 full") for m in smtp_server.messages])
    subprocess.run([*command, "bounces", *where, "--mbox", str(box)], env=env, check=True)
    smtp_server.reset()
    later = at(datetime.now(UTC) + timedelta(hours=2))
    both = [
        subprocess.Popen(
            [*command, "resend", *where, "--now", later],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=120) for process in both]
    assert [process.returncode for process in both] == [0, 0], outputs
    received = sorted(m.rcpt_tos[0] for m in smtp_server.messages)
    assert received == sorted(addresses), outputs


def test_schedule_prints_a_crontab_line_and_systemd_units(workspace, run_cli):
    workspace.env(resend_schedule="30m,2h")
    result = run_cli(workspace, "schedule", "--incident", "42")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "# Re-send schedule: 30m, 2h (2 re-sends over 150m)"
    assert lines[2].startswith("*/10 * * * * ")
    assert f"resend --incident 42 --workspace {workspace.root.resolve()}" in lines[2]
    assert "# /etc/systemd/system/notify-resend-42.timer" in lines
    assert "OnUnitActiveSec=10min" in lines


def test_bounces_need_exactly_one_mailbox(workspace, run_cli):
    result = run_cli(workspace, "bounces", "--incident", "42")
    assert result.exit_code == 2
    assert "give exactly one of --mbox FILE, --maildir DIR or --imap" in result.output


def test_bounces_before_any_send_is_one_clear_line(workspace, run_cli, tmp_path):
    box = tmp_path / "b.mbox"
    write_mbox(box, [])
    result = run_cli(workspace, "bounces", "--incident", "42", "--mbox", str(box))
    assert result.exit_code == 3
    assert result.output.strip() == (
        "Error: nothing has been sent for incident 42 from this workspace, so no bounce can be"
        " matched; run notify send --incident 42 first"
    )


def test_a_corrupt_mbox_is_one_line_and_records_nothing(workspace, run_cli, sent, tmp_path):
    box = tmp_path / "broken.mbox"
    box.write_bytes(b"\x00\x01 this is not mail\n")
    result = run_cli(workspace, "bounces", "--incident", "42", "--mbox", str(box))
    assert result.exit_code == 3
    assert result.output.startswith("Error: ")
    assert len(result.output.strip().splitlines()) == 1
    assert "not an mbox" in result.output
    assert states(run_cli, workspace) == {"accepted": 7}


def test_an_imap_login_failure_is_one_line(workspace, run_cli, sent, imap_account):
    settings = imap_account.settings()
    workspace.env(
        imap_host=settings.imap_host,
        imap_port=settings.imap_port,
        imap_user=settings.imap_user,
        imap_password="wrong",
    )
    result = run_cli(workspace, "bounces", "--incident", "42", "--imap")
    assert result.exit_code == 3
    assert len(result.output.strip().splitlines()) == 1
    assert "NOTIFY_IMAP_PASSWORD" in result.output
    assert "wrong" not in result.output


def test_move_to_moves_only_the_bounces_it_matched(workspace, run_cli, sent, tmp_path):
    maildir = tmp_path / "Maildir"
    stray = dataclasses.replace(
        sent["gus@example.com"],
        mail_from="bounces+0123456789abcdef01234567@acme.example",
        rcpt_tos=["zed@example.com"],
        data=(
            b"Date: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <x@elsewhere.example>\r\n"
            b"Subject: hi\r\n\r\nhello\r\n"
        ),
    )
    write_maildir(
        maildir,
        [
            dsn(sent["bob@example.com"], status="5.1.1", diagnostic="550 5.1.1 unknown"),
            dsn(stray, status="5.1.1", diagnostic="550 5.1.1 unknown"),
        ],
    )
    result = run_cli(
        workspace, "bounces", "--incident", "42", "--maildir", str(maildir), "--move-to", "Done"
    )
    assert result.exit_code == 0, result.output
    assert "Moved 1 matched message(s) to Done." in result.output
    left = [p.read_bytes() for p in (maildir / "new").iterdir()]
    moved = [p.read_bytes() for p in (maildir / ".Done" / "new").iterdir()]
    assert len(left) == 1 and b"zed@example.com" in left[0]
    assert len(moved) == 1 and b"bob@example.com" in moved[0]


def test_without_verp_a_bounce_is_matched_by_the_message_id_it_returns(
    workspace, run_cli, smtp_server, tmp_path
):
    workspace.write("incidents/42.toml", MANIFEST)
    workspace.rows(ROWS[:2], header=HEADER)
    workspace.smtp(smtp_server)  # no NOTIFY_RETURN_PATH: the relay may refuse one
    assert run_cli(workspace, "send", "--incident", "42", "--yes").exit_code == 0
    bob = next(m for m in smtp_server.messages if m.rcpt_tos == ["bob@example.com"])
    assert bob.mail_from == "support@acme.example"
    mbox = tmp_path / "b.mbox"
    write_mbox(mbox, [dsn(bob, status="5.1.1", diagnostic="550 5.1.1 gone", name_recipient=False)])
    result = run_cli(workspace, "bounces", "--incident", "42", "--mbox", str(mbox))
    assert result.exit_code == 0, result.output
    assert "Recipients now hard-bounced: 1" in result.output
    assert states(run_cli, workspace) == {"accepted": 1, "hard-bounced": 1}


def test_the_report_shows_a_typo_domain_sent_anyway_as_delivered(workspace, run_cli, smtp_server):
    workspace.write("incidents/42.toml", MANIFEST)
    rows = [
        ["Mary Major", "mary@gmial.com", "+1 555 0109", "", "A-1", "1"],
        ["Mary Major", "MARY@gmial.com", "+1 555 0109", "", "A-2", "2"],
        ["Ann Lee", "ann@example.com", "", "", "A-3", "3"],
    ]
    workspace.rows(rows, header=HEADER)
    workspace.smtp(smtp_server)
    sent = run_cli(workspace, "send", "--incident", "42", "--yes", "--allow-typo-domains")
    assert sent.exit_code == 0, sent.output
    report = run_cli(workspace, "report", "--incident", "42")
    records = list(csv.DictReader(io.StringIO(report.output)))
    assert [(r["email"], r["state"], r["row"], r["items"]) for r in records] == [
        ("mary@gmial.com", "accepted", "2", "1"),
        ("ann@example.com", "accepted", "4", "1"),
    ]
    assert records[0]["export: Phone"] == "'+1 555 0109"  # not a formula in a spreadsheet
