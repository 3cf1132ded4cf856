"""The bounce parser against one real-shaped message per MTA, and against garbage."""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notify.bounces import recipients as named
from notify.bounces import text as bounce_text
from notify.bounces.dsn import address_field, preferred_status, text_blocks
from notify.bounces.parse import (
    Bounce,
    FailedRecipient,
    _parse,
    parse_bounce,
    verp_token,
)
from notify.models import BounceKind
from notify.replies import classify

CORPUS = Path(__file__).parent / "bounces"
RETURN_PATH = "bounces@example.com"
HARD, SOFT, SENDER = BounceKind.HARD, BounceKind.SOFT, BounceKind.SENDER
DELAYED, AUTO_REPLY = BounceKind.DELAYED, BounceKind.AUTO_REPLY

# file -> (overall kind, [(address, status, kind)], VERP token, returned Message-ID)
EXPECTED = {
    "postfix-dsn-user-unknown": (
        HARD,
        [("nobody@example.org", "5.1.1", HARD)],
        "c8bd2cb2e7eebf7108cafca8",
        "<c8bd2cb2e7eebf7108cafca8.42@acme.example>",
    ),
    "postfix-dsn-mailbox-full": (
        SOFT,
        [("full.box@example.org", "5.2.2", SOFT)],
        "a15f9d1ed0e3fa52816375ed",
        "<a15f9d1ed0e3fa52816375ed.42@acme.example>",
    ),
    "postfix-delayed": (
        DELAYED,
        [("slow@example.net", "4.4.1", DELAYED)],
        "3a55cabe9011674191a6cc26",
        "<3a55cabe9011674191a6cc26.42@acme.example>",
    ),
    "exim-text": (
        HARD,
        [("gone@example.org", "5.1.1", HARD)],
        "df7c022e3f607423cae7f784",
        "<df7c022e3f607423cae7f784.42@acme.example>",
    ),
    "qmail-text": (
        HARD,
        [("nouser@example.net", None, HARD)],
        "3907658277745aa140c28906",
        "<3907658277745aa140c28906.42@acme.example>",
    ),
    "exchange-ndr": (
        HARD,
        [("someone@corp.example", "5.1.10", HARD)],
        "46b0a851843dea9b545f14a7",
        "<46b0a851843dea9b545f14a7.42@acme.example>",
    ),
    "exchange-text-only": (
        HARD,
        [("pat@corp.example", "5.1.1", HARD)],
        "046aa6ae5a1bd6009812179d",
        "<046aa6ae5a1bd6009812179d.42@acme.example>",
    ),
    "gmail-nonexistent": (
        HARD,
        [("no.such.person@example.org", "5.1.1", HARD)],
        "886d35a5489e386328dbdf77",
        "<886d35a5489e386328dbdf77.42@acme.example>",
    ),
    "yahoo-text": (
        SOFT,
        [("fullbox@example.net", None, SOFT)],
        "6c559da48289cc433a5432b6",
        "<6c559da48289cc433a5432b6.42@acme.example>",
    ),
    "global-dsn-utf8-recipient": (
        HARD,
        [("jürgen@example.org", "5.1.1", HARD)],
        "a563ad97e627be294957b5f5",
        "<a563ad97e627be294957b5f5.42@acme.example>",
    ),
    "policy-block": (
        SENDER,
        [("ann@example.org", "5.7.1", SENDER)],
        "803281cf207c8f3e674c69a8",
        "<803281cf207c8f3e674c69a8.42@acme.example>",
    ),
    "rate-limited": (
        SENDER,
        [("bob@example.net", "4.7.28", SENDER)],
        "ee3b301f45eac0d8d36376ea",
        "<ee3b301f45eac0d8d36376ea.42@acme.example>",
    ),
    "auto-reply-out-of-office": (
        AUTO_REPLY,
        [("carol@example.org", None, AUTO_REPLY)],
        "d3bf1d6dee837b61809a67d2",
        "<d3bf1d6dee837b61809a67d2.42@acme.example>",
    ),
    "vacation-x-autoreply": (
        AUTO_REPLY,
        [("dieter@example.org", None, AUTO_REPLY)],
        "32e4b298bcc1d03386b3ccbf",
        "<32e4b298bcc1d03386b3ccbf.42@acme.example>",
    ),
    "auto-reply-french": (
        AUTO_REPLY,
        [("elodie@example.net", None, AUTO_REPLY)],
        "fc4b0f76308f959503ffc14c",
        "<fc4b0f76308f959503ffc14c.42@acme.example>",
    ),
    "verp-no-address": (HARD, [(None, "5.1.1", HARD)], "4c6c991cdfb6a090b83207e0", None),
}

# One short message per family of real-world shapes the parser once got wrong, written
# for these tests: file -> (overall kind, [(address, status, kind, reason)]).
FAMILIES = {
    # DragonFly: the address in a sentence, a multi-line '550-' reply, 'Message headers follow'
    "dragonfly-dmarc": (SENDER, [("ann.lee@example.org", "5.7.26", SENDER, "authfailure")]),
    # Exchange 2003: 'a@b on <date>' lines, the reason on the next line, no code
    "exchange2003-unknown": (
        HARD,
        [
            ("pat@corp.example.org", None, HARD, "userunknown"),
            ("sam@corp.example.org", None, HARD, "userunknown"),
        ],
    ),
    # sendmail V5: replies naming the address, a refusal of MAIL FROM in the transcript
    "sendmail-v5-transcript": (
        HARD,
        [
            ("ann@example.com", None, SENDER, "syntaxerror"),
            ("bob@example.org", None, HARD, "hostunknown"),
            ("cy@example.edu", None, HARD, "userunknown"),
        ],
    ),
    # IMail: 'Unknown user: a@b' and nothing after it
    "imail-unknown-user": (HARD, [("dana@example.org", None, HARD, "userunknown")]),
    # Zoho: 'a@b Invalid Address, ERROR_CODE :550, ...' per recipient, headers pasted below
    "zoho-two-recipients": (
        HARD,
        [
            ("eve@example.org", "5.1.1", HARD, "userunknown"),
            ("finn@example.org", "5.2.2", SOFT, "mailboxfull"),
        ],
    ),
    # Gmail '(Delay)' and Exim 'delayed 24 hours': still trying, no action
    "gmail-delay": (DELAYED, [("gus@example.org", None, DELAYED, "expired")]),
    "exim-delayed": (DELAYED, [("hal@example.org", "4.2.2", DELAYED, "mailboxfull")]),
    # GMX: '"a@b":' and a reply with only an enhanced code
    "gmx-mailbox-full": (SOFT, [("ivy@example.org", "5.2.2", SOFT, "mailboxfull")]),
    # TrendMicro-like gateway: its notice says nothing; the MTA's report inside it does
    "gateway-forwards-report": (HARD, [("jo@example.org", "5.1.1", HARD, "userunknown")]),
    # MIME: a declared boundary that never appears, groups without blank lines, base64
    "postfix-lost-boundary": (HARD, [("kim@example.org", "5.1.1", HARD, "userunknown")]),
    "dsn-groups-no-blank-line": (
        HARD,
        [
            ("lou@example.com", "5.0.0", SENDER, "rejected"),
            ("max@example.net", "4.0.0", DELAYED, "networkerror"),
            ("ned@example.org", "5.0.0", HARD, "userunknown"),
        ],
    ),
    "global-dsn-base64": (HARD, [("ólafur@example.org", "5.1.1", HARD, "userunknown")]),
    # SendGrid: 'Action: expired' is a failure
    "sendgrid-expired": (SOFT, [("oscar@example.org", None, SOFT, "networkerror")]),
    # 'From: MAILER-DAEMON' without a domain, Auto-Submitted: a bounce, not an out-of-office
    "mailer-daemon-no-domain": (HARD, [("pia@example.org", "5.1.1", HARD, "userunknown")]),
    # Exim pipe delivery: the address that led to the program, never the program
    "exim-pipe": (SOFT, [("quinn@example.com", "5.0.0", SOFT, "mailererror")]),
    # Amazon SES JSON notification
    "ses-notification": (HARD, [("rae@example.org", "5.1.1", HARD, "userunknown")]),
    # OpenSMTPD: 'a@b: 550 5.7.25 ...' while the report says only 5.0.0
    "opensmtpd-rdns": (SENDER, [("sky@example.org", "5.7.25", SENDER, "requireptr")]),
    # 'User unknown' after DATA: filtered; at NTT docomo, its user's filter refusing us
    "docomo-after-data": (SENDER, [("tomo@docomo.ne.jp", None, SENDER, "rejected")]),
    "filtered-after-data": (HARD, [("uma@example.org", None, HARD, "filtered")]),
    # No address in the words: the returned message's only To
    "text-only-original-to": (
        HARD,
        [("5550100@mms.example.net", None, HARD, "userunknown")],
    ),
    # Postfix session transcript: RCPT TO names the recipient
    "postfix-transcript": (SOFT, [("val@example.org", "4.3.0", SOFT, "systemerror")]),
}

# The remote server's words, as the ledger will show them.
DIAGNOSTICS = {
    "postfix-dsn-user-unknown": "550 5.1.1 <nobody@example.org>: Recipient address rejected: "
    "User unknown in virtual mailbox table",
    "postfix-delayed": "connect to mx.example.net[192.0.2.60]:25: Connection timed out",
    "qmail-text": "550 No such user here",
    "exchange-text-only": "550 5.1.1 RESOLVER.ADR.RecipNotFound; not found",
    "yahoo-text": "552 1 Requested mail action aborted, mailbox full [RCPT_TO]",
    "verp-no-address": "550 5.1.1 Mailbox does not exist",
    "vacation-x-autoreply": "Abwesenheitsnotiz: Duplicate charge on March renewals",
    "auto-reply-french": "Réponse automatique : Duplicate charge on March renewals",
    "dragonfly-dmarc": "550-5.7.26 Unauthenticated email from acme.example is not accepted due"
    " to the domain's DMARC policy. Please contact the administrator of acme.example if this"
    " was a legitimate mail.",
    "imail-unknown-user": "Unknown user",
    "dsn-groups-no-blank-line": "550 Sender address rejected: not a registered sender",
    "sendmail-v5-transcript": "554 <ann@example.com>... Remote protocol error",
    "exchange2003-unknown": "The recipient name is not recognized",
}


def raw(name: str) -> bytes:
    return (CORPUS / f"{name}.eml").read_bytes()


def parsed(data: bytes) -> Bounce:
    bounce = parse_bounce(data, return_path=RETURN_PATH)
    assert bounce is not None
    return bounce


def test_every_corpus_file_has_an_expectation() -> None:
    names = {path.stem for path in CORPUS.glob("*.eml")}
    assert names == set(EXPECTED) | set(FAMILIES) | {"human-reply"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus(name: str) -> None:
    kind, recipients, token, original_id = EXPECTED[name]
    bounce = parsed(raw(name))
    assert bounce.kind == kind
    assert [(r.address, r.status, r.kind) for r in bounce.recipients] == recipients
    assert bounce.verp_tokens == [token]
    assert bounce.original_message_ids == ([original_id] if original_id else [])
    no_id = name == "qmail-text"  # qmail-send writes no Message-ID of its own
    assert bounce.message_id is None if no_id else (bounce.message_id or "").startswith("<")


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family(name: str) -> None:
    kind, recipients = FAMILIES[name]
    bounce = parsed(raw(name))
    assert bounce.kind == kind
    assert [(r.address, r.status, r.kind, r.reason) for r in bounce.recipients] == recipients


@pytest.mark.parametrize("name", sorted(DIAGNOSTICS))
def test_diagnostic_is_the_servers_words_on_one_line(name: str) -> None:
    assert [r.diagnostic for r in parsed(raw(name)).recipients][:1] == [DIAGNOSTICS[name]]


def test_a_customers_reply_is_not_a_bounce() -> None:
    assert parse_bounce(raw("human-reply"), return_path=RETURN_PATH) is None


def test_a_customer_quoting_a_bounce_is_not_a_bounce() -> None:
    quoted = b"".join(
        b"> " + line + b"\n" for line in raw("exchange-text-only").splitlines()[16:30]
    )
    data = (
        b"From: Pat Doe <pat.doe@example.net>\nTo: help@acme.example\n"
        b"Subject: Re: Undeliverable: Duplicate charge on March renewals\n"
        b"Message-ID: <reply.1@example.net>\n\nMy work address bounced, see below.\n\n"
    )
    assert b"> Delivery has failed to these recipients" in quoted
    assert parse_bounce(data + quoted, return_path=RETURN_PATH) is None


def test_a_huge_list_of_recipients_is_cut() -> None:
    lines = b"".join(b"<user%d@example.org>:\n550 5.1.1 no such user\n\n" % i for i in range(5000))
    data = b"From: MAILER-DAEMON@mail.example.net\nSubject: failure notice\n\n" + lines
    bounce = parsed(data)
    assert len(bounce.recipients) == 100
    assert bounce.recipients[0] == FailedRecipient(
        "user0@example.org", "5.1.1", HARD, "550 5.1.1 no such user", "userunknown"
    )


def test_an_html_only_bounce_is_read_as_lines() -> None:
    data = (
        b"From: postmaster@corp.example\nSubject: Undeliverable: Duplicate charge\n"
        b"Content-Type: text/html; charset=utf-8\n\n<html><body><p>Delivery has failed to these"
        b" recipients or groups:</p><p>&lt;pat@corp.example&gt;:<br>Remote Server returned"
        b" &#39;550 5.1.1 RESOLVER.ADR.RecipNotFound; not found&#39;</p></body></html>\n"
    )
    assert parsed(data).recipients == [
        FailedRecipient(
            "pat@corp.example",
            "5.1.1",
            HARD,
            "550 5.1.1 RESOLVER.ADR.RecipNotFound; not found",
            "userunknown",
        )
    ]


def test_an_auto_generated_notice_from_the_mailer_daemon_is_still_a_bounce() -> None:
    data = raw("verp-no-address").replace(
        b"Content-Type:", b"Auto-Submitted: auto-generated\nContent-Type:", 1
    )
    assert parsed(data).kind == HARD


def test_a_generic_status_takes_the_servers_specific_code() -> None:
    data = raw("postfix-dsn-user-unknown").replace(b"Status: 5.1.1", b"Status: 5.0.0")
    assert [(r.status, r.kind) for r in parsed(data).recipients] == [("5.1.1", HARD)]


def test_a_success_only_report_is_not_a_bounce() -> None:
    data = raw("postfix-dsn-user-unknown").replace(b"Action: failed", b"Action: relayed")
    assert parse_bounce(data, return_path=RETURN_PATH) is None


def test_failed_and_delayed_recipients_in_one_report() -> None:
    block = (
        b"Final-Recipient: rfc822; later@example.org\nAction: delayed\nStatus: 4.2.0\n\n"
        b"Final-Recipient: rfc822; nobody@example.org\n"
    )
    data = raw("postfix-dsn-user-unknown").replace(
        b"Final-Recipient: rfc822; nobody@example.org\n", block
    )
    bounce = parsed(data)
    assert [(r.address, r.kind) for r in bounce.recipients] == [
        ("later@example.org", DELAYED),
        ("nobody@example.org", HARD),
    ]
    assert bounce.kind == HARD


@pytest.mark.parametrize(
    ("status", "diagnostic", "expected"),
    [
        ("5.1.1", "550 5.1.1 user unknown", HARD),
        ("5.1.2", "550 5.1.2 bad destination system address", HARD),
        ("5.1.10", "550 5.1.10 RESOLVER.ADR.RecipientNotFound", HARD),
        ("4.1.1", "450 4.1.1 user unknown (directory offline)", SOFT),
        ("5.2.2", "552 5.2.2 mailbox full", SOFT),
        ("4.2.2", "452 4.2.2 over quota", SOFT),
        ("5.2.1", "550 5.2.1 mailbox disabled", HARD),
        ("5.7.1", "550 5.7.1 user unknown or blocked", SENDER),
        ("5.7.26", "550 5.7.26 unauthenticated email, DMARC policy", SENDER),
        ("4.7.0", "421 4.7.0 try again later", SENDER),
        ("5.3.4", "552 5.3.4 message too big for system", SENDER),
        ("5.6.1", "554 5.6.1 media not supported", SENDER),
        ("5.5.2", "500 5.5.2 syntax error", SENDER),
        ("5.5.0", "550 5.5.0 Requested action not taken: mailbox unavailable", HARD),
        ("5.1.7", "553 5.1.7 bad sender address syntax", SENDER),
        ("5.4.4", "554 5.4.4 unable to route", HARD),
        ("4.4.1", "451 4.4.1 no answer from host", SOFT),
        ("5.4.1", "550 5.4.1 too many hops", SOFT),
        (None, "550 Requested action not taken: user unknown", HARD),
        (None, "550 No such user here", HARD),
        (None, "552 Requested mail action aborted: exceeded storage allocation", SOFT),
        (None, "554 Message rejected: listed on a blocklist", SENDER),
        (None, "554 Transaction failed", BounceKind.UNKNOWN),
        (None, "421 Too many concurrent connections from your IP", SENDER),
        (None, "451 Greylisted, please try again later", SOFT),
        (None, "450 user unknown", SOFT),
        (None, "", BounceKind.UNKNOWN),
    ],
)
def test_classify(status: str | None, diagnostic: str, expected: BounceKind) -> None:
    assert classify(status, diagnostic) == expected


def test_delayed_regardless_of_status() -> None:
    assert classify("5.1.1", "550 5.1.1 user unknown", action="delayed") == DELAYED


@pytest.mark.parametrize(
    ("address", "token"),
    [
        ("bounces+0123456789abcdef01234567@example.com", "0123456789abcdef01234567"),
        ("<BOUNCES+0123456789abcdef01234567@Example.COM>", "0123456789abcdef01234567"),
        ("Mail <bounces+0123456789abcdef01234567@example.com>", "0123456789abcdef01234567"),
        ("bounces+0123456789ABCDEF01234567@example.com", "0123456789abcdef01234567"),
        ("bounces+0123456789abcdef0123456@example.com", None),  # 23 hex digits
        ("bounces+0123456789abcdef01234567@example.com.evil.example", None),
        ("xbounces+0123456789abcdef01234567@example.com", None),
        ("bounces+0123456789abcdef01234567@example.org", None),
        ("bounces@example.com", None),
        ("", None),
    ],
)
def test_verp_token(address: str, token: str | None) -> None:
    assert verp_token(address, RETURN_PATH) == token


def test_verp_tokens_need_the_return_path() -> None:
    bounce = parse_bounce(raw("postfix-dsn-user-unknown"))
    assert bounce is not None and bounce.verp_tokens == []
    assert bounce.recipients[0].address == "nobody@example.org"


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("rfc822; nobody@example.org", "nobody@example.org"),
        ("rfc822;<nobody@example.org>", "nobody@example.org"),
        ("rfc822; a+2Bb@example.org", "a+b@example.org"),  # xtext
        ("utf-8; j\\x{FC}rgen@example.org", "jürgen@example.org"),  # RFC 6533 escape
        ("utf-8; jürgen@example.org", "jürgen@example.org"),
        ("nobody@example.org", "nobody@example.org"),
        ("rfc822;", None),
    ],
)
def test_address_field(value: str, address: str | None) -> None:
    assert address_field(value) == address


def test_fingerprint_is_stable_across_readers() -> None:
    data = raw("postfix-dsn-user-unknown")
    crlf = data.replace(b"\n", b"\r\n")
    mbox = b"From MAILER-DAEMON Mon Mar 10 14:02:13 2025\n" + data
    fingerprints = {parsed(d).fingerprint for d in (data, data, crlf, mbox)}
    assert len(fingerprints) == 1


def test_fingerprint_without_a_message_id_is_of_the_bytes() -> None:
    data = raw("qmail-text")
    assert parsed(data).fingerprint == parsed(data.replace(b"\n", b"\r\n")).fingerprint
    assert parsed(data).fingerprint != parsed(data.replace(b"nouser@", b"nouser2@")).fingerprint


def test_fingerprints_differ_between_bounces() -> None:
    fingerprints = [parsed(raw(name)).fingerprint for name in EXPECTED]
    assert len(set(fingerprints)) == len(fingerprints)


def test_garbage_never_raises() -> None:
    assert parse_bounce(b"") is None
    assert parse_bounce(b"\x00\xff\xfe garbage \r\n\r\n\xc3") is None
    noise = random.Random(42)
    for _ in range(50):
        data = bytes(noise.randrange(256) for _ in range(noise.randrange(1, 2000)))
        result = _parse(data, RETURN_PATH)
        assert result is None or isinstance(result.kind, BounceKind)


def test_a_truncated_report_still_names_the_recipient() -> None:
    data = raw("postfix-dsn-user-unknown")
    cut = data[: data.index(b"Remote-MTA: dns; mx.example.org")]
    bounce = parsed(cut)
    assert [(r.address, r.status, r.kind) for r in bounce.recipients] == [
        ("nobody@example.org", "5.1.1", HARD)
    ]


@pytest.mark.parametrize("cut", [0.1, 0.3, 0.5, 0.7, 0.9])
def test_any_truncation_parses(cut: float) -> None:
    for name in EXPECTED:
        data = raw(name)
        result = _parse(data[: int(len(data) * cut)], RETURN_PATH)
        assert result is None or isinstance(result.kind, BounceKind)


def test_wrong_charsets_and_broken_encodings_are_read_anyway() -> None:
    data = (
        b"From: MAILER-DAEMON@mail.example.net\nSubject: =?x-unknown?b?!!!?= failure notice\n"
        b"MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; "
        b'boundary="b"\n\n--b\nContent-Type: text/plain; charset=x-no-such-charset\n'
        b"Content-Transfer-Encoding: base64\n\n!!not base64!!\n--b\n"
        b"Content-Type: message/delivery-status\n\n"
        b"Final-Recipient: rfc822; caf\xe9@example.org\nAction: failed\nStatus: 5.1.1\n--b--\n"
    )
    bounce = _parse(data, None)
    assert bounce is not None
    assert [(r.status, r.kind) for r in bounce.recipients] == [("5.1.1", HARD)]
    assert bounce.recipients[0].address is not None
    assert bounce.recipients[0].address.startswith("caf")


# These call the parser under parse_bounce's last-resort guard, which would hide a bug.
@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=3000))
def test_never_raises_on_bytes(data: bytes) -> None:
    result = _parse(data, RETURN_PATH)
    assert result is None or isinstance(result.kind, BounceKind)


_HEADER_NAMES = st.sampled_from(
    [
        "From",
        "To",
        "Subject",
        "Content-Type",
        "Auto-Submitted",
        "X-Failed-Recipients",
        "Message-ID",
        "Delivered-To",
        "Content-Transfer-Encoding",
        "Precedence",
        "X-Autoreply",
    ]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_HEADER_NAMES, st.text(max_size=80)), max_size=8), st.text(max_size=500))
def test_never_raises_on_arbitrary_headers(headers: list[tuple[str, str]], body: str) -> None:
    head = "".join(f"{name}: {value}\n" for name, value in headers)
    result = _parse((head + "\n" + body).encode(), RETURN_PATH)
    assert result is None or isinstance(result.kind, BounceKind)


# -- where the words name a failed recipient -------------------------------------------------


@pytest.mark.parametrize(
    ("line", "address"),
    [
        ("<ann@example.org>:", "ann@example.org"),  # Postfix, qmail
        ("   * ann@example.org", "ann@example.org"),  # bullet list
        ('"ann@example.org":', "ann@example.org"),  # GMX
        (">>> ann@example.org <ann@example.org>", "ann@example.org"),  # Active!Hunter
        ("ann@example.org on Tue, 11 Mar 2025 09:19:58 +0000", "ann@example.org"),  # Exchange
        ("ann@example.org [User unknown]", "ann@example.org"),
        ("554 <ann@example.org>... Remote protocol error", "ann@example.org"),  # sendmail
        ("<<< 550 5.1.1 <ann@example.org>... User unknown", "ann@example.org"),
        (" In:  RCPT TO:<ann@example.org>", "ann@example.org"),  # Postfix transcript
        ("Unknown user: ann@example.org", "ann@example.org"),  # IMail
        ("target mail address: ann@example.org", "ann@example.org"),
        ("     Could not be delivered to: <ann@example.org>", "ann@example.org"),
        ("There was an error delivering your mail to <ann@example.org>.", "ann@example.org"),
        ("Reason:  Unable to deliver message to <ann@example.org> (and more).", "ann@example.org"),
    ],
)
def test_a_failed_recipient_is_found_in_every_shape(line: str, address: str) -> None:
    text = f"Delivery failed.\n\n{line}\nsomething went wrong\n"
    assert [a for _, _, a in named.mentions(text)] == [address]


@pytest.mark.parametrize(
    "line",
    [
        ">>> MAIL From:<support@acme.example>",  # the sender, in a transcript
        "(envelope-from <support@acme.example>)",
        "The original message was received at Tue, 11 Mar 2025 from support@acme.example",
        "Message-ID: <20250311.abc@mail.example.net>",
        "Please send mail to <postmaster@mail.example.net>",
        "pipe to |/usr/local/bin/autoresponder",
        "save to /var/mail/ann",
    ],
)
def test_our_addresses_ids_programs_and_files_are_never_failed_recipients(line: str) -> None:
    assert named.mentions(f"Delivery failed.\n\n{line}\n", ours=["support@acme.example"]) == []


def test_a_line_holding_only_the_bounces_addressee_is_still_a_failure() -> None:
    text = "I could not deliver to these addresses:\n\n<ann@example.org>:\nmailbox full\n"
    assert [a for _, _, a in named.mentions(text, addressees=["ann@example.org"])] == [
        "ann@example.org"
    ]
    prose = "Your message to <ann@example.org> was returned.\n"
    assert named.mentions(prose, addressees=["ann@example.org"]) == []


@pytest.mark.parametrize(
    "address", ["|/usr/bin/procmail", "/var/mail/ann", " |/usr/local/bin/x a@b.example"]
)
def test_pipes_and_files_are_programs(address: str) -> None:
    assert named.is_program(address)
    assert not named.is_program("ann@example.org")


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("said: 550 5.1.1 unknown (in reply to RCPT TO command)", "RCPT"),
        ("said: 550 User unknown (in reply to end of DATA command)", "DATA"),
        ("SMTP error from remote mail server after MAIL FROM:<a@b.example>:", "MAIL"),
        ("mx.example.org [192.0.2.1] did not like our final DATA:", "DATA"),
        ("host mx.example.org[192.0.2.1] refused to talk to me: 554 go away", "CONNECT"),
        ("Connected to 192.0.2.1 but my name was rejected.", "HELO"),
        (">>> MAIL From:<a@b.example>\n<<< 250 ok\n>>> RCPT To:<c@d.example>\n<<< 550 no", "RCPT"),
        (">>> DATA\n<<< 550 5.1.1 <c@d.example>... User unknown", "DATA"),
        ("550 5.1.1 User unknown", None),
    ],
)
def test_the_smtp_command_a_reply_answered(text: str, command: str | None) -> None:
    assert bounce_text.command(text) == command


@pytest.mark.parametrize(
    ("text", "reply"),
    [
        (
            "said: 550-5.1.1 First line\n550-5.1.1 second line\n550 5.1.1 last\nnext",
            "550-5.1.1 First line second line last",
        ),
        (
            "<<< 550 <a@b.example>... User unknown\n550 <a@b.example>... User unknown",
            "550 <a@b.example>... User unknown",
        ),
        (
            "said: 550 5.1.1 The email\n    account does not exist\nGiving up on it",
            "550 5.1.1 The email account does not exist",
        ),
        (" Out: 451 4.3.0 Error: queue file write error\n In:  QUIT", "451 4.3.0 Error: queue"
         " file write error"),
    ],
)  # fmt: skip
def test_a_multi_line_reply_is_read_whole_and_no_further(text: str, reply: str) -> None:
    assert bounce_text.smtp_reply(text) == reply


# -- what a delivery-status report says -----------------------------------------------------


def test_recipient_groups_without_blank_lines_are_kept_apart() -> None:
    blocks = text_blocks(
        "Reporting-MTA: dns; mx.example.net\n"
        "Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.1.1\n"
        "Final-Recipient: rfc822; b@example.org\nOriginal-Recipient: rfc822; b@example.org\n"
        "Action: delayed\nStatus: 4.4.1\n"
        "Action: failed\nFinal-Recipient: rfc822; c@example.org\n"
        "Original-Recipient: rfc822; c@example.org\nStatus: 5.2.2\n"
    )
    assert [(b.get("final-recipient"), b.get("status")) for b in blocks] == [
        ("rfc822; a@example.org", "5.1.1"),
        ("rfc822; b@example.org", "4.4.1"),
        ("rfc822; c@example.org", "5.2.2"),
    ]


@pytest.mark.parametrize(
    ("written", "reply", "preferred"),
    [
        ("5.0.0", "550 5.1.1 user unknown", "5.1.1"),  # x.0.0 says only 'failed'
        ("5.0.0", "550 #5.1.0 Address rejected.", "5.1.0"),
        ("5.1.1", "552 5.2.2 Over quota", "5.2.2"),  # the reply says what 5.1.1 hid
        ("4.4.7", "554 4.4.7 Message expired <421 4.4.2 Connection timed out>", "4.4.2"),
        ("5.3.0", "554 5.7.1 Access denied", "5.7.1"),
        ("5.2.0", "550 5.1.0 - Unknown address error 550-'5.2.2 Mailbox Full'", "5.2.2"),
        ("4.0.0", "554 5.7.1 blocked", "5.7.1"),  # the basic code settles permanence
        ("5.7.1", "550 5.7.1 Relay denied", "5.7.1"),
        ("5.1.1", "550 no code here", "5.1.1"),
        (None, "550 5.1.1 user unknown", "5.1.1"),
        (None, "550 user unknown", None),
    ],
)
def test_the_replys_code_wins_where_the_status_says_less(
    written: str | None, reply: str, preferred: str | None
) -> None:
    assert preferred_status(written, reply) == preferred


# -- robust on anything ----------------------------------------------------------------------


def _mutations(data: bytes, noise: random.Random) -> list[bytes]:
    """Truncations, other line ends, and MIME broken in the ways real servers break it."""
    lf = data.replace(b"\r\n", b"\n")
    return [
        *(data[: noise.randrange(len(data) + 1)] for _ in range(4)),
        lf.replace(b"\n", b"\r\n"),
        lf.replace(b"\n", b"\r"),
        re.sub(rb'boundary="?[^";\r\n]+"?', b'boundary="not-there"', data),
        re.sub(rb"(?m)^--[^\r\n]+$", b"", data),
        data.replace(b"message/delivery-status", b"message/delivery-status\nContent-Transfer-"
                     b"Encoding: base64"),
        bytes(b if noise.random() > 0.01 else noise.randrange(256) for b in data),
    ]  # fmt: skip


@pytest.mark.parametrize("name", sorted(set(EXPECTED) | set(FAMILIES)))
def test_mutated_copies_never_raise(name: str) -> None:
    noise = random.Random(name)
    for data in _mutations(raw(name), noise):
        result = _parse(data, RETURN_PATH)
        assert result is None or isinstance(result.kind, BounceKind)


@pytest.mark.parametrize("name", sorted(set(EXPECTED) | set(FAMILIES)))
def test_line_ends_change_nothing(name: str) -> None:
    lf = raw(name).replace(b"\r\n", b"\n")
    said = {
        tuple((r.address, r.status, r.kind) for r in parsed(data).recipients)
        for data in (lf, lf.replace(b"\n", b"\r\n"), lf.replace(b"\n", b"\r"))
    }
    assert len(said) == 1


_MB = 1024 * 1024
_HEAD = b"From: MAILER-DAEMON@mx.example.net\nSubject: Undelivered Mail Returned to Sender\n"
# Each is 10 MB built to make a careless parser slow: a long line, a flood of recipients,
# of DSN groups, of boundaries, nesting deeper than the stack, a huge header.
_HOSTILE = {
    "one line": _HEAD + b"\n" + b"a@" * (5 * _MB),
    "recipients": _HEAD + b"\n" + b"".join(
        b"<u%d@example.org>: host mx said: 550 5.1.1 no such user\n" % i for i in range(200_000)
    ),
    "dsn groups": _HEAD + b'Content-Type: multipart/report; boundary="b"\n\n--b\n'
    b"Content-Type: message/delivery-status\n\n"
    + b"Final-Recipient: rfc822; u@example.org\nAction: failed\nStatus: 5.1.1\n" * 160_000,
    "boundaries": _HEAD + b'Content-Type: multipart/mixed; boundary="b"\n\n'
    + b"--b\n\n" * (2 * _MB),
    "nesting": _HEAD + b'Content-Type: multipart/mixed; boundary="b0"\n\n' + b"".join(
        b'--b%d\nContent-Type: multipart/mixed; boundary="b%d"\n\n' % (i, i + 1)
        for i in range(3000)
    ) + b"x" * (10 * _MB),
    "header": b"From: MAILER-DAEMON@mx.example.net\nSubject: " + b"x" * (10 * _MB) + b"\n\nhi\n",
    "newlines": _HEAD + b"\n" + b"\n" * (10 * _MB),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(_HOSTILE))
def test_a_hostile_10_mb_bounce_parses_in_linear_time(name: str) -> None:
    data = _HOSTILE[name]
    assert len(data) >= 9 * _MB
    start = time.process_time()
    result = _parse(data, RETURN_PATH)
    took = time.process_time() - start
    print(f"{name}: {len(data) / _MB:.1f} MB parsed in {took:.2f} s of CPU")
    assert took < 5, f"{name}: {took:.2f} s"  # well under 1 s on a quiet machine
    assert result is None or len(result.recipients) <= 100
