"""Build each recipient's MIME message as bytes, with headers no field can break.

The Message-ID depends only on the incident and the recipient, so a message re-sent
after a crash carries the same id and a receiving system can tell it is the same one.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

from email_validator import EmailNotValidError, validate_email

from notify.errors import HeaderError, ManifestError
from notify.models import Rendered

INCIDENT_HEADER = "X-Notify-Incident"
# Control characters, and the Unicode line breaks that str.splitlines() (and so the email
# package) treats as line ends: any of them in a header could start a new header.
_UNSAFE_HEADER_CHARS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


@dataclass(frozen=True)
class Outgoing:
    """One message ready for a transport: envelope and exact bytes."""

    key: str  # the recipient's ledger key
    envelope_from: str
    to: str
    message_id: str
    data: bytes
    row: int  # first source row, for error lines


def recipient_token(incident_id: str, key: str) -> str:
    """A stable, opaque id for one recipient of one incident (Message-ID and VERP)."""
    return hashlib.sha256(f"{incident_id}\x00{key}".encode()).hexdigest()[:24]


def parse_sender(value: str, *, where: str) -> Address:
    """'Name <addr>' -> Address, refusing anything that is not one valid address."""
    if _UNSAFE_HEADER_CHARS.search(value):
        raise ManifestError(f"{where}: from holds a line break or control character; fix it")
    name, addr = parseaddr(value)
    try:
        valid = validate_email(addr, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ManifestError(
            f"{where}: from = {value!r} is not a valid address ({exc}); "
            'write it like "Acme Support <support@acme.example>"'
        ) from exc
    local, _, domain = valid.normalized.rpartition("@")
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
    ) -> None:
        self.incident_id = incident_id
        self.sender = sender
        self.reply_to = reply_to
        self.return_path = return_path
        self.domain = sender.domain

    def message_id(self, key: str) -> str:
        return f"<{recipient_token(self.incident_id, key)}.{self.incident_id}@{self.domain}>"

    def envelope_from(self, key: str) -> str:
        """The return path; 'bounces@x' becomes 'bounces+TOKEN@x' so bounces name a recipient."""
        if not self.return_path:
            return self.sender.addr_spec
        local, _, domain = self.return_path.rpartition("@")
        return f"{local}+{recipient_token(self.incident_id, key)}@{domain}"

    def compose(self, rendered: Rendered, *, when: datetime | None = None) -> Outgoing:
        """One recipient's message, refusing any header value that could break the header."""
        recipient = rendered.recipient
        name = str(recipient.fields.get("name", ""))
        for label, value in (("subject", rendered.subject), ("name", name)):
            if _UNSAFE_HEADER_CHARS.search(value):
                raise HeaderError(
                    f"{recipient.where()}: the {label} holds a line break or control "
                    "character; remove it from the export (or the template)"
                )
        local, _, domain = recipient.email.rpartition("@")
        message = EmailMessage(policy=policy.SMTP)
        message["From"] = self.sender
        message["To"] = Address(display_name=name, username=local, domain=domain)
        if self.reply_to:
            message["Reply-To"] = self.reply_to
        message["Subject"] = rendered.subject
        message["Date"] = format_datetime(when or datetime.now(UTC))
        message_id = self.message_id(recipient.key)
        message["Message-ID"] = message_id
        message["Auto-Submitted"] = "auto-generated"
        message[INCIDENT_HEADER] = self.incident_id
        message.set_content(rendered.text, cte="quoted-printable")
        if rendered.html is not None:
            message.add_alternative(rendered.html, subtype="html", cte="quoted-printable")
        return Outgoing(
            key=recipient.key,
            envelope_from=self.envelope_from(recipient.key),
            to=recipient.email,
            message_id=message_id,
            data=message.as_bytes(),
            row=recipient.first_row,
        )
