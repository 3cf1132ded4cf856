"""The anatomy of a bounce: its own text, its delivery-status report, the message it returns.

A bounce is read with the ``compat32`` policy: it keeps header values as the sender wrote
them and never raises when a header is malformed, which matters more here than the
convenience of the modern header objects. Everything decoded is decoded with
``errors="replace"``: a bounce is read for what it says, not validated.
"""

from __future__ import annotations

import base64
import binascii
import html
import itertools
import quopri
import re
from collections import Counter
from dataclasses import dataclass, field
from email import policy
from email.header import Header, decode_header
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser

from notify.replies import is_status_code

_STATUS_TYPES = {"message/delivery-status", "message/global-delivery-status"}
_RETURNED_TYPES = {"message/rfc822", "message/global"}
_HEADERS_TYPES = {"text/rfc822-headers", "message/global-headers"}
_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)$")
_XTEXT = re.compile(r"\+([0-9A-Fa-f]{2})")
_UNICODE_ESCAPE = re.compile(r"\\x\{([0-9A-Fa-f]{1,6})\}")
_ENHANCED = re.compile(r"(?<![\w.])#?([245]\.\d{1,3}\.\d{1,3})(?!\.?\d)")
_MESSAGE_ID = re.compile(r"<[^<>\s]+@[^<>\s]+>")
_LINE_TAG = re.compile(r"<(?:br|/p|/div|/tr|/li|/h\d)\b[^<>]*>", re.IGNORECASE)
_TAG = re.compile(r"<[^<>]*>")
_MAX_PARTS = 200  # a bounce has a handful; a bomb of nested parts is cut here
_MAX_HEADER = 20_000  # characters of a header value read; a longer one is an attack
_MAX_STATUS = 200_000  # characters of a delivery-status part read (a few hundred groups)
_BOUNDARY_LINE = re.compile(r"^--([^\s]{1,70}?)(?:--)?[ \t]*$", re.MULTILINE)
# Fields that open one recipient's group of a delivery-status report.
_RECIPIENT_FIELDS = ("original-recipient", "final-recipient")
_TRANSFER_ENCODINGS = ("base64", "quoted-printable")
_REPLY_LINE = re.compile(r"^[45]\d\d[ -]")


@dataclass(frozen=True)
class Report:
    """What a bounce says about one recipient, before it is classified."""

    address: str | None
    action: str  # "failed", "delayed", ... ("failed" when a text bounce implies it)
    status: str | None  # enhanced status code as written, e.g. "5.1.1"
    diagnostic: str  # the remote server's words, on one line
    context: str = ""  # what the bounce's own text says about this recipient, on one line
    diagnostic_type: str = ""  # "smtp", "x-unix" (a local program), ... lower-cased


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
    value = msg.get(name)
    return decoded(str(value)[:_MAX_HEADER] if value is not None else None).strip()


def headers(msg: Message, name: str) -> list[str]:
    """Every value of a header, decoded (Delivered-To and friends repeat)."""
    return [decoded(str(value)[:_MAX_HEADER]).strip() for value in msg.get_all(name) or []]


def lf_lines(text: str) -> str:
    """Text with LF line ends, whatever it was sent with (CRLF, or a lone CR)."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


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
    return lf_lines(text)


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
        elif part.get_content_maintype() == "multipart" and (repaired := _repaired(part)):
            stack.append(repaired)
        elif ctype == "text/html" and not found.text:
            found.text.append(html_text(part_text(part)))
        elif ctype != "text/html" and part.get_content_maintype() in ("text", "multipart"):
            found.text.append(part_text(part))  # text, or a multipart whose boundary is lost
    return found


def _repaired(part: Message) -> Message | None:
    """A multipart whose declared boundary never appears, split on the one its body uses."""
    body = part.get_payload()
    if not isinstance(body, str):
        return None
    lines = itertools.islice(_BOUNDARY_LINE.finditer(body), _MAX_PARTS * 5)
    seen = Counter(m[1] for m in lines if m[1].strip("-"))
    boundary = next((b for b, n in seen.most_common(1) if n >= 2), None)
    if boundary is None or boundary == part.get_boundary():
        return None
    head = f'Content-Type: {part.get_content_type()}; boundary="{boundary}"\n\n'
    cut = [m.start() for m in itertools.islice(_BOUNDARY_LINE.finditer(body), _MAX_PARTS)]
    body = body[: cut[-1]] if len(cut) == _MAX_PARTS else body  # no more parts than layout reads
    data = (head + body).encode("utf-8", "surrogateescape")
    try:
        repaired = BytesParser(policy=policy.compat32).parsebytes(data)
    except RecursionError:  # parts nested deeper than Python's stack: read it as text
        return None
    return repaired if repaired.is_multipart() else None


def html_text(markup: str) -> str:
    """An HTML-only bounce as plain lines, so its addresses sit on lines of their own."""
    return html.unescape(_TAG.sub(" ", _LINE_TAG.sub("\n", markup)))


def _status_blocks(part: Message) -> list[dict[str, str]]:
    """Field groups of a delivery-status part, however the parser split or encoded it."""
    return text_blocks(_status_text(part)[:_MAX_STATUS])


def _status_text(part: Message) -> str:
    """A delivery-status part as the text it was sent as: fields, blank lines, decoded."""
    payload = part.get_payload()
    if not isinstance(payload, list):
        return part_text(part)
    chunks = []
    for block in payload:  # the parser made one Message per group of fields
        if isinstance(block, Message):
            lines = [f"{name}: {_raw(value)}" for name, value in block.items()]
            rest = block.get_payload(decode=True)  # bytes: raw UTF-8 survives
            if isinstance(rest, bytes):  # the groups after the first, or an encoded body
                lines.append(rest.decode("utf-8", "replace"))
            chunks.append("\n".join(lines))
    text = lf_lines("\n\n".join(chunks))
    encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    return _transfer_decoded(text, encoding) if encoding in _TRANSFER_ENCODINGS else text


def _raw(value: object) -> str:
    """A header value as written (raw 8-bit read as UTF-8), encoded words left alone."""
    text = str(value)
    try:
        return text.encode("ascii", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return text


def _transfer_decoded(text: str, encoding: str) -> str:
    """A base64 or quoted-printable delivery-status body, decoded; as it is if it is not."""
    data = text.encode("ascii", "replace")
    try:
        raw = base64.b64decode(data) if encoding == "base64" else quopri.decodestring(data)
    except (binascii.Error, ValueError):
        return text
    return lf_lines(raw.decode("utf-8", "replace"))


def text_blocks(text: str) -> list[dict[str, str]]:
    """'Name: value' groups, folded lines unfolded; a group ends at a blank line or where a
    recipient field repeats (some servers write the groups without blank lines between)."""
    blocks: list[dict[str, str]] = [{}]
    last = ""
    for line in text.splitlines():
        if not line.strip():
            blocks.append({})
        elif (line[0] in " \t" or _continues_reply(last, line)) and last in blocks[-1]:
            blocks[-1][last] += " " + line.strip()
        elif match := _FIELD.match(line):
            last = match[1].lower()
            if last in _RECIPIENT_FIELDS and _opens_group(blocks[-1], last):
                blocks.append({})
            blocks[-1].setdefault(last, match[2].strip())
    return [b for b in blocks if b]


def _continues_reply(name: str, line: str) -> bool:
    """A multi-line reply ("550-...", "550 ...") written into Diagnostic-Code unfolded."""
    return name == "diagnostic-code" and _REPLY_LINE.match(line) is not None


def _opens_group(block: dict[str, str], name: str) -> bool:
    """A recipient field starts a new group when the current one already has it, or already
    has the fields that follow a recipient (Status, Diagnostic-Code)."""
    later = "status" in block or "diagnostic-code" in block
    return name in block or (later and any(f in block for f in _RECIPIENT_FIELDS))


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
    diagnostic = block.get("diagnostic-code", "") or _comment(block.get("status", ""))
    return Report(
        address=address_field(recipient) if recipient else None,
        action=block.get("action", "failed").split("(")[0].strip().lower() or "failed",
        status=_status_field(block.get("status", "")),
        diagnostic=one_line(_typed_value(diagnostic)),
        diagnostic_type=diagnostic.partition(";")[0].strip().lower() if ";" in diagnostic else "",
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


def _comment(status: str) -> str:
    """'4.0.0 (example.net: host name lookup failure)' -> the words in parentheses."""
    _, paren, rest = status.partition("(")
    return rest.rstrip(") ") if paren else ""


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


def preferred_status(written: str | None, diagnostic: str) -> str | None:
    """The report's status, or the reply's enhanced code where it says more.

    A "Status:" of x.0.0 or x.y.0 says only "failed"; 4.4.7 (expired) and 4.7.0 hide the
    refusal that caused them; x.5.x and 5.3.x describe the protocol, not the cause; 5.1.1
    is what some servers write for any refusal at RCPT TO. The reply's basic code (4xx or
    5xx) settles a disagreement about permanence."""
    said = _said(diagnostic)
    if not said or said == written:
        return written or said
    if not written or not is_status_code(written):
        return said
    basic = diagnostic.lstrip(" #")[:1]
    if written[0] != said[0] and basic in "45":
        return said if said[0] == basic else written
    if _vagueness(written) != _vagueness(said):
        return said if _vagueness(said) < _vagueness(written) else written
    hiding = written in ("4.4.7", "5.4.7", "4.7.0", "5.1.1") or written.startswith(("5.3.", "4.3."))
    return said if hiding or written[1:4] == ".5." else written


def _said(diagnostic: str) -> str | None:
    """The most telling enhanced code in a reply: the first specific one, not 'expired'."""
    codes = enhanced_codes(diagnostic[:1000])
    return min(codes, key=lambda c: (_vagueness(c), c[1:] == ".4.7"), default=None)


def _vagueness(status: str) -> int:
    """2 for '5.0.0' (only 'permanent'), 1 for '5.1.0' (only 'an address'), else 0."""
    return 2 if status.endswith(".0.0") else 1 if status.endswith(".0") else 0


def enhanced_codes(text: str) -> list[str]:
    """Every enhanced status code (RFC 3463) of class 4 or 5 in a piece of text, in order."""
    return [m[1] for m in _ENHANCED.finditer(text) if m[1][0] in "45"]


def enhanced(text: str) -> str | None:
    """The first enhanced status code (RFC 3463) of class 4 or 5 in a piece of text."""
    return next(iter(enhanced_codes(text[:5000])), None)


def message_ids(value: str) -> list[str]:
    """Every '<id@host>' in a header value (References holds several)."""
    return _MESSAGE_ID.findall(value)
