"""Replies become decisions by their enhanced status code, not by 4xx/5xx alone."""

from __future__ import annotations

import pytest

from notify import replies
from notify.models import BounceKind, Outcome, State
from notify.replies import Verdict, classify, enhanced_status, explain, retry_after, verdict


@pytest.mark.parametrize(
    ("state", "code", "reply", "expected"),
    [
        (State.ACCEPTED, 250, "2.0.0 Ok: queued", Verdict.DONE),
        (State.REFUSED, 550, "5.1.1 User unknown", Verdict.DONE),
        (State.REFUSED, 554, "5.7.1 Relay access denied", Verdict.DONE),
        (State.SENDING, None, "connection lost after the message was sent", Verdict.DONE),
        (State.DEFERRED, 451, "4.3.0 Temporary lookup failure", Verdict.RETRY),
        (State.DEFERRED, 452, "4.2.2 Mailbox full", Verdict.RETRY),
        (State.DEFERRED, 450, "mailbox busy", Verdict.RETRY),
        (State.DEFERRED, 451, "4.7.1 Rate limit exceeded, retry in 1 seconds", Verdict.SLOW_DOWN),
        (State.DEFERRED, 450, "4.7.28 Our system has detected an unusual rate", Verdict.SLOW_DOWN),
        (State.DEFERRED, 421, "4.3.2 Service shutting down", Verdict.SLOW_DOWN),
        (
            State.DEFERRED,
            None,
            "connection lost: Connection unexpectedly closed",
            Verdict.SLOW_DOWN,
        ),
    ],
)
def test_verdict(state, code, reply, expected):
    assert verdict(Outcome("k", state, code, reply)) is expected


def test_enhanced_status():
    assert enhanced_status("4.7.1 Rate limited") == (4, 7, 1)
    assert enhanced_status("  5.1.10 RESOLVER.ADR.RecipientNotFound") == (5, 1, 10)
    assert enhanced_status("Ok 2.0.0") is None
    assert enhanced_status("4.7 incomplete") is None


@pytest.mark.parametrize(
    ("reply", "seconds"),
    [
        ("4.7.1 Rate limit exceeded, retry in 1 seconds", 1.0),
        ("4.7.0 Try again in 5 minutes", 300.0),
        ("421 please retry after 30s", 30.0),
        ("4.3.0 Temporary lookup failure", None),
    ],
)
def test_retry_after(reply, seconds):
    assert retry_after(reply) == seconds


HARD, SOFT, SENDER = BounceKind.HARD, BounceKind.SOFT, BounceKind.SENDER


@pytest.mark.parametrize(
    ("status", "reply", "kind", "why"),
    [
        # recipient-side x.7.x codes are about the address, not about us
        ("5.7.13", "525 5.7.13 <a@example.org>: Disabled recipient address", HARD, "suspend"),
        ("5.7.1", "550 5.7.1 <a@example.org>: Recipient address rejected: User unknown", HARD,
         "userunknown"),
        ("5.7.1", "550 5.7.1 Recipient address rejected: User a@example.org temporary locked",
         HARD, "suspend"),
        ("5.7.17", "550 5.7.17 Mailbox owner has changed", HARD, "hasmoved"),
        # ... while the other x.7.x codes stay ours
        ("5.7.1", "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using "
         "zen.spamhaus.org", SENDER, "blocked"),
        ("5.7.25", "550 5.7.25 Reverse DNS validation failed", SENDER, "requireptr"),
        ("5.7.26", "550 5.7.26 Unauthenticated email is not accepted (DMARC)", SENDER,
         "authfailure"),
        ("5.7.1", "554 5.7.1 <a@example.org>: Relay access denied", SENDER, "norelaying"),
        # a bare 550/553 is not a bad address when its words blame us
        (None, "550 Your IP 192.0.2.1 is blacklisted", SENDER, "blocked"),
        (None, "553 sorry, sender rejected (#5.7.1)", SENDER, "rejected"),
        (None, "550 Message contains a virus", SENDER, "virusdetected"),
        (None, "554 Message rejected as spam", SENDER, "spamdetected"),
        (None, "550 Requested action not taken: mailbox unavailable", HARD, "userunknown"),
        # the sender's own address codes blame the sender whatever the words say
        ("5.1.7", "550 5.1.7 No such domain example.net", SENDER, "rejected"),
        ("5.1.8", "553 5.1.8 Domain of sender address does not exist", SENDER, "rejected"),
        # Microsoft 365 answers 5.4.1 for a recipient it does not know
        ("5.4.1", "550 5.4.1 Recipient address rejected: Access denied", HARD, "userunknown"),
        ("5.4.1", "550 5.4.1 All recipient addresses rejected : Access denied", SENDER,
         "rejected"),
        # words that name the cause win over a misleading code
        ("5.2.1", "550-5.2.1 The user you are trying to contact is receiving mail at a rate "
         "that prevents additional messages from being delivered", SENDER, "speeding"),
        ("5.4.4", "Name service error for name=example.org type=MX: Malformed or unexpected "
         "name server reply", SOFT, "networkerror"),
        # temporary and expired
        (None, "retry timeout exceeded", SOFT, "expired"),
        ("4.4.7", "Could not deliver for the last 432000 seconds. Giving up.", SOFT, "expired"),
        ("4.2.2", "452 4.2.2 Mailbox full", SOFT, "mailboxfull"),
        ("4.1.1", "450 4.1.1 user unknown (directory offline)", SOFT, "userunknown"),
        ("5.3.2", "521 5.3.2 System not accepting network messages", HARD, "notaccept"),
        (None, "an MX or SRV record indicated no SMTP service", HARD, "notaccept"),
        (None, "This user doesn't have a example.org account", HARD, "userunknown"),
        (None, "User ann (a@example.org) not listed in Domino Directory", HARD, "userunknown"),
        (None, "Name unknown", BounceKind.UNKNOWN, ""),
    ],
)  # fmt: skip
def test_explain_names_the_reason_and_its_kind(
    status: str | None, reply: str, kind: BounceKind, why: str
) -> None:
    assert explain(status, reply) == (kind, why)
    assert classify(status, reply) == kind


@pytest.mark.parametrize(
    ("command", "reply", "kind", "why"),
    [
        ("MAIL", "550 5.1.0 <x@acme.example>... unknown user", SENDER, "rejected"),
        ("HELO", "501 5.0.0 Invalid domain name", SENDER, "blocked"),
        ("CONNECT", "554 go away", SENDER, "blocked"),
        ("RCPT", "550 User unknown", HARD, "userunknown"),
        ("DATA", "550 : User unknown", HARD, "filtered"),  # refused once the message was read
        ("DATA", "550 5.1.1 User unknown", HARD, "userunknown"),
        ("DATA", "552 5.2.2 Mailbox full", SOFT, "mailboxfull"),
    ],
)
def test_the_refused_command_says_whose_fault_it_is(
    command: str, reply: str, kind: BounceKind, why: str
) -> None:
    status = enhanced_status(reply)
    code = ".".join(map(str, status)) if status else None
    assert explain(code, reply, command=command) == (kind, why)


def test_at_a_service_known_to_say_unknown_user_for_its_filter_it_is_ours() -> None:
    context = "host mfsmax.docomo.ne.jp[203.0.113.1] said: 550 Unknown user"
    reply = "550 Unknown user a@docomo.ne.jp"
    assert explain(None, reply, command="DATA", context=context) == (SENDER, "rejected")


def test_the_words_around_a_reply_help_only_when_the_reply_says_nothing() -> None:
    assert explain(None, "550 5.0.0 see below", context="the mailbox is full")[1] == "mailboxfull"
    assert explain("5.1.1", "550 5.1.1 bad address", context="mailbox full") == (
        HARD,
        "userunknown",
    )


def test_a_delayed_notice_stays_delayed_whatever_the_reason() -> None:
    assert explain("5.1.1", "550 5.1.1 user unknown", action="delayed") == (
        BounceKind.DELAYED,
        "userunknown",
    )


def test_every_reason_has_a_kind() -> None:
    named = {why for table in (replies._CAUSES, replies._HINTS) for why, _ in table}
    named |= set(replies._STATUS_REASONS.values())
    assert named <= set(replies.KIND_OF_REASON)
