"""What the preview's review page says: the incident, its counts, what needs a look, and
one line per customer; and the page that shows one previewed message."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from email import policy
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesParser
from pathlib import Path
from typing import TYPE_CHECKING

from notify.models import RejectKind

if TYPE_CHECKING:
    from notify.pipeline import CheckReport

LOOKALIKE_FLAG = "look-alike"


@dataclass(frozen=True)
class Number:
    """One headline count of the review page."""

    key: str  # a stable name, for tests and the page's markup
    label: str
    count: int
    tone: str = ""  # "bad", "wait" or "" (plain)


@dataclass(frozen=True)
class Attention:
    """Something to look at before sending, and the file that lists it."""

    text: str
    file: str = ""
    href: str = ""


@dataclass(frozen=True)
class Customer:
    """What the review page shows of one recipient beside their message."""

    name: str
    items: int
    flags: tuple[str, ...]


@dataclass(frozen=True)
class ReviewSummary:
    """The head of the review page and what each row knows beyond the message."""

    incident_id: str
    title: str
    recipients: int
    numbers: list[Number]
    attention: list[Attention]
    customers: Mapping[str, Customer] = field(default_factory=dict)  # by ledger key


def review_summary(report: CheckReport, folder: Path) -> ReviewSummary:
    """The review page's head from what `check` found; links are relative to `folder`."""
    cleaned = report.incident.cleaned
    held_back = sum(1 for r in cleaned.rejects if r.kind is RejectKind.TYPO_DOMAIN)
    numbers = [
        Number("recipients", "recipients", len(cleaned.recipients)),
        Number("rejected", "rejected rows", len(cleaned.rejects), "bad" if cleaned.rejects else ""),
        Number("held-back", "held back (likely typos)", held_back, "wait" if held_back else ""),
        Number(
            "lookalikes",
            "look-alikes",
            len(cleaned.lookalikes),
            "wait" if cleaned.lookalikes else "",
        ),
        Number(
            "review", "addresses to review", len(cleaned.review), "wait" if cleaned.review else ""
        ),
    ]
    attention: list[Attention] = []
    if cleaned.rejects:
        attention.append(
            _listed(
                f"{len(cleaned.rejects)} row(s) not sent to, {held_back} of them held back "
                "as likely typos",
                report.rejects_file,
                folder,
            )
        )
    if cleaned.lookalikes:
        attention.append(
            _listed(
                f"{len(cleaned.lookalikes)} pair(s) of recipients that may be one person",
                report.lookalikes_file,
                folder,
            )
        )
    for kind, count in sorted(report.review_by_kind.items()):
        attention.append(
            _listed(f"{count} address(es) or row(s) flagged: {kind}", report.review_file, folder)
        )
    return ReviewSummary(
        report.incident.incident_id,
        report.incident.manifest.title,
        len(cleaned.recipients),
        numbers,
        attention,
        _customers(report),
    )


def _customers(report: CheckReport) -> dict[str, Customer]:
    """Name, item count and flags per recipient: a few short strings each."""
    cleaned = report.incident.cleaned
    flags: dict[str, list[str]] = {}
    for entry in cleaned.review:
        flags.setdefault(entry.email.lower(), []).append(entry.kind)
    for pair in cleaned.lookalikes:
        for address in (pair.first, pair.second):
            flags.setdefault(address.lower(), []).append(LOOKALIKE_FLAG)
    return {
        r.key: Customer(
            str(r.fields.get("name", "")),
            len(r.items) or len(r.rows),
            tuple(dict.fromkeys(flags.get(r.email.lower(), []) + flags.get(r.key, []))),
        )
        for r in cleaned.recipients
    }


def _listed(text: str, path: Path, folder: Path) -> Attention:
    try:
        href = Path(os.path.relpath(path, folder)).as_posix()
    except ValueError:  # another drive: only an absolute link reaches it
        href = path.resolve().as_uri()
    return Attention(text, path.name, href)


@dataclass(frozen=True)
class MessageView:
    """One previewed message as its page shows it."""

    subject: str
    html_part: str | None
    text_part: str | None
    headers: list[tuple[str, str]]


def message_view(data: bytes) -> MessageView:
    """The parts and decoded headers of a message's exact bytes. Parsed with the plain
    compat32 policy: the default policy's header objects cost milliseconds a message, too
    much for a preview of a hundred thousand."""
    message = BytesParser(policy=policy.compat32).parsebytes(data)
    headers = [(name, _decoded(value)) for name, value in message.items()]
    return MessageView(
        _decoded(message.get("Subject", "")),
        _part(message, "text/html"),
        _part(message, "text/plain"),
        headers,
    )


def _decoded(value: object) -> str:
    """A header as a person reads it (encoded words decoded, folding undone)."""
    try:
        return str(make_header(decode_header(str(value)))).replace("\r\n", "").replace("\n", "")
    except (ValueError, LookupError, UnicodeError):
        return str(value)


def _part(message: Message, kind: str) -> str | None:
    """The first part of that type that is not an attachment, as text."""
    for part in message.walk():
        if part.get_content_type() != kind or part.get_content_disposition() == "attachment":
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            return None
        charset = part.get_content_charset() or "utf-8"
        try:
            return payload.decode(charset, errors="replace")
        except LookupError:
            return payload.decode("utf-8", errors="replace")
    return None
