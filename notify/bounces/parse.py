"""What a bounce says: who could not be reached, why, and whether trying again can help.

The parser is pure: bytes in, a ``Bounce`` (or None for ordinary mail) out. It reads
RFC 3464/6533 delivery-status reports first, and the text of the MTAs that write none.
A reason is classified by the enhanced status code's class and subject (RFC 3463), since
"550" alone cannot tell an unknown user from a spam refusal: only the address's own
faults are HARD, the sender's problems (policy, reputation, rate) never condemn an
address, and a temporary failure is never permanent.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from email import policy
from email.message import Message
from email.parser import BytesParser
from email.utils import getaddresses, parseaddr

from notify.bounces import dsn
from notify.bounces import text as bounce_text
from notify.bounces.dsn import Report
from notify.models import BounceKind
from notify.replies import classify, is_status_code


@dataclass(frozen=True)
class FailedRecipient:
    """One recipient a bounce names (for an auto-reply: the mailbox that replied)."""

    address: str | None  # Original-Recipient, else Final-Recipient, else what the text names
    status: str | None  # enhanced status code, e.g. "5.1.1" (RFC 3463)
    kind: BounceKind
    diagnostic: str  # the remote server's words (an auto-reply's subject), one line


@dataclass(frozen=True)
class Bounce:
    """Everything a bounce tells the ledger, and what makes reading it twice harmless."""

    kind: BounceKind  # the most consequential of the recipients' kinds
    recipients: list[FailedRecipient]
    verp_tokens: list[str]  # recipient tokens found in VERP addresses the bounce was sent to
    original_message_ids: list[str]  # Message-ID(s) of the message it returns or answers
    message_id: str | None  # the bounce's own Message-ID
    fingerprint: str  # the same bounce read twice (mbox, Maildir, IMAP) gives the same value


# Most consequential first: an address to give up on outweighs one to retry.
_PRECEDENCE = [
    BounceKind.HARD,
    BounceKind.SOFT,
    BounceKind.SENDER,
    BounceKind.UNKNOWN,
    BounceKind.DELAYED,
    BounceKind.AUTO_REPLY,
]
_FAILURE_ACTIONS = {"failed", "delayed"}
_VERP_HEADERS = (
    "To",
    "Delivered-To",
    "X-Original-To",
    "Envelope-To",
    "X-Envelope-To",
    "X-Original-Recipient",
    "Return-Path",
)
_RETURNED_VERP_HEADERS = ("Return-Path", "X-Envelope-From", "Errors-To")
_MBOX_FROM = re.compile(rb">*From ")
_DIAGNOSTIC_ENHANCED = re.compile(r"(?<![\w.])([45])\.(\d{1,3})\.(\d{1,3})(?!\.?\d)")
_MAILER = re.compile(r"^(?:mailer-daemon|postmaster|mail-daemon|mailer|mmdf|bounces?)@", re.I)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery status notification|delivery (?:has )?fail|non.?deliver"
    r"|mail delivery (?:failed|failure|system)|failure notice|returned mail"
    r"|could not be delivered|delivery failure",
    re.IGNORECASE,
)
_ANSWER_PREFIX = re.compile(r"^\s*(?:re|fwd?|aw|wg|sv|vs|tr)\s*:", re.IGNORECASE)
# Opening words of the mail systems that write no report; at a line's start, so a
# customer quoting a bounce ("> Delivery has failed ...") is not mistaken for one.
_BOUNCE_BODY = re.compile(
    r"^[ \t]*(?:hi\. this is the qmail-send program|this message was created automatically"
    r" by mail delivery software|sorry, we were unable to deliver your message"
    r"|delivery has failed to these recipients|a message that you sent could not be delivered"
    r"|your message wasn't delivered to|this is the mail system at)",
    re.IGNORECASE | re.MULTILINE,
)
_AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*(?:out of (?:the )?office|automatic reply|auto(?:matic)?[ -]?(?:reply|response)"
    r"|abwesenheitsnotiz|r[ée]ponse automatique|respuesta autom[áa]tica|risposta automatica"
    r"|automatisch antwoord)",
    re.IGNORECASE,
)


def parse_bounce(raw: bytes, *, return_path: str | None = None) -> Bounce | None:
    """Read one message; None when it is ordinary mail (a customer's reply), never an error."""
    try:
        return _parse(raw, return_path)
    except Exception:  # the last guard: one odd message must not stop a mailbox of them
        return _bounce(BounceKind.UNKNOWN, [], [], [], None, raw)


def _parse(raw: bytes, return_path: str | None) -> Bounce | None:
    """Parse, then decide: a delivery report, an auto-reply, a text bounce, or nothing."""
    msg = BytesParser(policy=policy.compat32).parsebytes(raw)
    parts = dsn.layout(msg)
    tokens = _tokens(msg, parts.returned, return_path)
    text, quoted = bounce_text.split_returned("\n".join(parts.text))
    returned_ids = _returned_ids(parts.returned) + bounce_text.quoted_message_ids(quoted)
    message_id = next(iter(dsn.message_ids(dsn.header(msg, "Message-ID"))), None)
    if parts.status_blocks:
        reports = [r for b in parts.status_blocks if (r := dsn.report(b))]
        if reports and not any(r.action in _FAILURE_ACTIONS for r in reports):
            return None  # only success notices (delivered, relayed, expanded)
        reports = [r for r in reports if r.action in _FAILURE_ACTIONS] or _text_reports(msg, text)
    elif _looks_like_bounce(msg, text):  # before auto-replies: Exim marks bounces auto-replied
        reports = _text_reports(msg, text)
    elif _is_auto_reply(msg):
        return _auto_reply(msg, tokens, raw)
    elif tokens:  # sent to a VERP address, yet in no known shape
        reports = _text_reports(msg, text)
    else:
        return None
    recipients = [_classified(report) for report in reports]
    kind = _overall([r.kind for r in recipients])
    return _bounce(kind, recipients, tokens, _unique(returned_ids), message_id, raw)


def _text_reports(msg: Message, text: str) -> list[Report]:
    """Reports read from the bounce's words, guided by X-Failed-Recipients when present."""
    failed = [a for _, a in getaddresses(dsn.headers(msg, "X-Failed-Recipients")) if a]
    ours = [a.lower() for name in ("To", "From", "Delivered-To") for _, a in _addresses(msg, name)]
    return bounce_text.reports(text, failed=failed, exclude=ours)


def _addresses(msg: Message, name: str) -> list[tuple[str, str]]:
    """(display name, address) pairs of an address header, decoded."""
    return getaddresses(dsn.headers(msg, name))


def _looks_like_bounce(msg: Message, text: str) -> bool:
    """A mail system's notice: its sender, its subject, X-Failed-Recipients or its opening words."""
    sender, subject = parseaddr(dsn.header(msg, "From"))[1], dsn.header(msg, "Subject")
    return bool(
        _MAILER.match(sender)
        or msg.get("X-Failed-Recipients")
        or (_BOUNCE_SUBJECT.search(subject) and not _ANSWER_PREFIX.match(subject))
        or _BOUNCE_BODY.search(text[:4000])
    )


def _is_auto_reply(msg: Message) -> bool:
    """RFC 3834's Auto-Submitted: auto-replied, the older X- headers, or a telltale subject."""
    auto_submitted = dsn.header(msg, "Auto-Submitted").lower()
    precedence = dsn.header(msg, "Precedence").lower()
    return bool(
        auto_submitted.startswith("auto-replied")
        or msg.get("X-Autoreply")
        or msg.get("X-Autorespond")
        or msg.get("X-Autoresponder")
        or precedence == "auto_reply"
        or _AUTO_REPLY_SUBJECT.search(dsn.header(msg, "Subject"))
    )


def _auto_reply(msg: Message, tokens: list[str], raw: bytes) -> Bounce:
    """An auto-reply: who answered, and which of our messages it answers."""
    address = parseaddr(dsn.header(msg, "From"))[1] or None
    subject = dsn.one_line(dsn.header(msg, "Subject"))
    answered = dsn.message_ids(dsn.header(msg, "In-Reply-To") + " " + dsn.header(msg, "References"))
    recipient = FailedRecipient(address, None, BounceKind.AUTO_REPLY, subject)
    message_id = next(iter(dsn.message_ids(dsn.header(msg, "Message-ID"))), None)
    return _bounce(BounceKind.AUTO_REPLY, [recipient], tokens, _unique(answered), message_id, raw)


def _classified(report: Report) -> FailedRecipient:
    """A report with its kind, and the diagnostic's enhanced code when Status says only x.0.0."""
    status, specific = report.status, _diagnostic_status(report.diagnostic)
    if specific and (status is None or (_is_generic(status) and status[0] == specific[0])):
        status = specific
    kind = classify(status, report.diagnostic, action=report.action)
    return FailedRecipient(report.address, status, kind, report.diagnostic)


def _diagnostic_status(diagnostic: str) -> str | None:
    """The enhanced code a server put in its reply ('550 5.1.1 ...' -> '5.1.1')."""
    match = _DIAGNOSTIC_ENHANCED.search(diagnostic[:80])
    return ".".join(match.groups()) if match else None


def _is_generic(status: str) -> bool:
    """'5.0.0' says only 'permanent'; the reply text may say more."""
    return status.endswith(".0.0") or not is_status_code(status)


def _overall(kinds: list[BounceKind]) -> BounceKind:
    """The most consequential kind among the recipients (UNKNOWN when none is named)."""
    return min(kinds, key=_PRECEDENCE.index, default=BounceKind.UNKNOWN)


def verp_token(address: str, return_path: str) -> str | None:
    """'bounces+TOKEN@example.com' -> TOKEN, given the return path 'bounces@example.com'."""
    match = _verp_pattern(return_path).fullmatch(parseaddr(address)[1] or address.strip())
    return match[1].lower() if match else None


@functools.lru_cache(maxsize=8)
def _verp_pattern(return_path: str) -> re.Pattern[str]:
    """The VERP form of one return path: local part and domain compared without case."""
    local, _, domain = parseaddr(return_path)[1].rpartition("@")
    return re.compile(
        rf"(?<![\w.+-]){re.escape(local)}\+([0-9a-f]{{24}})@{re.escape(domain)}(?![\w.-])",
        re.IGNORECASE,
    )


def _tokens(msg: Message, returned: list[Message], return_path: str | None) -> list[str]:
    """Tokens of the VERP addresses the bounce was delivered to, or the returned message used."""
    if not return_path or "@" not in return_path:
        return []
    pattern = _verp_pattern(return_path)
    values = [v for name in _VERP_HEADERS for v in dsn.headers(msg, name)]
    values += [v for m in returned for name in _RETURNED_VERP_HEADERS for v in dsn.headers(m, name)]
    return _unique(t.lower() for value in values for t in pattern.findall(value))


def _returned_ids(returned: list[Message]) -> list[str]:
    """Message-IDs of the returned message(s) or their headers."""
    return [i for m in returned for i in dsn.message_ids(dsn.header(m, "Message-ID"))]


def _unique(values: Iterable[str]) -> list[str]:
    """Values in first-seen order, without repeats."""
    return list(dict.fromkeys(values))


def _bounce(
    kind: BounceKind,
    recipients: list[FailedRecipient],
    tokens: list[str],
    original_ids: list[str],
    message_id: str | None,
    raw: bytes,
) -> Bounce:
    """A Bounce with its fingerprint: the Message-ID and what it says, else the bytes."""
    if message_id:
        said = [f"{r.address}|{r.status}|{r.kind}" for r in recipients]
        basis = "\x00".join([message_id, kind, *said, *tokens, *original_ids]).encode()
    else:  # no id: the bytes, with line ends and mbox "From " lines made alike
        lines = raw.splitlines()
        basis = b"\n".join(line.rstrip() for line in lines if not _MBOX_FROM.match(line))
    fingerprint = hashlib.sha256(basis).hexdigest()[:32]
    return Bounce(kind, recipients, tokens, original_ids, message_id, fingerprint)
