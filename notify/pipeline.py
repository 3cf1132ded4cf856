"""The verbs the CLI calls: check, preview, send, test send, status.

Each verb loads and checks the whole incident first (Promise 1), then does one thing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from notify import recovery, reports, suppressions
from notify.cleaning.addresses import normalise_address
from notify.cleaning.clean import clean
from notify.compose import Composer, Outgoing, parse_sender, recipient_token
from notify.delivery import (
    DEFAULT_BATCH_SIZE,
    DeliveryOptions,
    ListSource,
    NoRecord,
    deliver,
    on_one_cpu,
)
from notify.errors import LedgerError, ManifestError, RenderError
from notify.ledger import Ledger, Registration
from notify.manifest import Manifest, load_manifest
from notify.messages.pool import RenderPool
from notify.messages.spool import Spool
from notify.models import CleanResult, Outcome, Recipient, RunSummary, State
from notify.rendering import Templates, incident_context, load_templates, render, summarise_problems
from notify.senders import Sender
from notify.settings import Settings, load_settings, read_environment
from notify.sources.load import load_sources
from notify.transports.preview import PreviewWriter
from notify.transports.protocol import Transport
from notify.transports.redirect import RedirectTransport
from notify.transports.smtp import SmtpTransport
from notify.workspace import Workspace

RESENDABLE = (State.PENDING, State.SENDING, State.DEFERRED)  # what a re-run sends again


@dataclass
class Incident:
    """An incident loaded, cleaned and ready to render: everything a verb needs."""

    workspace: Workspace
    settings: Settings
    manifest: Manifest
    cleaned: CleanResult
    templates: Templates
    composer: Composer
    context: dict[str, Any]
    spool: Spool | None = None  # messages a send's check built, for the send to take

    @property
    def incident_id(self) -> str:
        return self.manifest.incident_id

    def outgoing(self, recipients: list[Recipient]) -> Iterator[Outgoing]:
        """Render and build lazily, so a million messages never sit in memory at once."""
        for recipient in recipients:
            yield self.composer.compose(render(self.templates, recipient, self.context))

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
        return open_ledger(self.workspace, self.settings)

    def ledger_exists(self) -> bool:
        return ledger_exists(self.workspace, self.settings)


def open_ledger(workspace: Workspace, settings: Settings) -> Ledger:
    """NOTIFY_LEDGER when set, else the workspace's own SQLite file."""
    return Ledger.open(settings.ledger or workspace.default_ledger)


def ledger_exists(workspace: Workspace, settings: Settings) -> bool:
    """Whether anything was ever sent from here: reading commands say so instead of
    creating an empty ledger."""
    return bool(settings.ledger) or workspace.default_ledger.exists()


@dataclass
class CheckReport:
    """The numbers `notify check` prints, and what would stop a send."""

    incident: Incident
    rejected_by_reason: dict[str, int]
    already_sent: int
    suppressed: int
    problems: list[str]
    rejects_file: Path
    lookalikes_file: Path
    review_file: Path

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def review_by_kind(self) -> dict[str, int]:
        """Addresses flagged for review: typo domains, role mailboxes, SMTPUTF8."""
        return dict(Counter(entry.kind for entry in self.incident.cleaned.review))


@dataclass
class SendPlan:
    """Who a send would reach, shown to the operator before anything leaves."""

    report: CheckReport
    to_send: list[Recipient]
    in_doubt: int

    @property
    def incident(self) -> Incident:
        return self.report.incident


@dataclass
class SendResult:
    """What a send did, and who is still not delivered."""

    summary: RunSummary
    undelivered: list[dict[str, object]] = field(default_factory=list)
    preview_dir: Path | None = None


def load_incident(
    workspace: Workspace,
    incident_id: str,
    environ: Mapping[str, str],
    *,
    allow_typo_domains: bool = False,
) -> Incident:
    """Settings, manifest, templates and data, all validated, or one clear error."""
    settings = load_settings(workspace, environ)
    manifest = load_manifest(workspace, incident_id)
    where = workspace.relative(manifest.path)
    sender_text = manifest.sender or settings.default_from
    if not sender_text:
        raise ManifestError(f'{where}: no from = "Name <address>" and no NOTIFY_FROM in .env')
    sender = parse_sender(sender_text, where=where)
    reply_to = parse_sender(manifest.reply_to, where=where) if manifest.reply_to else None
    templates = load_templates(
        workspace.template_dir(manifest.template), label=f"templates/{manifest.template}"
    )
    cleaned = clean(  # handed straight over: cleaning frees the export once merged
        load_sources(
            manifest.sources,
            root=workspace.root,
            incident_id=incident_id,
            environ=read_environment(workspace, environ),
        ),
        columns=manifest.columns,
        items=manifest.items,
        where=where,
        allow_typo_domains=allow_typo_domains,
        header_fields=templates.header_fields,
    )
    composer = Composer(
        incident_id=incident_id, sender=sender, reply_to=reply_to, return_path=settings.return_path
    )
    context = incident_context(incident_id, manifest.title, manifest.facts)
    return Incident(workspace, settings, manifest, cleaned, templates, composer, context)


def check(
    workspace: Workspace,
    incident_id: str,
    environ: Mapping[str, str],
    *,
    allow_typo_domains: bool = False,
    render: bool = True,
    spool: bool = False,
) -> CheckReport:
    """Load, clean and render every message; send nothing; write rejects, look-alikes and
    the addresses to review. `render=False` is for a caller that renders every message
    itself before anything leaves (preview, which writes them in the same pass).
    `spool=True` also builds every message and keeps it in `incident.spool`, for a send."""
    incident = load_incident(workspace, incident_id, environ, allow_typo_domains=allow_typo_domains)
    problems: list[str] = []
    if render:
        if spool:
            incident.spool = Spool(
                len(incident.cleaned.recipients), workspace.incident_dir(incident_id)
            )
        with RenderPool(incident) as pool:
            problems = pool.problems(spool=incident.spool)
    if not incident.cleaned.recipients:
        problems.insert(0, "no valid recipient in the export; see the rejects file")
    states: dict[str, State] = {}
    suppressed: dict[str, str] = {}
    if incident.ledger_exists():
        ledger = incident.open_ledger()
        states = ledger.states(incident_id)
        suppressed = suppressions.suppressed(ledger, [r.key for r in incident.cleaned.recipients])
    folder = workspace.incident_dir(incident_id)
    folder.mkdir(parents=True, exist_ok=True)
    rejects_file, lookalikes_file = folder / "rejects.csv", folder / "lookalikes.csv"
    review_file = folder / "review.csv"
    reports.write_rejects(incident.cleaned, rejects_file)
    reports.write_lookalikes(incident.cleaned, lookalikes_file)
    reports.write_review(incident.cleaned, review_file)
    return CheckReport(
        incident=incident,
        rejected_by_reason=dict(Counter(r.reason.split(":")[0] for r in incident.cleaned.rejects)),
        already_sent=sum(1 for s in states.values() if s is State.ACCEPTED),
        suppressed=len(suppressed),
        problems=problems,
        rejects_file=rejects_file,
        lookalikes_file=lookalikes_file,
        review_file=review_file,
    )


def require_ok(report: CheckReport) -> None:
    """Promise 1: stop here unless every message rendered."""
    if report.problems:
        raise summarise_problems(report.problems)


def preview(
    workspace: Workspace,
    incident_id: str,
    environ: Mapping[str, str],
    *,
    folder: Path | None = None,
    limit: int | None = None,
    allow_typo_domains: bool = False,
) -> SendResult:
    """Write what would be sent to a folder; no network, no ledger.

    Every message is rendered once: those previewed as they are written, the rest (beyond
    `limit`) checked after. A problem anywhere leaves no preview behind and stops the run
    with every problem listed, as the check would."""
    report = check(
        workspace, incident_id, environ, allow_typo_domains=allow_typo_domains, render=False
    )
    require_ok(report)
    incident = report.incident
    target = folder or workspace.default_preview_dir(incident_id)
    count = len(incident.cleaned.recipients) if limit is None else limit
    writer = PreviewWriter(target)
    with RenderPool(incident) as pool:
        try:
            summary = deliver(ListSource(pool.outgoing_first(count)), lambda: writer, NoRecord())
            problems = pool.problems(start=count)
        except RenderError:
            writer.discard()  # before the check, which may stop the run (a runaway template)
            problems = pool.problems()
    if problems:
        writer.discard()
        raise summarise_problems(problems)
    return SendResult(summary, preview_dir=target)


def plan_send(
    workspace: Workspace,
    incident_id: str,
    environ: Mapping[str, str],
    *,
    limit: int | None = None,
    accept_changes: bool = False,
    allow_typo_domains: bool = False,
) -> SendPlan:
    """Check, register every recipient in the ledger, and count who is still owed a message."""
    report = check(
        workspace, incident_id, environ, allow_typo_domains=allow_typo_domains, spool=True
    )
    require_ok(report)
    incident = report.incident
    SmtpTransport(incident.settings)  # validates the SMTP settings before asking anyone
    ledger = incident.open_ledger()
    templates, data = fingerprints(incident)
    ledger.check_fingerprint(
        incident_id, templates=templates, data=data, accept_changes=accept_changes
    )
    ledger.register(incident_id, (_registration(incident, r) for r in incident.cleaned.recipients))
    suppressions.apply_suppressions(ledger, incident_id, now=recovery.utc_now())
    states = ledger.states(incident_id)
    to_send = [r for r in incident.cleaned.recipients if states.get(r.key) in RESENDABLE]
    in_doubt = sum(1 for r in to_send if states.get(r.key) is State.SENDING)
    return SendPlan(report, to_send[:limit], in_doubt)


def send(plan: SendPlan, *, on_outcome: Callable[[Outcome], None] | None = None) -> SendResult:
    """Claim batches from the ledger and deliver them over SMTP, recording every outcome.

    Several `notify send` processes on one incident share the work through their claims."""
    incident = plan.incident
    settings = incident.settings
    # Render workers only for what the spool lacks; they fork now, before any thread starts.
    spooled_all = incident.spool is not None and incident.spool.complete
    pool = RenderPool(incident, processes=1 if spooled_all else None)
    ledger = incident.open_ledger()
    sender = Sender(ledger, incident.incident_id, rate=settings.rate)
    source = _ClaimSource(pool, sender, limit=len(plan.to_send))
    try:
        with on_one_cpu():  # after the fork: the render workers keep every CPU
            sender.start()
            try:
                summary = deliver(
                    source,
                    lambda: SmtpTransport(settings),
                    _LedgerRecorder(ledger, incident.incident_id, sender),
                    options=delivery_options(settings, len(plan.to_send)),
                    pace=sender.pace,
                    on_outcome=on_outcome,
                )
            finally:
                sender.finish()
    finally:
        pool.close()
        if incident.spool is not None:
            incident.spool.close()
    recovery.settle_refusals(ledger, incident.incident_id, now=recovery.utc_now())
    attempted = {outcome.key for outcome in summary.undelivered}
    undelivered = [r for r in ledger.undelivered(incident.incident_id) if r["key"] in attempted]
    return SendResult(summary, undelivered=undelivered)


def delivery_options(settings: Settings, messages: int) -> DeliveryOptions:
    """The settings' connections (no more than one per batch of 20) and retries."""
    return DeliveryOptions(
        connections=max(1, min(settings.connections, messages // 20)),
        retries=settings.retries,
        first_retry_delay=settings.retry_delay,
    )


def fingerprints(incident: Incident) -> tuple[str, str]:
    """What the messages are made of: templates (with the manifest's wording), and data."""
    templates = hashlib.sha256()
    for path in sorted(incident.templates.folder.glob("*.j2")):
        templates.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    manifest = incident.manifest
    wording = [manifest.title, manifest.sender, manifest.reply_to, manifest.facts]
    templates.update(json.dumps(wording, sort_keys=True, default=str).encode())
    data = hashlib.sha256()
    encode = json.JSONEncoder(sort_keys=True, default=str).encode  # json.dumps makes one a call
    for r in incident.cleaned.recipients:
        data.update(encode([r.key, r.fields, r.items]).encode())
    return templates.hexdigest(), data.hexdigest()


class _ClaimSource:
    """Batches claimed from the ledger as workers ask for them: the messages the check
    built and spooled, otherwise rendered on the spot."""

    def __init__(self, pool: RenderPool, sender: Sender, *, limit: int) -> None:
        self.pool = pool
        self.incident = pool.incident
        self.sender = sender
        self.left = limit
        self._lock = threading.Lock()

    def next_batch(self) -> list[Outgoing]:
        with self._lock:
            keys = self.sender.claim(min(DEFAULT_BATCH_SIZE, self.left))
            self.left -= len(keys)
        spooled = {key: self.incident.spooled(key) for key in keys}
        missing = [self.incident.recipient(key) for key in keys if spooled[key] is None]
        built = {message.key: message for message in self.pool.build(missing)}
        return [spooled[key] or built[key] for key in keys]


def test_send(
    workspace: Workspace,
    incident_id: str,
    environ: Mapping[str, str],
    *,
    address: str,
    limit: int = 1,
    allow_typo_domains: bool = False,
) -> SendResult:
    """Real recipients' messages, delivered to the operator's address; nobody marked as sent."""
    report = check(workspace, incident_id, environ, allow_typo_domains=allow_typo_domains)
    require_ok(report)
    incident = report.incident
    transport: Transport = RedirectTransport(SmtpTransport(incident.settings), address)
    recipients = incident.cleaned.recipients[:limit]
    summary = deliver(ListSource(incident.outgoing(recipients)), lambda: transport, NoRecord())
    return SendResult(summary)


class _LedgerRecorder:
    """Binds the ledger to one incident and one sender for delivery."""

    def __init__(self, ledger: Ledger, incident_id: str, sender: Sender) -> None:
        self.ledger, self.incident_id, self.sender = ledger, incident_id, sender

    def release(self, keys: Sequence[str]) -> None:
        self.ledger.release(self.incident_id, keys)

    def record(self, outcomes: Sequence[Outcome]) -> None:
        self.ledger.record(self.incident_id, outcomes)
        self.sender.count_sent(sum(1 for o in outcomes if o.state is State.ACCEPTED))


def _registration(incident: Incident, recipient: Recipient) -> Registration:
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
