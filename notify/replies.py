"""What an SMTP reply means for the run, by its enhanced status code (RFC 3463).

The 3-digit code says only "now" (2xx), "later" (4xx) or "never" (5xx); the enhanced
code's subject says whose problem it is: x.7.x is policy and rate limiting, the sender's
problem, which calls for slowing down, not for giving up on the recipient.
"""

from __future__ import annotations

import enum
import re

from notify.models import Outcome, State

_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_RETRY_AFTER = re.compile(
    r"(?:retry|try again)\D{0,20}?(\d+(?:\.\d+)?)\s*(s|sec|secs|seconds?|m|mins?|minutes?)\b",
    re.IGNORECASE,
)


class Verdict(enum.Enum):
    """What delivery does next with a recipient after a reply."""

    DONE = "done"  # accepted, refused for good, or in doubt: record it and move on
    RETRY = "retry"  # this recipient's temporary failure: try again later in this run
    SLOW_DOWN = "slow down"  # the relay pushes back on us: pause, fewer connections, retry


def enhanced_status(reply: str) -> tuple[int, int, int] | None:
    """'4.7.1 Rate limited' -> (4, 7, 1); None when the reply has no enhanced code."""
    match = _ENHANCED.match(reply)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def classify(outcome: Outcome) -> Verdict:
    """The one place where replies turn into decisions."""
    if outcome.state in (State.ACCEPTED, State.REFUSED, State.SENDING, State.PENDING):
        return Verdict.DONE
    if outcome.code is None or outcome.code == 421:  # connection lost or closing
        return Verdict.SLOW_DOWN
    status = enhanced_status(outcome.reply)
    if status is not None and status[1] == 7:
        return Verdict.SLOW_DOWN
    return Verdict.RETRY


def retry_after(reply: str) -> float | None:
    """Seconds the relay asked us to wait ('retry in 30 seconds', 'try again in 5 min')."""
    match = _RETRY_AFTER.search(reply)
    if not match:
        return None
    seconds = float(match[1])
    return seconds * 60 if match[2].lower().startswith("m") else seconds
