"""The anatomy of a bounce: its own text, its delivery-status report, the message it returns.

A bounce is read with the ``compat32`` policy: it keeps header values as the sender wrote
them and never raises when a header is malformed, which matters more here than the
convenience of the modern header objects. Everything decoded is decoded with
``errors="replace"``: a bounce is read for what it says, not validated.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from email.header import Header, decode_header
from email.message import Message
from email.parser import BytesHeaderParser

_STATUS_TYPES = {"message/delivery-status", "message/global-delivery-status"}
_RETURNED_TYPES = {"message/rfc822", "message/global"}
_HEADERS_TYPES = {"text/rfc822-headers", "message/global-headers"}
_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)$")
_XTEXT = re.compile(r"\+([0-9A-Fa-f]{2})")
_UNICODE_ESCAPE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")
_MESSAGE_ID = re.compile(r"<[^<>\s]+@[^<>\s]+>")
_LINE_TAG = re.compile(r"<(?:br|/p|/div|/tr|/li|/h\d)\b[^<>]*>", re.IGNORECASE)
_TAG = re.compile(r"<[^<>]*>")
_MAX_PARTS = 200  # a bounce has a handful; a bomb of nested parts is cut here


@dataclass(frozen=True)
class Report:
    """What a bounce says about one recipient, before it is classified."""

    address: str | None
    action: str  # "failed", "delayed", ... ("failed" when a text bounce implies it)
    status: str | None  # enhanced status code as written, e.g. "5.1.1"
    diagnostic: str  # the remote server's words, on one line


@dataclass
class Layout:
    """The parts of a bounce that parsing needs, found by one walk over its MIME tree."""

    text: list[str] = field(default_factory=list)  # the bounce's own human-readable parts
    status_blocks: list[dict[str, str]] = field(default_factory=list)  # RFC 3464 field groups
    returned: list[Message] = field(default_factory=list)  # returned message or its headers


def decoded(value: object) -> str:
    """A header value as text: RFC 2047 words decoded, raw 8-bit read as UTF-8."""
    if value is None:
        return ""
    try:
        chunks = decode_header(value if isinstance(value, Header | str) else str(value))
    except Exception:  # a malformed encoded word: show it as written
        return str(value)
    return "".join(_chunk_text(text, charset) for text, charset in chunks)


def _chunk_text(text: bytes | str, charset: str | None) -> str:
    """One decoded-header chunk, whatever charset (or none) it claims."""
    if isinstance(text, str):
        return text
    for candidate in (charset, "utf-8"):
        if candidate and candidate != "unknown-8bit":
            try:
                return text.decode(candidate)
            except (LookupError, UnicodeDecodeError):
                continue
    return text.decode("utf-8", "replace")


def header(msg: Message, name: str) -> str:
    """The first value of a header, decoded; empty when absent."""
    return decoded(msg.get(name)).strip()


def headers(msg: Message, name: str) -> list[str]:
    """Every value of a header, decoded (Delivered-To and friends repeat)."""
    return [decoded(value).strip() for value in msg.get_all(name) or []]


def part_text(part: Message) -> str:
    """A leaf part's body as text, in its declared charset or else UTF-8, never failing."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        text = payload.decode(charset, "replace")
    except LookupError:
        text = payload.decode("utf-8", "replace")
    return text.replace("\r\n", "\n")


def layout(msg: Message) -> Layout:
    """Walk the bounce without descending into the message it returns."""
    found = Layout()
    stack, seen = [msg], 0
    while stack and seen < _MAX_PARTS:
        part, seen = stack.pop(), seen + 1
        ctype = part.get_content_type()
        if ctype in _STATUS_TYPES:
            found.status_blocks.extend(_status_blocks(part))
        elif ctype in _RETURNED_TYPES | _HEADERS_TYPES:
            found.returned.extend(_returned(part))
        elif part.is_multipart():
            stack.extend(reversed([p for p in part.get_payload() if isinstance(p, Message)]))
        elif ctype == "text/plain" or (ctype == "text/html" and not found.text):
            text = part_text(part)
            found.text.append(html_text(text) if ctype == "text/html" else text)
    return found


def html_text(markup: str) -> str:
    """An HTML-only bounce as plain lines, so its addresses sit on lines of their own."""
    return html.unescape(_TAG.sub(" ", _LINE_TAG.sub("\n", markup)))


def _status_blocks(part: Message) -> list[dict[str, str]]:
    """Field groups of a delivery-status part, however the parser split it."""
    payload = part.get_payload()
    if not isinstance(payload, list):
        return text_blocks(part_text(part))
    blocks = []
    for block in payload:  # message/delivery-status: one Message per group of fields
        if isinstance(block, Message):
            blocks.append({name.lower(): decoded(value).strip() for name, value in block.items()})
            rest = block.get_payload(decode=True)  # bytes: raw UTF-8 survives
            if isinstance(
                rest, bytes
            ):  # message/global-delivery-status: the groups after the first
                blocks.extend(text_blocks(rest.decode("utf-8", "replace")))
    return [b for b in blocks if b]


def text_blocks(text: str) -> list[dict[str, str]]:
    """'Name: value' groups separated by blank lines, with folded lines unfolded."""
    blocks: list[dict[str, str]] = [{}]
    last = ""
    for line in text.splitlines():
        if not line.strip():
            blocks.append({})
        elif line[0] in " \t" and last in blocks[-1]:
            blocks[-1][last] += " " + line.strip()
        elif match := _FIELD.match(line):
            last = match[1].lower()
            blocks[-1][last] = match[2].strip()
    return [b for b in blocks if b]


def _returned(part: Message) -> list[Message]:
    """The returned message (or just its headers) carried by one part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    raw = part.get_payload(decode=True)
    return [BytesHeaderParser().parsebytes(raw)] if isinstance(raw, bytes) else []


def report(block: dict[str, str]) -> Report | None:
    """One per-recipient group of a delivery-status report; None for the per-message group."""
    recipient = block.get("original-recipient") or block.get("final-recipient")
    if recipient is None and "action" not in block:
        return None
    return Report(
        address=address_field(recipient) if recipient else None,
        action=block.get("action", "failed").split("(")[0].strip().lower(),
        status=_status_field(block.get("status", "")),
        diagnostic=one_line(_typed_value(block.get("diagnostic-code", ""))),
    )


def address_field(value: str) -> str | None:
    """'rfc822; a@b' or 'utf-8; jürgen@b' -> the address, xtext and \\x{...} decoded."""
    kind, _, address = value.partition(";") if ";" in value else ("rfc822", "", value)
    address = address.strip().strip("<>").strip()
    if kind.strip().lower() == "rfc822":
        address = _XTEXT.sub(lambda m: chr(int(m[1], 16)), address)
    address = _UNICODE_ESCAPE.sub(lambda m: _codepoint(m[1]), address)
    return address or None


def _codepoint(hexdigits: str) -> str:
    """A \\x{HHHH} escape as its character; invalid code points are kept as written."""
    value = int(hexdigits, 16)
    return chr(value) if value <= 0x10FFFF else f"\\x{{{hexdigits}}}"


def _status_field(value: str) -> str | None:
    """'5.1.1 (user unknown)' -> '5.1.1'."""
    code = value.split(" ")[0].strip()
    return code or None


def _typed_value(value: str) -> str:
    """'smtp; 550 ...' -> '550 ...': drop the diagnostic type."""
    kind, sep, rest = value.partition(";")
    return rest if sep and re.fullmatch(r"[A-Za-z][\w-]*", kind.strip()) else value


def one_line(text: str) -> str:
    """Whitespace collapsed, trimmed, and capped so a ledger row stays small."""
    return " ".join(text.split())[:1000]


def message_ids(value: str) -> list[str]:
    """Every '<id@host>' in a header value (References holds several)."""
    return _MESSAGE_ID.findall(value)
