"""What an SMTP reply or a DSN status means: for the run, and for the address.

`verdict` decides what delivery does next; `classify` decides what a refusal or a bounce
says about the address (hard, soft, the sender's problem), by enhanced status code
(RFC 3463), then well-known wordings, then the basic code.

The 3-digit code says only "now" (2xx), "later" (4xx) or "never" (5xx); the enhanced
code's subject says whose problem it is: x.7.x is policy and rate limiting, the sender's
problem, which calls for slowing down, not for giving up on the recipient.
"""

from __future__ import annotations

import enum
import re

from notify.models import BounceKind, Outcome, State

_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")
_BASIC = re.compile(r"^\s*#?([245])(\d\d)\b")
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


def verdict(outcome: Outcome) -> Verdict:
    """The one place where replies turn into decisions."""
    if outcome.state in (State.ACCEPTED, State.REFUSED, State.SENDING, State.PENDING):
        return Verdict.DONE
    if outcome.code is None or outcome.code == 421:  # connection lost or closing
        return Verdict.SLOW_DOWN
    status = enhanced_status(outcome.reply)
    if status is not None and status[1] == 7:
        return Verdict.SLOW_DOWN
    return Verdict.RETRY


def is_status_code(text: str) -> bool:
    """'5.1.1' is an enhanced status code; '5.1' and '550' are not."""
    return _STATUS.match(text) is not None


def retry_after(reply: str) -> float | None:
    """Seconds the relay asked us to wait ('retry in 30 seconds', 'try again in 5 min')."""
    match = _RETRY_AFTER.search(reply)
    if not match:
        return None
    seconds = float(match[1])
    return seconds * 60 if match[2].lower().startswith("m") else seconds


# Phrases for replies with no specific enhanced code, strongest claim first: a refusal
# that mentions spam is about us even when it also says "mailbox unavailable".
_RATE_PHRASES = re.compile(
    r"too many|rate.?limit|throttl|sending (?:quota|limit)|unusual rate", re.IGNORECASE
)
_PHRASES = [
    (
        BounceKind.SENDER,
        re.compile(
            r"\bspam|black.?list|block.?list|\bblocked\b|\bpolicy\b|dmarc|\bspf\b|\bdkim\b"
            r"|reputation|not authori[sz]ed|unauthenticated|relay(?:ing)? (?:access )?denied",
            re.IGNORECASE,
        ),
    ),
    (
        BounceKind.SOFT,
        re.compile(
            r"quota|mailbox (?:is )?full|storage|insufficient (?:system )?storage"
            r"|gr[ae]ylist|try again later|temporar",
            re.IGNORECASE,
        ),
    ),
    (
        BounceKind.HARD,
        re.compile(
            r"user unknown|unknown (?:user|recipient|address)"
            r"|no such (?:user|recipient|mailbox|address)|n[o']t exist|no mailbox"
            r"|mailbox (?:unavailable|not found)|(?:user|recipient|address) not found"
            r"|recipnotfound|couldn't be found|invalid (?:recipient|mailbox|address)"
            r"|account (?:has been )?disabled|unrouteable|domain not found",
            re.IGNORECASE,
        ),
    ),
]


def classify(status: str | None, diagnostic: str, *, action: str = "failed") -> BounceKind:
    """The one place where a status and a reply become a decision about an address."""
    if action == "delayed":
        return BounceKind.DELAYED
    code = _STATUS.match(status or "")
    permanence = code[1] if code else _basic_class(diagnostic)
    if (code and code[2] == "7") or _RATE_PHRASES.search(diagnostic):
        return BounceKind.SENDER
    kind = _by_enhanced(int(code[2]), int(code[3]), diagnostic) if code else None
    kind = kind or _by_phrase(diagnostic) or _by_basic(diagnostic)
    if permanence == "4" and kind in (BounceKind.HARD, BounceKind.UNKNOWN):
        return BounceKind.SOFT  # a temporary failure never condemns an address
    return kind


def _by_enhanced(subject: int, detail: int, diagnostic: str) -> BounceKind | None:
    """RFC 3463's subject and detail; an 'other' detail (x.y.0) defers to the words first."""
    if detail == 0 and (by_words := _by_phrase(diagnostic)):
        return by_words
    if subject == 1:
        return BounceKind.SENDER if detail in (7, 8) else BounceKind.HARD  # x.1.7/8: our address
    if subject == 2:
        return {1: BounceKind.HARD, 3: BounceKind.SENDER}.get(detail, BounceKind.SOFT)
    if subject == 3:
        return BounceKind.SENDER if detail == 4 else BounceKind.SOFT  # x.3.4: message too big
    if subject == 4:
        return BounceKind.HARD if detail == 4 else BounceKind.SOFT  # x.4.4: unable to route
    if subject in (5, 6, 7):
        return BounceKind.SENDER  # protocol, content, policy
    return None


def _by_phrase(diagnostic: str) -> BounceKind | None:
    """Well-known wordings, for replies without a specific enhanced code."""
    return next((kind for kind, words in _PHRASES if words.search(diagnostic)), None)


def _by_basic(diagnostic: str) -> BounceKind:
    """RFC 5321's basic code, the last resort (554 is as often spam as anything else)."""
    match = _BASIC.match(diagnostic)
    if not match:
        return BounceKind.UNKNOWN
    code = int(match[1] + match[2])
    if code in (550, 551, 553, 521, 556):
        return BounceKind.HARD
    if code == 552 or match[1] == "4":
        return BounceKind.SOFT
    return BounceKind.SENDER if 500 <= code <= 504 else BounceKind.UNKNOWN


def _basic_class(diagnostic: str) -> str | None:
    """'4' or '5' from a reply's basic code, when there is no enhanced one."""
    match = _BASIC.match(diagnostic)
    return match[1] if match else None
