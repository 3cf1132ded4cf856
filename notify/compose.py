"""Build each recipient's MIME message as bytes, with headers no field can break.

The Message-ID depends only on the incident and the recipient, so a message re-sent
after a crash carries the same id and a receiving system can tell it is the same one.
A line break or tab in a header value becomes one space, as a mail reader unfolding the
header would show it; any other control character is refused. Headers are folded (RFC
5322) and encoded (RFC 2047) so no line passes 78 characters where it can be folded.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.utils import format_datetime, getaddresses
from typing import TYPE_CHECKING

from email_validator import EmailNotValidError, validate_email

from notify.attachments import Attachments, Part, mixed
from notify.errors import HeaderError, ManifestError
from notify.models import Recipient, Rendered

if TYPE_CHECKING:
    from notify.signing import Signer

INCIDENT_HEADER = "X-Notify-Incident"
# Control characters, and the Unicode line breaks that str.splitlines() (and so the email
# package) treats as line ends: any of them in a header could start a new header.
_UNSAFE_HEADER_CHARS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
# What a mail reader unfolds into a space: line breaks and tabs (a run of them, with the
# spaces around it, is one space). The other control characters are refused.
HEADER_BREAKS = re.compile(r" *[\r\n\t\u2028\u2029][ \r\n\t\u2028\u2029]*")
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_ATOMS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?: [A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_LINE = 78  # RFC 5322's line length, where a header can be folded to keep it
_FOLD_AT = _LINE - len("Subject: ")  # a subject this short is one line as it is
_WORD_BYTES = 42  # 42 bytes -> 56 base64 chars -> a 68-character encoded word
# Text that looks like an RFC 2047 encoded word is itself encoded, or a mail reader would
# decode it into whatever the export's author chose (line breaks included).
_ENCODED_WORD_START = "=?"
_DATE_FIELD = b"\r\nDate: "  # where a spooled message's date is rewritten


@dataclass(frozen=True)
class Outgoing:
    """One message ready for a transport: envelope and exact bytes."""

    key: str  # the recipient's ledger key
    envelope_from: str
    to: str
    message_id: str
    data: bytes
    row: int  # first source row, for error lines
    subject: str = ""  # as rendered, for previews and reports (the header may be encoded)


@dataclass(frozen=True)
class OutgoingWithFiles(Outgoing):
    """A message that carries files (a subclass: a message without costs nothing more)."""

    attachments: tuple[str, ...] = ()  # the files' names, for previews


def recipient_token(incident_id: str, key: str) -> str:
    """A stable, opaque id for one recipient of one incident (Message-ID and VERP)."""
    return hashlib.sha256(f"{incident_id}\x00{key}".encode()).hexdigest()[:24]


def parse_sender(value: str, *, where: str) -> Address:
    """'Name <addr>' -> Address, refusing anything that is not one valid address."""
    if _UNSAFE_HEADER_CHARS.search(value):
        raise ManifestError(f"{where}: from holds a line break or control character; fix it")
    pairs = getaddresses([value])
    if len(pairs) > 1:
        raise ManifestError(
            f"{where}: from = {value!r} is not one address; write it like "
            '"Acme Support <support@acme.example>", with a name holding a comma in quotes'
        )
    name, addr = pairs[0] if pairs else ("", "")
    try:
        valid = validate_email(addr, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ManifestError(
            f"{where}: from = {value!r} is not a valid address ({exc}); "
            'write it like "Acme Support <support@acme.example>"'
        ) from exc
    # An internationalised domain goes out in its ASCII form, as recipients' do.
    local, _, domain = (valid.ascii_email or valid.normalized).rpartition("@")
    return Address(display_name=name, username=local, domain=domain)


class Composer:
    """Builds every message of one incident the same way."""

    def __init__(
        self,
        *,
        incident_id: str,
        sender: Address,
        reply_to: Address | None,
        return_path: str | None,
        attachments: Attachments | None = None,
        signer: Signer | None = None,
    ) -> None:
        self.incident_id = incident_id
        self.attachments = attachments  # None: no message carries a file
        self.signer = signer  # None: messages are not DKIM-signed
        self.sender = sender
        self.reply_to = reply_to
        self.return_path = return_path
        self.domain = sender.domain
        self._from_header = (
            f"From: {format_address(sender.display_name, sender.addr_spec, header='From')}"
        )
        self._reply_to_header = (
            [
                "Reply-To: "
                + format_address(reply_to.display_name, reply_to.addr_spec, header="Reply-To")
            ]
            if reply_to
            else []
        )

    def message_id(self, key: str, *, token: str | None = None) -> str:
        """The same for the same incident and recipient on every run: a re-send after a
        crash is recognisably the same message."""
        token = token or recipient_token(self.incident_id, key)
        return f"<{token}.{self.incident_id}@{self.domain}>"

    def test_message_id(self) -> str:
        """A Message-ID of its own for a test send, marked as one, on the From domain."""
        return f"<test-{secrets.token_hex(12)}.{self.incident_id}@{self.domain}>"

    def envelope_from(self, key: str) -> str:
        """The return path; 'bounces@x' becomes 'bounces+TOKEN@x' so bounces name a recipient."""
        if not self.return_path:
            return self.sender.addr_spec
        local, _, domain = self.return_path.rpartition("@")
        return f"{local}+{recipient_token(self.incident_id, key)}@{domain}"

    def compose(
        self, rendered: Rendered, *, when: datetime | None = None, test: bool = False
    ) -> Outgoing:
        """One recipient's message, refusing any header value that could break the header.

        A `test` message (a test send) has its own Message-ID and a return path without
        the recipient's token: nothing that comes back for it can touch the customer."""
        recipient = rendered.recipient
        name, subject = self._header_values(rendered)
        message_id = self.test_message_id() if test else self.message_id(recipient.key)
        headers = [
            self._from_header,
            f"To: {format_address(name, recipient.email, header='To')}",
            *self._reply_to_header,
            f"Subject: {encode_unstructured(subject)}",
            f"Date: {_date(when)}",
            f"Message-ID: {message_id}",
            "Auto-Submitted: auto-generated",
            f"{INCIDENT_HEADER}: {self.incident_id}",
            "MIME-Version: 1.0",
        ]
        parts = () if self.attachments is None else self.attachments.parts(recipient)
        data = _assemble(headers, rendered.text, rendered.html, self._boundary(message_id), parts)
        if self.signer is not None:
            data = self.signer.sign(data)
        built = (
            recipient.key,
            self.return_path or self.sender.addr_spec
            if test
            else self.envelope_from(recipient.key),
            recipient.email,
            message_id,
            data,
            recipient.first_row,
            subject,
        )
        if not parts:
            return Outgoing(*built)
        return OutgoingWithFiles(*built, tuple(part.name for part in parts))

    def rebuilt(
        self, recipient: Recipient, data: bytes, *, when: datetime | None = None
    ) -> Outgoing | None:
        """The message for `data` built earlier for this recipient (see spool.py), dated
        now, or None when the bytes do not carry the recipient's own Message-ID: one
        customer's message must never go to another, whatever happened to the bytes."""
        message_id = self.message_id(recipient.key)
        header_end = data.find(b"\r\n\r\n")
        if f"\r\nMessage-ID: {message_id}\r\n".encode() not in data[:header_end]:
            return None
        if self.signer is not None:  # the signature covers Date: it keeps the signed one
            return Outgoing(
                key=recipient.key,
                envelope_from=self.envelope_from(recipient.key),
                to=recipient.email,
                message_id=message_id,
                data=data,
                row=recipient.first_row,
            )
        # The check may have built it long ago (an operator thinking before saying yes);
        # Date says when it was sent. Every date is formatted to the same width.
        date = _date(when).encode()
        start = data.find(_DATE_FIELD, 0, header_end) + len(_DATE_FIELD)
        end = start + len(date)
        if start < len(_DATE_FIELD) or data[end : end + 2] != b"\r\n":
            return None
        return Outgoing(
            key=recipient.key,
            envelope_from=self.envelope_from(recipient.key),
            to=recipient.email,
            message_id=message_id,
            data=b"".join((data[:start], date, data[end:])),
            row=recipient.first_row,
        )

    def validate(self, rendered: Rendered) -> tuple[str, str]:
        """Refuse a header value that could break the header (Promise 4) and a file that
        cannot be attached, without building the message: all a check needs. Returns the
        display name and subject as they go into headers."""
        values = self._header_values(rendered)
        if self.attachments is not None:
            self.attachments.check(rendered.recipient)
        return values

    def _header_values(self, rendered: Rendered) -> tuple[str, str]:
        """The display name and subject with line breaks and tabs folded into a space;
        refuses a control character that could break the header."""
        recipient = rendered.recipient
        name, subject = str(recipient.fields.get("name", "")), rendered.subject
        if name.isprintable() and subject.isprintable():  # nearly always: nothing to fold
            return name, subject
        values = header_text(name), header_text(subject)
        for label, value, fix in zip(("name", "subject"), values, _FIXES, strict=True):
            found = _CONTROL_CHARS.search(value)
            if found:
                raise HeaderError(
                    f"{recipient.where()}: the {label} holds the control character "
                    f"U+{ord(found[0]):04X}; {fix}"
                )
        return values

    def _boundary(self, message_id: str) -> str:
        # '=' never survives quoted-printable encoding, so no body line can equal this.
        return f"=_notify_{hashlib.sha1(message_id.encode()).hexdigest()[:20]}=_"


_FIXES = ("remove it from the export", "remove it from the export or the template")


def header_text(value: str) -> str:
    """A value as a mail reader shows it in a header: each run of line breaks and tabs
    one space (the body keeps the value as it is)."""
    if value.isprintable():  # nearly always: no line break, tab or control character
        return value
    return HEADER_BREAKS.sub(" ", value).strip(" ")


def format_address(name: str, address: str, *, header: str) -> str:
    """A mailbox for `header`: bare, a phrase, a quoted string, or RFC 2047 encoded words,
    folded to RFC 5322's line length."""
    if not name:
        return address
    indent = len(header) + 2  # "To: "
    if name.isascii() and _ENCODED_WORD_START not in name:
        if _ATOMS.fullmatch(name):
            mailbox = f"{name} <{address}>"
        else:
            mailbox = '"{}" <{}>'.format(name.replace("\\", "\\\\").replace('"', '\\"'), address)
        if indent + len(mailbox) <= _LINE:
            return mailbox
        folded, widest = _fold(indent, mailbox.split(" "))
        if widest <= _LINE:
            return folded
    # Encoded words fold anywhere; the address, if long, is a line of its own.
    return _fold(indent, [*_encoded_words(name), f"<{address}>"])[0]


@functools.lru_cache(maxsize=1024)
def encode_unstructured(value: str) -> str:
    """A Subject-like value, encoded and folded to RFC 5322's line length."""
    if value.isascii() and _ENCODED_WORD_START not in value:
        if len(value) <= _FOLD_AT:
            return value
        folded, widest = _fold(len("Subject: "), value.split(" "))
        if widest <= _LINE:  # else a word too long for any line: encoded words
            return folded
    return _fold(len("Subject: "), _encoded_words(value))[0]


def _fold(indent: int, pieces: list[str]) -> tuple[str, int]:
    """The pieces joined by spaces, a space turned into CRLF + space wherever the line
    would pass 78 characters (unfolding gives the text back), and the widest line."""
    lines, width = [pieces[0]], indent + len(pieces[0])
    widest = width
    for piece in pieces[1:]:
        if piece and width + 1 + len(piece) > _LINE:  # never a line of spaces only
            lines.append(piece)
            width = 1 + len(piece)
        else:
            lines[-1] += " " + piece
            width += 1 + len(piece)
        widest = max(widest, width)
    return "\r\n ".join(lines), widest


def _encoded_words(text: str) -> list[str]:
    """Base64 encoded words (safe in a phrase, unlike Q), each under 76 characters."""
    words, chunk = [], b""
    for char in text:
        encoded = char.encode("utf-8")
        if len(chunk) + len(encoded) > _WORD_BYTES:
            words.append(chunk)
            chunk = b""
        chunk += encoded
    words.append(chunk)
    return [f"=?utf-8?b?{base64.b64encode(w).decode()}?=" for w in words]


def _quoted_printable(text: str) -> bytes:
    lines = text.replace("\r\n", "\n").replace("\r", "\n")
    return binascii.b2a_qp(lines.encode("utf-8"), istext=True).replace(b"\n", b"\r\n")


def _part(subtype: str, text: str) -> bytes:
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    ).encode() + _quoted_printable(text)


def _assemble(
    headers: list[str], text: str, html: str | None, boundary: str, parts: Sequence[Part] = ()
) -> bytes:
    """Headers plus the body entity, inside multipart/mixed when files are attached."""
    head = ("\r\n".join(headers) + "\r\n").encode()
    if parts:
        entity = _entity(b"", text, html, boundary)
        mixed_boundary = boundary.replace("=_notify_", "=_notify_mixed_", 1)
        return b"".join([head, *mixed(entity, parts, mixed_boundary)])
    return b"".join(_entity(head, text, html, boundary))


def _entity(head: bytes, text: str, html: str | None, boundary: str) -> list[bytes]:
    """`head`, then a text part or multipart/alternative with text first, then HTML: the
    pieces of one join."""
    if html is None:
        body = _part("plain", text)
        # The data must end with CRLF; adding one to a text that has it adds a blank line.
        return [head, body] if body.endswith(b"\r\n") else [head, body, b"\r\n"]
    delimiter = f"\r\n--{boundary}\r\n".encode()
    return [
        head,
        f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n\r\n'.encode(),
        delimiter[2:],
        _part("plain", text),
        delimiter,
        _part("html", html),
        f"\r\n--{boundary}--\r\n".encode(),
    ]


_date_cache: dict[int, str] = {}


def _date(when: datetime | None) -> str:
    """RFC 5322 date, cached per second: formatting it is a visible cost at 10,000/s."""
    if when is not None:
        return format_datetime(when)
    second = int(time.time())
    cached = _date_cache.get(second)
    if cached is None:
        _date_cache.clear()
        cached = _date_cache[second] = format_datetime(datetime.fromtimestamp(second, UTC))
    return cached
