"""`notify replies`, end to end, and what `status` and `report` then say of the repliers.

An incident is sent to the real SMTP server on loopback; customers answer it, as their
mail clients would, into a Maildir and into a folder of a real IMAP server (Dovecot),
next to an out-of-office answer, a bounce and a stranger's mail.
"""

from __future__ import annotations

import csv
import io
import json
from email.message import EmailMessage
from email.utils import make_msgid

import pytest

from tests.bounce_factory import auto_reply, dsn, write_maildir, write_mbox
from tests.conftest import DEFAULT_MANIFEST

HEADER = ["Customer", "Email Address", "Phone", "order_id", "amount"]
ROWS = [
    ["Ann Lee", "ann@example.com", "+1 555 0100", "A-1", "1.00"],
    ["Bob Roe", "bob@example.com", "+1 555 0101", "A-2", "2.00"],
    ["Cat Poe", "cat@example.com", "+1 555 0102", "A-3", "3.00"],
    ["Dan Fry", "dan@example.com", "+1 555 0103", "A-4", "4.00"],
    ["Eve Orr", "eve@example.com", "+1 555 0104", "A-5", "5.00"],
]


@pytest.fixture
def sent(workspace, run_cli, smtp_server):
    """The incident sent once; returns the received messages by address."""
    workspace.write("incidents/42.toml", DEFAULT_MANIFEST)
    workspace.rows(ROWS, header=HEADER)
    workspace.smtp(smtp_server, return_path="bounces@acme.example")
    result = run_cli(workspace, "send", "--incident", "42", "--yes")
    assert result.exit_code == 0, result.output
    received = {m.rcpt_tos[0]: m for m in smtp_server.messages}
    assert len(received) == 5
    smtp_server.reset()
    return received


def reply(
    original,
    text: str,
    *,
    sender: str | None = None,
    threaded: str = "In-Reply-To",
    html: str | None = None,
    date: str = "Tue, 01 Dec 2026 09:30:00 +0000",
) -> bytes:
    """A customer's answer to `original`, as a mail client writes it."""
    message = EmailMessage()
    message["From"] = sender or original.rcpt_tos[0]
    message["To"] = "help@acme.example"
    message["Subject"] = "Re: " + str(original.message["Subject"])
    message["Date"] = date
    message["Message-ID"] = make_msgid(domain="customer.example")
    if threaded:
        message[threaded] = str(original.message["Message-ID"])
    if html is None:
        message.set_content(text)
    else:
        message.set_content(html, subtype="html")
    return message.as_bytes()


def status(run_cli, workspace) -> dict:
    result = run_cli(workspace, "status", "--incident", "42", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def report_rows(run_cli, workspace) -> list[dict[str, str]]:
    result = run_cli(workspace, "report", "--incident", "42")
    assert result.exit_code == 0, result.output
    return list(csv.DictReader(io.StringIO(result.output)))


def test_replies_from_a_maildir_and_imap_wait_for_an_answer_until_marked(
    workspace, run_cli, smtp_server, sent, imap_account, tmp_path
):
    maildir = tmp_path / "Maildir"
    ann_text = (
        "When will my refund arrive?\n\nThanks,\nAnn\n-- \nAnn Lee, loyal customer\n\n"
        "On Mon, 30 Nov 2026, ACME wrote:\n> Dear Ann, we are sorry.\n"
    )
    write_maildir(
        maildir,
        [
            # From another address of hers: matched by the Message-ID it answers.
            reply(sent["ann@example.com"], ann_text, sender="Ann <ann.lee@work.example>"),
            # No threading headers at all: matched by the sender.
            reply(
                sent["bob@example.com"],
                "",
                threaded="",
                html="<p>Is my card&nbsp;safe?</p><blockquote>Dear Bob</blockquote>",
            ),
            auto_reply(sent["cat@example.com"]),
            dsn(sent["dan@example.com"], status="5.1.1", diagnostic="550 5.1.1 No such user"),
            reply(sent["eve@example.com"], "Who are you?", sender="zed@example.org", threaded=""),
        ],
    )
    imap_account.append(
        reply(sent["cat@example.com"], "Please call me back.", threaded="References"),
        folder="Replies",
    )
    imap = imap_account.settings()
    workspace.smtp(
        smtp_server,
        return_path="bounces@acme.example",
        imap_host=imap.imap_host,
        imap_port=imap.imap_port,
        imap_user=imap.imap_user,
        imap_password="the-bounce-mailbox-password",
        reply_imap_password=imap.imap_password,
        reply_imap_folder="Replies",
    )

    first = run_cli(workspace, "replies", "--incident", "42", "--maildir", str(maildir))
    assert first.exit_code == 0, first.output
    lines = first.output.splitlines()
    assert lines[0] == f"Read 5 message(s) from {maildir}:"
    assert lines[1:8] == [
        "  replies recorded            2",
        "    matched by message id        1",
        "    matched by sender            1",
        "  already recorded            0",
        "  auto-replies                1",
        "  bounces                     1",
        "  unmatched                   1",
    ]
    assert (
        "from zed@example.org, who is no recipient of incident 42; left in the mailbox"
        in (lines[8])
    )
    assert lines[-1] == "Next: notify report --incident 42 lists who waits for an answer"

    over_imap = run_cli(workspace, "replies", "--incident", "42", "--imap")
    assert over_imap.exit_code == 0, over_imap.output
    assert "/Replies:" in over_imap.output.splitlines()[0]
    assert "  replies recorded            1" in over_imap.output.splitlines()

    # Reading both again records nothing new.
    again = run_cli(workspace, "replies", "--incident", "42", "--maildir", str(maildir))
    assert "  replies recorded            0" in again.output.splitlines()
    assert "  already recorded            2" in again.output.splitlines()
    assert "  already recorded            1" in (
        run_cli(workspace, "replies", "--incident", "42", "--imap").output.splitlines()
    )

    assert status(run_cli, workspace)["awaiting_answer"] == 3
    text = run_cli(workspace, "status", "--incident", "42").output.splitlines()
    assert "Replied, waiting for an answer: 3" in text
    assert text[-1].startswith("Next: 3 replied and wait for an answer: notify report")

    rows = report_rows(run_cli, workspace)
    assert [(r["outcome"], r["email"], r["reply"]) for r in rows[:3]] == [
        (
            "replied, waiting for an answer",
            "ann@example.com",
            "When will my refund arrive? Thanks, Ann",
        ),
        ("replied, waiting for an answer", "bob@example.com", "Is my card safe?"),
        ("replied, waiting for an answer", "cat@example.com", "Please call me back."),
    ]
    assert rows[0]["replied_at"] == "2026-12-01 09:30:00 UTC"
    assert rows[0]["export: order_id"] == "A-1"  # the export row, for a call
    assert [r["email"] for r in rows[3:]] == ["dan@example.com", "eve@example.com"]
    assert all(r["reply"] == "" for r in rows[3:])

    answered = run_cli(
        workspace, "replies", "--incident", "42", "--answered", "ann.lee@work.example"
    )
    assert answered.exit_code == 0, answered.output
    assert answered.output.splitlines() == [
        "ann.lee@work.example: 1 of 1 reply(ies) marked answered.",
        "Next: notify status --incident 42",
    ]
    run_cli(workspace, "replies", "--incident", "42", "--answered", "BOB@example.com")
    assert status(run_cli, workspace)["awaiting_answer"] == 1
    rows = report_rows(run_cli, workspace)
    assert [(r["email"], r["outcome"]) for r in rows[:2]] == [
        ("cat@example.com", "replied, waiting for an answer"),
        ("ann@example.com", "delivered"),
    ]


def test_answering_an_address_with_no_reply_is_one_line(workspace, run_cli, sent):
    result = run_cli(workspace, "replies", "--incident", "42", "--answered", "nobody@x.example")
    assert result.exit_code == 3
    assert result.output.splitlines() == [
        "Error: nobody@x.example has no reply recorded for incident 42; check the address, or "
        "read the mailbox first with notify replies --incident 42 --imap"
    ]


def test_move_to_moves_only_the_replies_it_matched(workspace, run_cli, sent, tmp_path):
    maildir = tmp_path / "Maildir"
    write_maildir(
        maildir,
        [
            reply(sent["bob@example.com"], "Thanks, all fine."),
            reply(sent["eve@example.com"], "Who are you?", sender="zed@example.org", threaded=""),
            auto_reply(sent["cat@example.com"]),
        ],
    )
    result = run_cli(
        workspace, "replies", "--incident", "42", "--maildir", str(maildir), "--move-to", "Done"
    )
    assert result.exit_code == 0, result.output
    assert "Moved 1 matched message(s) to Done." in result.output.splitlines()
    moved = [p.read_bytes() for p in (maildir / ".Done" / "new").iterdir()]
    assert len(moved) == 1 and b"Thanks, all fine." in moved[0]
    assert len(list((maildir / "new").iterdir())) == 2


def test_replies_need_exactly_one_mailbox_or_answered_alone(workspace, run_cli, tmp_path):
    none = run_cli(workspace, "replies", "--incident", "42")
    assert none.exit_code == 2
    assert "give exactly one of --mbox FILE, --maildir DIR or --imap" in none.output
    both = run_cli(
        workspace, "replies", "--incident", "42", "--imap", "--answered", "ann@example.com"
    )
    assert both.exit_code == 2
    assert "give --answered ADDRESS alone, without a mailbox" in both.output


def test_replies_before_any_send_is_one_clear_line(workspace, run_cli, tmp_path):
    box = tmp_path / "r.mbox"
    write_mbox(box, [])
    result = run_cli(workspace, "replies", "--incident", "42", "--mbox", str(box))
    assert result.exit_code == 3
    assert result.output.strip() == (
        "Error: nothing has been sent for incident 42 from this workspace, so no reply can be"
        " matched; run notify send --incident 42 first"
    )
