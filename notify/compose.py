"""Build each recipient's MIME message as bytes, with headers no field can break.

The Message-ID depends only on the incident and the recipient, so a message re-sent
after a crash carries the same id and a receiving system can tell it is the same one.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
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
_ATOMS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]+")  # a phrase that needs no quoting
_FOLD_AT = 68  # "Subject: " + this stays under 78 characters
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
        self._from_header = f"From: {format_address(sender.display_name, sender.addr_spec)}"
        self._reply_to_header = (
            [f"Reply-To: {format_address(reply_to.display_name, reply_to.addr_spec)}"]
            if reply_to
            else []
        )

    def message_id(self, key: str, *, token: str | None = None) -> str:
        """The same for the same incident and recipient on every run: a re-send after a
        crash is recognisably the same message."""
        token = token or recipient_token(self.incident_id, key)
        return f"<{token}.{self.incident_id}@{self.domain}>"

    def envelope_from(self, key: str) -> str:
        """The return path; 'bounces@x' becomes 'bounces+TOKEN@x' so bounces name a recipient."""
        if not self.return_path:
            return self.sender.addr_spec
        local, _, domain = self.return_path.rpartition("@")
        return f"{local}+{recipient_token(self.incident_id, key)}@{domain}"

    def compose(self, rendered: Rendered, *, when: datetime | None = None) -> Outgoing:
        """One recipient's message, refusing any header value that could break the header."""
        recipient = rendered.recipient
        name = self._checked_name(rendered)
        message_id = self.message_id(recipient.key)
        headers = [
            self._from_header,
            f"To: {format_address(name, recipient.email)}",
            *self._reply_to_header,
            f"Subject: {encode_unstructured(rendered.subject)}",
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
            self.envelope_from(recipient.key),
            recipient.email,
            message_id,
            data,
            recipient.first_row,
            rendered.subject,
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

    def validate(self, rendered: Rendered) -> str:
        """Refuse a header value that could break the header (Promise 4) and a file that
        cannot be attached, without building the message: all a check needs. Returns the
        display name."""
        name = self._checked_name(rendered)
        if self.attachments is not None:
            self.attachments.check(rendered.recipient)
        return name

    def _checked_name(self, rendered: Rendered) -> str:
        recipient = rendered.recipient
        name = str(recipient.fields.get("name", ""))
        for label, value in (("subject", rendered.subject), ("name", name)):
            if _UNSAFE_HEADER_CHARS.search(value):
                raise HeaderError(
                    f"{recipient.where()}: the {label} holds a line break or control "
                    "character; remove it from the export (or the template)"
                )
        return name

    def _boundary(self, message_id: str) -> str:
        # '=' never survives quoted-printable encoding, so no body line can equal this.
        return f"=_notify_{hashlib.sha1(message_id.encode()).hexdigest()[:20]}=_"


def format_address(name: str, address: str) -> str:
    """A mailbox for a header: bare, a phrase, a quoted string, or RFC 2047 encoded words."""
    if not name:
        return address
    if not name.isascii() or _ENCODED_WORD_START in name:
        return f"{_encoded_words(name)} <{address}>"
    if _ATOMS.fullmatch(name):
        return f"{name} <{address}>"
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{quoted}" <{address}>'


@functools.lru_cache(maxsize=1024)
def encode_unstructured(value: str) -> str:
    """A Subject-like value, encoded and folded to RFC 5322's line length."""
    if not value.isascii() or _ENCODED_WORD_START in value:
        return _encoded_words(value)
    if len(value) <= _FOLD_AT:
        return value
    lines, line = [], ""
    for word in value.split(" "):  # fold at spaces: unfolding gives the same text back
        candidate = f"{line} {word}" if line else word
        if line and len(candidate) > _FOLD_AT:
            lines.append(line)
            line = word
        else:
            line = candidate
    lines.append(line)
    return "\r\n ".join(lines)


def _encoded_words(text: str) -> str:
    """Base64 encoded words (safe in a phrase, unlike Q), each under 76 characters."""
    words, chunk = [], b""
    for char in text:
        encoded = char.encode("utf-8")
        if len(chunk) + len(encoded) > _WORD_BYTES:
            words.append(chunk)
            chunk = b""
        chunk += encoded
    words.append(chunk)
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(w).decode()}?=" for w in words)


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
