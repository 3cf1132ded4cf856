"""Replies become decisions by their enhanced status code, not by 4xx/5xx alone."""

from __future__ import annotations

import pytest

from notify.models import Outcome, State
from notify.replies import Verdict, enhanced_status, retry_after, verdict


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
