"""Reading a customer's reply: its first words, its fingerprint, the mailbox it is read from."""

from __future__ import annotations

from pathlib import Path

import pytest

from notify.errors import SettingsError
from notify.inbox import excerpt, read_reply, reply_mailbox
from notify.settings import Security, Settings, load_settings
from notify.workspace import Workspace

RAW = (
    b"From: Ann Lee <Ann@Example.com>\r\n"
    b"Subject: Re: We are sorry\r\n"
    b"Date: Tue, 01 Dec 2026 10:30:00 +0100\r\n"
    b"In-Reply-To: <0123456789abcdef01234567.42@acme.example>\r\n"
    b"References: <aaaaaaaaaaaaaaaaaaaaaaaa.41@acme.example> <x@elsewhere.example>\r\n"
    b"\r\n"
    b"Where is my order?\r\n"
)


def test_a_reply_names_its_sender_date_and_our_tokens_nearest_first():
    reply = read_reply(RAW)
    assert reply.sender == "ann@example.com"
    assert reply.subject == "Re: We are sorry"
    assert reply.date is not None and reply.date.isoformat() == "2026-12-01T09:30:00+00:00"
    assert reply.tokens == ("0123456789abcdef01234567", "aaaaaaaaaaaaaaaaaaaaaaaa")
    assert reply.excerpt == "Where is my order?"


def test_without_a_message_id_the_same_bytes_give_the_same_fingerprint():
    assert read_reply(RAW).fingerprint == read_reply(RAW.replace(b"\r\n", b"\n")).fingerprint
    assert read_reply(RAW).fingerprint != read_reply(RAW + b"More.\r\n").fingerprint
    with_id = b"Message-ID: <m1@customer.example>\r\n" + RAW
    assert read_reply(with_id).fingerprint == read_reply(with_id + b"\r\nfooter").fingerprint


def test_the_excerpt_cuts_quotes_attribution_and_signature_and_is_bounded():
    text = "Hi,\n\n  where   is it?\nOn Mon, 30 Nov 2026 ACME wrote:\n> sorry\n-- \nAnn\n"
    assert excerpt(text) == "Hi, where is it?"
    assert len(excerpt("word " * 200)) == 300
    assert excerpt("word " * 200).endswith("…")


def test_a_broken_date_reads_as_none_and_an_empty_body_as_no_text():
    reply = read_reply(b"From: bob@example.com\r\nDate: yesterday-ish\r\n\r\n")
    assert reply.date is None
    assert reply.excerpt == ""


def test_each_reply_mailbox_setting_replaces_its_bounce_mailbox_one():
    bounce = Settings(imap_host="imap.acme.example", imap_user="bounces", imap_password="b")
    assert reply_mailbox(bounce).imap_user == "bounces"  # nothing set: the bounce mailbox
    settings = Settings(
        imap_host="imap.acme.example",
        imap_port=1993,
        imap_user="bounces",
        imap_password="b",
        reply_imap_user="help",
        reply_imap_password="h",
        reply_imap_security="starttls",
        reply_imap_folder="Replies",
    )
    mailbox = reply_mailbox(settings)
    assert (mailbox.imap_host, mailbox.imap_user, mailbox.imap_password) == (
        "imap.acme.example",
        "help",
        "h",
    )
    assert (mailbox.imap_security, mailbox.imap_port, mailbox.imap_folder) == (
        Security.STARTTLS,
        143,
        "Replies",
    )
    assert "'h'" not in repr(settings)


def test_a_bad_reply_mailbox_security_is_one_line(tmp_path: Path):
    with pytest.raises(SettingsError) as raised:
        load_settings(Workspace(tmp_path), {"NOTIFY_REPLY_IMAP_SECURITY": "ssl"})
    assert str(raised.value) == (
        "NOTIFY_REPLY_IMAP_SECURITY='ssl' is not one of tls, starttls, none; fix it in .env"
    )
