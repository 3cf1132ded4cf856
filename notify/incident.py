"""One incident loaded and checked: manifest, templates, cleaned recipients, composer.

Every verb starts here, so every verb sees the same recipients, the same messages and the
same fingerprints of what they are made of.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from notify import attachments, locales, signing
from notify.cleaning.addresses import normalise_address
from notify.cleaning.clean import clean
from notify.compose import Composer, Outgoing, parse_sender, recipient_token
from notify.errors import LedgerError, ManifestError
from notify.ledger import Ledger, Registration
from notify.manifest import Manifest, load_manifest
from notify.messages.spool import Spool
from notify.models import CleanResult, Recipient
from notify.rendering import Templates, incident_context, load_templates, render
from notify.settings import Settings
from notify.sources.load import load_sources
from notify.workspace import Context, Workspace

SIZE_CHUNK = 20  # messages built at a time to measure them, when the spool lacks them


@dataclass
class Incident:
    """An incident loaded, cleaned and ready to render: everything a verb needs."""

    context: Context
    manifest: Manifest
    cleaned: CleanResult
    templates: Templates
    composer: Composer
    template_context: dict[str, Any]  # incident-wide variables every template sees
    spool: Spool | None = None  # messages a send's check built, for the send to take
    languages: locales.Languages | None = None  # with [columns] language: who got which
    warnings: list[str] = field(default_factory=list)  # for the operator; nothing stops

    @property
    def incident_id(self) -> str:
        return self.manifest.incident_id

    @property
    def workspace(self) -> Workspace:
        return self.context.workspace

    @property
    def settings(self) -> Settings:
        return self.context.settings

    def outgoing(self, recipients: list[Recipient]) -> Iterator[Outgoing]:
        """Render and build lazily, so a million messages never sit in memory at once."""
        for recipient in recipients:
            yield self.composer.compose(render(self.templates, recipient, self.template_context))

    def recipient(self, key: str) -> Recipient:
        """The export's recipient for a key the ledger holds; a key the export lacks means
        the export changed since the incident was first sent."""
        return self.cleaned.recipients[self._position(key)]

    def spooled(self, key: str) -> Outgoing | None:
        """The message the check built for this recipient, when the spool still has it."""
        if self.spool is None:
            return None
        position = self._position(key)
        data = self.spool.get(position)
        if data is None:
            return None
        return self.composer.rebuilt(self.cleaned.recipients[position], data)

    def sizes(
        self,
        recipients: Sequence[Recipient],
        build: Callable[[Sequence[Recipient]], list[Outgoing]],
    ) -> Iterator[tuple[Recipient, int]]:
        """Each recipient's message size: the spooled bytes', else built again by `build`
        (only when files are attached: without, a message is a few kilobytes)."""
        missing = []
        for recipient in recipients:
            size = self.spool.length(self._position(recipient.key)) if self.spool else None
            if size is None:
                missing.append(recipient)
            else:
                yield recipient, size
        if self.composer.attachments is None:
            return
        for start in range(0, len(missing), SIZE_CHUNK):
            chunk = missing[start : start + SIZE_CHUNK]
            yield from zip(chunk, (len(m.data) for m in build(chunk)), strict=True)

    def customer(self, address: str) -> Recipient:
        """The recipient an operator names by address (--customer), or one clear error."""
        checked = normalise_address(address)
        position = None if isinstance(checked, str) else self._positions.get(checked[0])
        if position is None:
            raise ManifestError(
                f"--customer {address}: no recipient of incident {self.incident_id} has this "
                "address; give one from the export (see notify check's counts)"
            )
        return self.cleaned.recipients[position]

    def _position(self, key: str) -> int:
        position = self._positions.get(key)
        if position is None:
            raise LedgerError(
                f"the ledger holds {key} for incident {self.incident_id}, but the export "
                "does not; restore the export the incident was started with"
            )
        return position

    @functools.cached_property
    def _positions(self) -> dict[str, int]:
        return {r.key: position for position, r in enumerate(self.cleaned.recipients)}

    def open_ledger(self) -> Ledger:
        return self.context.ledger()

    def ledger_exists(self) -> bool:
        return self.context.ledger_exists()


def load_incident(
    context: Context, incident_id: str, *, allow_typo_domains: bool = False
) -> Incident:
    """Manifest, templates and data, all validated, or one clear error."""
    workspace, settings = context.workspace, context.settings
    manifest = load_manifest(workspace, incident_id)
    where = workspace.relative(manifest.path)
    sender_text = manifest.sender or settings.default_from
    if not sender_text:
        raise ManifestError(f'{where}: no from = "Name <address>" and no NOTIFY_FROM in .env')
    sender = parse_sender(sender_text, where=where)
    reply_to = parse_sender(manifest.reply_to, where=where) if manifest.reply_to else None
    signer, warnings = signing.load_signer(
        workspace.root, settings, from_domain=sender.domain, reply_to=reply_to is not None
    )
    label = f"templates/{manifest.template}"
    templates = load_templates(workspace.template_dir(manifest.template), label=label)
    cleaned = clean(  # handed straight over: cleaning frees the export once merged
        load_sources(
            manifest.sources, root=workspace.root, incident_id=incident_id, environ=context.environ
        ),
        columns=manifest.columns,
        items=attachments.with_item(manifest.columns, manifest.items),
        where=where,
        allow_typo_domains=allow_typo_domains,
        header_fields=templates.header_fields,
    )
    composer = Composer(
        incident_id=incident_id,
        sender=sender,
        reply_to=reply_to,
        return_path=settings.return_path,
        attachments=attachments.Attachments.load(
            workspace.root,
            manifest.attachments,
            manifest.columns.get(attachments.FIELD),
            where=where,
        ),
        signer=signer,
    )
    template_context = incident_context(incident_id, manifest.title, manifest.facts)
    languages = None
    if locales.FIELD in manifest.columns:
        templates, languages = locales.localised(
            templates, cleaned.recipients, label=label, load=load_templates
        )
    return Incident(
        context,
        manifest,
        cleaned,
        templates,
        composer,
        template_context,
        languages=languages,
        warnings=warnings,
    )


def fingerprints(incident: Incident) -> tuple[str, str]:
    """What the messages are made of: templates (with the manifest's wording), and data."""
    templates = hashlib.sha256()
    folder = incident.templates.folder
    for path in sorted(folder.rglob("*.j2")):  # language folders too
        templates.update(path.relative_to(folder).as_posix().encode())
        templates.update(b"\0" + path.read_bytes() + b"\0")
    manifest = incident.manifest
    wording = [manifest.title, manifest.sender, manifest.reply_to, manifest.facts]
    templates.update(json.dumps(wording, sort_keys=True, default=str).encode())
    files = incident.composer.attachments
    for part in files.shared if files else ():  # the files every message carries
        templates.update(b"\0" + hashlib.sha256(part.data).digest())
    data = hashlib.sha256()
    encode = json.JSONEncoder(sort_keys=True, default=str).encode  # json.dumps makes one a call
    for r in incident.cleaned.recipients:
        data.update(encode([r.key, r.fields, r.items]).encode())
    return templates.hexdigest(), data.hexdigest()


def registration(incident: Incident, recipient: Recipient) -> Registration:
    """What the ledger must know of a recipient before anything is sent to them."""
    token = recipient_token(incident.incident_id, recipient.key)
    return Registration(
        key=recipient.key,
        email=recipient.email,
        token=token,
        message_id=incident.composer.message_id(recipient.key, token=token),
        first_row=recipient.first_row,
        source=recipient.source,
        alt_email=alternate_of(recipient),
    )


def alternate_of(recipient: Recipient) -> str | None:
    """The export's alternate address (a column mapped as alt_email), when it is valid and
    not the main address again."""
    raw = str(recipient.fields.get("alt_email", "")).strip()
    if not raw:
        return None
    checked = normalise_address(raw)
    if isinstance(checked, str) or checked[0] == recipient.key:
        return None
    return checked[1]
