"""Customers' replies to an incident's messages: who wrote, and what they said first.

A reply is matched to its customer by the Message-ID it answers (In-Reply-To, References:
ours are `<TOKEN.INCIDENT@domain>`), else by its From: among the incident's addresses.
Out-of-office answers and bounces are told apart by the bounce parser and never recorded:
only a person's reply waits for an answer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime
from pathlib import Path

from notify import schedule
from notify.bounces.match import Matcher
from notify.bounces.parse import parse_bounce
from notify.cleaning.addresses import normalise_address
from notify.errors import ReplyError
from notify.ledger import Ledger, store
from notify.ledger import inbox as recorded
from notify.ledger.store import LedgerRecipient
from notify.mailboxes import Unmatched, open_mailbox
from notify.manifest import load_manifest
from notify.models import BounceKind
from notify.schedule import as_utc
from notify.settings import Security, Settings
from notify.workspace import Context

EXCERPT_CHARS = 300
_OUR_TOKEN = re.compile(r"<([0-9a-f]{24})\.[^<>@\s]+@[^<>\s]+>")
_ATTRIBUTION = re.compile(r"^(on\b.*\bwrote|le\b.*\ba écrit|am\b.*\bschrieb)\s*:\s*$", re.I)
_TAG = re.compile(r"<[^>]*>")
_DROPPED_ELEMENTS = re.compile(r"<(style|script|head)\b.*?</\1\s*>", re.I | re.S)
_BLOCK_END = re.compile(r"<\s*(br|/p|/div|/li|/tr|/h\d)\b[^>]*>", re.I)


@dataclass(frozen=True)
class Reply:
    """What one reply says about itself, before it is matched to a customer."""

    fingerprint: str
    sender: str  # the From: address
    subject: str
    date: datetime | None  # the Date: header, when it parses
    tokens: tuple[str, ...]  # our Message-ID tokens it answers, nearest first
    excerpt: str


@dataclass
class ReplyRun:
    """What reading a mailbox of replies did."""

    where: str
    read: int = 0
    recorded: int = 0  # new human replies
    already_recorded: int = 0
    auto_replies: int = 0  # out-of-office and friends: nobody asked anything
    bounces: int = 0  # for notify bounces
    unmatched: list[Unmatched] = field(default_factory=list)
    by_match: Counter[str] = field(default_factory=Counter)  # "message id" / "sender"
    moved: int = 0


def read_replies(
    context: Context,
    incident_id: str,
    *,
    mbox: Path | None = None,
    maildir: Path | None = None,
    imap: bool = False,
    move_to: str | None = None,
    now: datetime | None = None,
) -> ReplyRun:
    """Match every customer's reply in one mailbox to the customer and record it once."""
    load_manifest(context.workspace, incident_id)
    ledger = context.sent_ledger(incident_id, so="no reply can be matched")
    moment = now or schedule.utc_now()
    settings = context.settings
    with open_mailbox(reply_mailbox(settings), mbox=mbox, maildir=maildir, imap=imap) as box:
        run = ReplyRun(box.where)
        matcher = Matcher(ledger, incident_id)
        matched: list[str] = []
        for mail in box.messages():
            run.read += 1
            bounce = parse_bounce(mail.raw, return_path=settings.return_path)
            if bounce is not None:
                run.auto_replies += bounce.kind is BounceKind.AUTO_REPLY
                run.bounces += bounce.kind is not BounceKind.AUTO_REPLY
                continue
            reply = read_reply(mail.raw)
            recipient, how = _customer(ledger, matcher, incident_id, reply)
            if recipient is None:
                run.unmatched.append(Unmatched(mail.id, how))
                continue
            matched.append(mail.id)
            run.by_match[how] += 1
            if recorded.record(ledger, _recorded(reply, recipient, moment)):
                run.recorded += 1
            else:
                run.already_recorded += 1
        if move_to and matched:
            box.move(matched, move_to)
            run.moved = len(matched)
    return run


def mark_answered(
    context: Context, incident_id: str, address: str, *, now: datetime | None = None
) -> tuple[int, int]:
    """Mark every reply from one customer answered: (replies found, newly answered)."""
    load_manifest(context.workspace, incident_id)
    ledger = context.sent_ledger(incident_id, so="no reply can be matched")
    keys = recorded.keys_of(ledger, incident_id, address)
    checked = normalise_address(address)
    if not isinstance(checked, str):
        keys.add(checked[0])
    found, answered = recorded.mark_answered(
        ledger, incident_id, keys, now=now or schedule.utc_now()
    )
    if not found:
        raise ReplyError(
            f"{address} has no reply recorded for incident {incident_id}; check the address, "
            f"or read the mailbox first with notify replies --incident {incident_id} --imap"
        )
    return found, answered


def reply_mailbox(settings: Settings) -> Settings:
    """The settings open_imap reads, pointed at the Reply-To mailbox: each NOTIFY_REPLY_IMAP_*
    value set replaces its NOTIFY_IMAP_* one."""
    security = settings.reply_imap_security or settings.imap_security
    port = settings.imap_port
    if settings.reply_imap_security is not None:  # its own security: that one's usual port
        port = 993 if security is Security.TLS else 143
    return dataclasses.replace(
        settings,
        imap_host=settings.reply_imap_host or settings.imap_host,
        imap_port=settings.reply_imap_port or port,
        imap_security=security,
        imap_user=settings.reply_imap_user or settings.imap_user,
        imap_password=settings.reply_imap_password or settings.imap_password,
        imap_folder=settings.reply_imap_folder or settings.imap_folder,
    )


def _customer(
    ledger: Ledger, matcher: Matcher, incident_id: str, reply: Reply
) -> tuple[LedgerRecipient | None, str]:
    """The customer a reply is from, and how it was found (or why it was not)."""
    found = store.by_tokens(ledger, reply.tokens)
    for token in reply.tokens:
        recipient = found.get(token)
        if recipient is not None and recipient.incident_id == incident_id:
            return recipient, "message id"
    recipient = matcher.addresses().get(reply.sender)
    if recipient is not None:
        return recipient, "sender"
    if found:
        other = next(iter(found.values())).incident_id
        return None, f"answers incident {other}: run notify replies --incident {other}"
    return (
        None,
        f"from {reply.sender or 'no address'}, who is no recipient of incident {incident_id}",
    )


def _recorded(reply: Reply, recipient: LedgerRecipient, now: datetime) -> recorded.RecordedReply:
    return recorded.RecordedReply(
        fingerprint=reply.fingerprint,
        incident_id=recipient.incident_id,
        key=recipient.key,
        address=reply.sender or recipient.address,
        subject=reply.subject,
        received_at=reply.date or now,
        excerpt=reply.excerpt,
    )


def read_reply(raw: bytes) -> Reply:
    """Read one message as a reply; never an error, whatever the message holds."""
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    return Reply(
        fingerprint=fingerprint(msg, raw),
        sender=_sender(msg),
        subject=_header(msg, "Subject"),
        date=_date(msg),
        tokens=tuple(_tokens(msg)),
        excerpt=excerpt(_body(msg)),
    )


def fingerprint(msg: Message, raw: bytes) -> str:
    """The same reply read twice (mbox, Maildir, IMAP) gives the same value: its
    Message-ID, else its bytes with line ends made alike."""
    message_id = _header(msg, "Message-ID")
    basis = message_id.encode() if message_id else raw.replace(b"\r\n", b"\n").strip()
    return hashlib.sha256(b"reply\0" + basis).hexdigest()[:32]


def excerpt(text: str, *, limit: int = EXCERPT_CHARS) -> str:
    """The customer's own first words: quoted lines, the "On ... wrote:" line and the
    signature cut, the rest on one line."""
    kept: list[str] = []
    for line in text.splitlines():
        if line.rstrip() == "--":  # "-- ": the signature starts
            break
        stripped = line.strip()
        if stripped.startswith(">") or _ATTRIBUTION.match(stripped):
            continue
        if stripped:
            kept.append(" ".join(stripped.split()))
    joined = " ".join(kept)
    return joined if len(joined) <= limit else joined[: limit - 1].rstrip() + "…"


def html_text(markup: str) -> str:
    """An HTML part as lines of text, for a reply with no plain text part."""
    markup = _DROPPED_ELEMENTS.sub("", markup)
    markup = re.sub(r"<blockquote\b.*?</blockquote\s*>", "", markup, flags=re.I | re.S)
    return html.unescape(_TAG.sub("", _BLOCK_END.sub("\n", markup)))


def _body(msg: EmailMessage) -> str:
    """The plain text part, else the HTML one as text; empty when neither decodes."""
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        content = part.get_content()
    except (LookupError, ValueError, AssertionError):  # unknown charset, broken encoding
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    if not isinstance(content, str):
        return ""
    return html_text(content) if part.get_content_subtype() == "html" else content


def _tokens(msg: Message) -> list[str]:
    """Our tokens in In-Reply-To, then References from the newest to the oldest."""
    references = _OUR_TOKEN.findall(_header(msg, "References"))
    return [*_OUR_TOKEN.findall(_header(msg, "In-Reply-To")), *reversed(references)]


def _sender(msg: Message) -> str:
    found = [address for _, address in getaddresses([_header(msg, "From")]) if "@" in address]
    return found[0].lower() if found else ""


def _date(msg: Message) -> datetime | None:
    value = _header(msg, "Date")
    try:
        return as_utc(parsedate_to_datetime(value)) if value else None
    except (TypeError, ValueError, IndexError):
        return None


def _header(msg: Message, name: str) -> str:
    """A header as one line of text; a malformed one reads as empty, never an error."""
    try:
        value = msg.get(name)
    except (ValueError, IndexError, TypeError):
        return ""
    return " ".join(str(value).split()) if value is not None else ""
