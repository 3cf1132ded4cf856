"""Bounces as a real MTA writes them for a message our test SMTP server received.

A Postfix-style RFC 3464 report, sent to the envelope sender of the original (the VERP
address when NOTIFY_RETURN_PATH is set), with the original's headers attached.
"""

from __future__ import annotations

import mailbox
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

from tests.smtp_server import Received


def dsn(
    received: Received,
    *,
    status: str,
    diagnostic: str,
    action: str = "failed",
    name_recipient: bool = True,
) -> bytes:
    """A delivery status notification for `received`, as its relay would return it."""
    recipient = received.rcpt_tos[0]
    original = received.message
    arrived = format_datetime(original["Date"].datetime)
    subject = (
        "Delayed Mail (still being retried)"
        if action == "delayed"
        else "Undelivered Mail Returned to Sender"
    )
    named = recipient if name_recipient else "the recipient"
    final = f"Final-Recipient: rfc822; {recipient}\r\n" if name_recipient else ""
    returned = received.data.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")
    text = (
        f"Return-Path: <>\r\n"
        f"From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r\n"
        f"To: {received.mail_from}\r\n"
        f"Subject: {subject}\r\n"
        f"Date: {arrived}\r\n"
        f"Message-ID: {make_msgid(domain='mx.example.net')}\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="dsn-b"\r\n'
        "\r\n"
        "--dsn-b\r\n"
        "Content-Description: Notification\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        "This is the mail system at host mx.example.net.\r\n\r\n"
        "I'm sorry to have to inform you that your message could not\r\n"
        "be delivered to one or more recipients.\r\n\r\n"
        f"<{named}>: {diagnostic}\r\n\r\n"
        "--dsn-b\r\n"
        "Content-Description: Delivery report\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\n"
        f"Arrival-Date: {arrived}\r\n\r\n"
        f"{final}"
        f"Action: {action}\r\n"
        f"Status: {status}\r\n"
        f"Diagnostic-Code: smtp; {diagnostic}\r\n\r\n"
        "--dsn-b\r\n"
        "Content-Description: Undelivered Message Headers\r\n"
        "Content-Type: text/rfc822-headers\r\n\r\n"
        f"{returned}\r\n\r\n"
        "--dsn-b--\r\n"
    )
    return text.encode("ascii", "replace")


def auto_reply(received: Received) -> bytes:
    """An out-of-office answer to `received`: not a bounce."""
    reply = EmailMessage()
    reply["From"] = received.rcpt_tos[0]
    reply["To"] = received.mail_from
    reply["Subject"] = "Automatic reply: " + str(received.message["Subject"])
    reply["Auto-Submitted"] = "auto-replied"
    reply["Message-ID"] = make_msgid(domain="example.com")
    reply["In-Reply-To"] = str(received.message["Message-ID"])
    reply.set_content("I am out of the office until Monday.\n")
    return reply.as_bytes()


def write_mbox(path: Path, messages: list[bytes]) -> None:
    box = mailbox.mbox(path)
    for raw in messages:
        box.add(raw)
    box.flush()
    box.close()


def write_maildir(path: Path, messages: list[bytes]) -> None:
    box = mailbox.Maildir(path, create=True)
    for raw in messages:
        box.add(raw)
    box.close()
