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
from dataclasses import dataclass, replace
from email import policy
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser
from email.utils import getaddresses, parseaddr

from notify.bounces import dsn, ses
from notify.bounces import recipients as named
from notify.bounces import text as bounce_text
from notify.bounces.dsn import Report
from notify.models import BounceKind
from notify.replies import explain


@dataclass(frozen=True)
class FailedRecipient:
    """One recipient a bounce names (for an auto-reply: the mailbox that replied)."""

    address: str | None  # Original-Recipient, else Final-Recipient, else what the text names
    status: str | None  # enhanced status code, e.g. "5.1.1" (RFC 3463)
    kind: BounceKind
    diagnostic: str  # the remote server's words (an auto-reply's subject), one line
    reason: str = ""  # why, in Sisimai's words: "userunknown", "mailboxfull", "blocked", ...


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
_FAILURE_ACTIONS = {"failed", "delayed", "expired"}  # SendGrid writes "expired" for failed
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
_RETURNED_SENDERS = ("From", "Sender", "Return-Path", "Reply-To", "X-Envelope-From")
_NEWLINES = re.compile(rb"\r\n?")
_MBOX_LINE = re.compile(rb"^>*From [^\n]*(?:\n|\Z)", re.MULTILINE)
_TRAILING_BLANKS = re.compile(rb"[ \t\x0b\x0c]+$", re.MULTILINE)
# A bounce is a few KB plus the message it returns; past this only an attachment (or an
# attack) goes on, and the MIME parser is not run over it.
_MAX_PARSED = 2_000_000
_LIMITS = ((b"\n", 50_000), (b"\n--", 300), (b"boundary=", 100))
_MAILER = re.compile(
    r"^(?:mailer-daemon|postmaster|post_master|mail-daemon|mailer|mmdf|bounces?)(?:@|$)", re.I
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery status notification|delivery (?:has )?fail|non.?deliver"
    r"|mail delivery (?:failed|failure|system)|failure notice|returned mail"
    r"|could not be delivered|delivery failure|warning: could not send|delayed mail"
    r"|mail error|delivery problem|\(delay\)|message delayed",
    re.IGNORECASE,
)
_ANSWER_PREFIX = re.compile(r"^\s*(?:re|fwd?|aw|wg|sv|vs|tr)\s*:", re.IGNORECASE)
# Opening words of the mail systems that write no report; at a line's start, so a
# customer quoting a bounce ("> Delivery has failed ...") is not mistaken for one.
_BOUNCE_BODY = re.compile(
    r"^[ \t*-]*(?:hi\. this is the qmail-send program|this message was created automatically"
    r" by mail delivery software|sorry, we were unable to deliver your message"
    r"|delivery has failed to these recipients|a message that you sent could not be delivered"
    r"|your message wasn't delivered to|this is the mail system at"
    r"|(?:your )?(?:mail|message) (?:sent on: .{0,60}\n\s*)?could not be delivered to"
    r"|there was an error delivering your mail|delivery to the following recipients? (?:failed"
    r"|has been delayed)|the following addresses had|unable to deliver (?:message|mail) to"
    r"|error: invalid user address|your message did not reach)",
    re.IGNORECASE | re.MULTILINE,
)
_AUTO_REPLY_SUBJECT = re.compile(
    r"^\s*(?:out of (?:the )?office|automatic reply|auto(?:matic)?[ -]?(?:reply|response)"
    r"|abwesenheitsnotiz|r[ée]ponse automatique|respuesta autom[áa]tica|risposta automatica"
    r"|automatisch antwoord)",
    re.IGNORECASE,
)
_GENERATED_BY = re.compile(rf"generated by <?({named.ADDRESS})>?", re.IGNORECASE)
_DSN_TEXT = re.compile(r"^(?:final|original)-recipient:", re.IGNORECASE | re.MULTILINE)


def parse_bounce(raw: bytes, *, return_path: str | None = None) -> Bounce | None:
    """Read one message; None when it is ordinary mail (a customer's reply), never an error."""
    try:
        return _parse(raw, return_path)
    except Exception:  # the last guard: one odd message must not stop a mailbox of them
        return _bounce(BounceKind.UNKNOWN, [], [], [], None, raw)


def _parse(raw: bytes, return_path: str | None) -> Bounce | None:
    """Parse, then decide: a delivery report, an auto-reply, a text bounce, or nothing."""
    msg = _message(_bounded(raw))
    parts = dsn.layout(msg)
    tokens = _tokens(msg, parts.returned, return_path)
    found = _read(msg, parts, tokens)
    if found == _AUTO_REPLY:
        return _auto_reply(msg, tokens, raw)
    if not isinstance(found, tuple):
        return None
    failed, returned_ids = found
    message_id = next(iter(dsn.message_ids(dsn.header(msg, "Message-ID"))), None)
    kind = _overall([r.kind for r in failed])
    return _bounce(kind, failed, tokens, _unique(returned_ids), message_id, raw)


def _bounded(raw: bytes) -> bytes:
    """The part of a bounce the MIME parser reads: its first _MAX_PARSED bytes, cut sooner
    where more lines, boundary lines or multipart declarations follow than a real bounce
    (a notice, a report and the returned message) ever has."""
    data = raw[:_MAX_PARSED]
    for token, limit in _LIMITS:
        data = _cut_at(data, token, limit)
    return data


def _cut_at(data: bytes, token: bytes, limit: int) -> bytes:
    """The data up to the limit-th occurrence of a token; all of it when there are fewer."""
    if data.count(token) <= limit:
        return data
    at = -1
    for _ in range(limit):
        at = data.find(token, at + 1)
    return data[:at]


def _message(raw: bytes) -> Message:
    """The MIME tree; parts nested deeper than Python's stack are left unparsed as text."""
    try:
        return BytesParser(policy=policy.compat32).parsebytes(raw)
    except RecursionError:
        return BytesParser(policy=policy.compat32).parsebytes(raw, headersonly=True)


_AUTO_REPLY = "auto-reply"
_Read = tuple[list[FailedRecipient], list[str]] | str | None


def _read(msg: Message, parts: dsn.Layout, tokens: list[str], *, nested: bool = False) -> _Read:
    """The failed recipients and the returned Message-IDs; "auto-reply", or None for mail
    that is neither."""
    own, quoted = bounce_text.split_returned("\n".join(parts.text))
    returned_ids = _returned_ids(parts.returned) + bounce_text.quoted_message_ids(quoted)
    reports = _reports(msg, parts, own, tokens)
    if reports is None or isinstance(reports, str):
        return reports
    returned_to = _returned_recipients(parts.returned, quoted)
    warning = bounce_text.is_warning(dsn.header(msg, "Subject"), own)
    failed = [_classified(_addressed(r, own, returned_to), own, warning) for r in reports]
    inner = None if nested or any(r.reason for r in failed) else _inner(parts.returned)
    return (inner[0], returned_ids + inner[1]) if inner else (failed, returned_ids)


def _inner(returned: list[Message]) -> tuple[list[FailedRecipient], list[str]] | None:
    """A bounce forwarding another bounce (a gateway's notice with the MTA's report inside):
    the inner one, read when the outer one says nothing of why."""
    for message in returned[:2]:
        found = _read(message, dsn.layout(message), [], nested=True)
        if isinstance(found, tuple) and any(r.reason for r in found[0]):
            return found
    return None


def _reports(
    msg: Message, parts: dsn.Layout, own: str, tokens: list[str]
) -> list[Report] | str | None:
    """What the bounce reports, from its delivery-status fields, a JSON notice or its words;
    "auto-reply" or None when it is no bounce."""
    if notice := ses.notification(own):
        return ses.reports(notice)
    blocks = parts.status_blocks or _dsn_in_text(own)
    if blocks:
        reports = [r for b in blocks[: named.MAX_MENTIONS] if (r := dsn.report(b))]
        if reports and not any(r.action in _FAILURE_ACTIONS for r in reports):
            return None  # only success notices (delivered, relayed, expanded)
        failed = [r for r in reports if r.action in _FAILURE_ACTIONS]
        if failed and any(r.address for r in failed):
            return failed
        return _text_reports(msg, own, parts.returned) if own.strip() else failed
    if _looks_like_bounce(msg, own):  # before auto-replies: Exim marks bounces auto-replied
        return _text_reports(msg, own, parts.returned)
    if _is_auto_reply(msg):
        return _AUTO_REPLY
    if tokens:  # sent to a VERP address, yet in no known shape
        return _text_reports(msg, own, parts.returned)
    return None


def _dsn_in_text(text: str) -> list[dict[str, str]]:
    """Delivery-status fields pasted into a text part (or left there by broken MIME)."""
    start = _DSN_TEXT.search(text, 0, bounce_text.MAX_TEXT)
    if start is None:
        return []
    return dsn.text_blocks(text[start.start() : start.start() + bounce_text.MAX_TEXT])


def _text_reports(msg: Message, text: str, returned: list[Message]) -> list[Report]:
    """Reports read from the bounce's words, guided by X-Failed-Recipients when present."""
    failed = [a for _, a in getaddresses(dsn.headers(msg, "X-Failed-Recipients")) if a]
    failed = [a for a in failed if not named.is_program(a)]
    ours = [a for _, a in _addresses(msg, "From")]
    ours += [a for m in returned for name in _RETURNED_SENDERS for _, a in _addresses(m, name)]
    addressees = [a for name in ("To", "Delivered-To") for _, a in _addresses(msg, name)]
    return bounce_text.reports(text, failed=failed, ours=ours, addressees=addressees)


def _addresses(msg: Message, name: str) -> list[tuple[str, str]]:
    """(display name, address) pairs of an address header, decoded."""
    return getaddresses(dsn.headers(msg, name))


def _returned_recipients(returned: list[Message], quoted: str) -> list[str]:
    """The To: of the returned message (attached, or pasted below a marker line)."""
    heads = returned or [BytesHeaderParser().parsebytes(quoted.lstrip().encode("utf-8", "replace"))]
    return _unique(a for m in heads[:1] for _, a in _addresses(m, "To") if "@" in a)


def _addressed(report: Report, own: str, returned_to: list[str]) -> Report:
    """A report with a real address: a pipe or file names the address that led to it, and a
    report naming nobody takes the returned message's only addressee."""
    address = report.address
    if named.is_program(address):
        by = _GENERATED_BY.search(bounce_text.context(own, address or "")) or _GENERATED_BY.search(
            own
        )
        address = by[1] if by else None
    if not address and len(returned_to) == 1:
        address = returned_to[0]
    return replace(report, address=address) if address != report.address else report


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
    recipient = FailedRecipient(address, None, BounceKind.AUTO_REPLY, subject, "vacation")
    message_id = next(iter(dsn.message_ids(dsn.header(msg, "Message-ID"))), None)
    return _bounce(BounceKind.AUTO_REPLY, [recipient], tokens, _unique(answered), message_id, raw)


def _classified(report: Report, own: str, warning: bool) -> FailedRecipient:
    """A report with its status, kind and reason, read with what the text says around it."""
    around = report.context or (bounce_text.context(own, report.address) if report.address else "")
    diagnostic = report.diagnostic or bounce_text.smtp_reply(around)
    reply = diagnostic if dsn.enhanced(diagnostic) else bounce_text.smtp_reply(around)
    status = dsn.preferred_status(report.status, reply or diagnostic)
    text_only = bool(report.context)  # a report read from words, not from a DSN's Action
    action = "delayed" if warning and text_only and report.action == "failed" else report.action
    kind, why = explain(
        status,
        diagnostic,
        action="failed" if action == "expired" else action,
        command=bounce_text.command(f"{diagnostic}\n{around}"),
        context=dsn.one_line(around),
    )
    if report.diagnostic_type.startswith("x-unix") and why in ("", "onhold"):
        kind, why = explain(status, "mailer error", action=action)
    return FailedRecipient(report.address, status, kind, diagnostic, why)


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


def _normalised(raw: bytes) -> bytes:
    """The bytes with LF line ends, no mbox "From " lines and no trailing blanks, as
    ``b"\n".join(line.rstrip() for line in raw.splitlines())`` gives; only the first
    _MAX_PARSED bytes (after LF line ends) of a bigger bounce, as only they are read."""
    data = _NEWLINES.sub(b"\n", raw)[:_MAX_PARSED]
    data = _MBOX_LINE.sub(b"", data) if b"From " in data else data
    ended = data.endswith(b"\n")
    data = _TRAILING_BLANKS.sub(b"", data)
    return data[:-1] if ended else data


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
        basis = _normalised(raw)
    fingerprint = hashlib.sha256(basis).hexdigest()[:32]
    return Bounce(kind, recipients, tokens, original_ids, message_id, fingerprint)
