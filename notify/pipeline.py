"""The verbs the CLI calls: check, preview, send, test send, status.

Each verb loads and checks the whole incident first (Promise 1), then does one thing.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from notify import references, reports, schedule, sending
from notify.delivery import ListSource, NoRecord, deliver
from notify.errors import RenderError
from notify.incident import Incident, fingerprints, load_incident, registration
from notify.ledger import store, transitions
from notify.messages.pool import RenderPool
from notify.messages.spool import Spool
from notify.models import Outcome, Recipient, RejectKind, RunSummary, State, Undelivered
from notify.pages.review import review_summary
from notify.rendering import render, summarise_problems
from notify.transports.preview import PreviewWriter
from notify.transports.protocol import Transport
from notify.transports.redirect import RedirectTransport
from notify.transports.sizes import SizeLimited, require_fits
from notify.transports.smtp import RelayOffer, SmtpTransport, probe
from notify.workspace import Context

RESENDABLE = (State.PENDING, State.SENDING, State.DEFERRED)  # what a re-run sends again


@dataclass
class CheckReport:
    """The numbers `notify check` prints, and what would stop a send."""

    incident: Incident
    rejected_by_reason: dict[RejectKind, int]
    already_sent: int
    suppressed: int
    problems: list[str]
    rejects_file: Path
    lookalikes_file: Path
    review_file: Path
    will_send: int = 0  # recipients a send would mail now
    changed: list[str] = field(default_factory=list)  # "templates", "data" since the first send
    relay: RelayOffer | None = None  # None: the relay was not opened (--offline)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def language_fallbacks(self) -> dict[str, int]:
        """Customers by language with no template folder, given the incident's own."""
        languages = self.incident.languages
        return languages.fallbacks if languages is not None else {}

    @property
    def warnings(self) -> list[str]:
        return self.incident.warnings

    @property
    def held_back(self) -> int:
        """Rows held back for a likely typo domain, listed in the review file."""
        return self.rejected_by_reason.get(RejectKind.TYPO_DOMAIN, 0)

    @property
    def rejected(self) -> int:
        """Rows that cannot be sent to at all (no or no valid address)."""
        return sum(self.rejected_by_reason.values()) - self.held_back

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
    undelivered: list[Undelivered] = field(default_factory=list)  # when none is to send

    @property
    def incident(self) -> Incident:
        return self.report.incident


@dataclass
class SendResult:
    """What a send did, and who is still not delivered."""

    summary: RunSummary
    undelivered: list[Undelivered] = field(default_factory=list)
    preview_dir: Path | None = None
    report: CheckReport | None = None  # the check the run started with


def check(
    context: Context,
    incident_id: str,
    *,
    allow_typo_domains: bool = False,
    render: bool = True,
    spool: bool = False,
    relay: bool = False,
) -> CheckReport:
    """Load, clean and render every message; send nothing; write rejects, look-alikes and
    the addresses to review. `render=False` is for a caller that renders every message
    itself before anything leaves (preview, which writes them in the same pass).
    `spool=True` also builds every message and keeps it in `incident.spool`, for a send.
    `relay=True` also opens the relay once (nothing sent) and says what it offers."""
    incident = load_incident(context, incident_id, allow_typo_domains=allow_typo_domains)
    manifest = incident.manifest
    problems = references.unmapped_fields(
        incident.templates.folder,
        label=f"templates/{manifest.template}",
        customer=manifest.columns,
        items=manifest.items,
    )
    if render and not problems:
        if spool:
            incident.spool = Spool(
                len(incident.cleaned.recipients), context.workspace.incident_dir(incident_id)
            )
        with RenderPool(incident) as pool:
            problems = pool.problems(spool=incident.spool)
    if not incident.cleaned.recipients:
        rejects = context.workspace.relative(
            context.workspace.incident_dir(incident_id) / "rejects.csv"
        )
        problems.insert(0, f"no valid recipient in the export; see {rejects} for why each was")
    states: dict[str, State] = {}
    suppressed: dict[str, str] = {}
    changed: list[str] = []
    if incident.ledger_exists():
        ledger = incident.open_ledger()
        states = ledger.states(incident_id)
        suppressed = store.suppressed(ledger, [r.key for r in incident.cleaned.recipients])
        if states:
            templates, data = fingerprints(incident)
            changed = ledger.fingerprint_changes(incident_id, templates=templates, data=data)
    folder = context.workspace.incident_dir(incident_id)
    folder.mkdir(parents=True, exist_ok=True)
    rejects_file, lookalikes_file = folder / "rejects.csv", folder / "lookalikes.csv"
    review_file = folder / "review.csv"
    reports.write_rejects(incident.cleaned, rejects_file)
    reports.write_lookalikes(incident.cleaned, lookalikes_file)
    reports.write_review(incident.cleaned, review_file)
    return CheckReport(
        incident=incident,
        rejected_by_reason=dict(Counter(r.kind for r in incident.cleaned.rejects)),
        already_sent=sum(1 for s in states.values() if s is State.ACCEPTED),
        suppressed=len(suppressed),
        problems=problems,
        rejects_file=rejects_file,
        lookalikes_file=lookalikes_file,
        review_file=review_file,
        will_send=sum(
            1
            for r in incident.cleaned.recipients
            if r.key not in suppressed and states.get(r.key, State.PENDING) in RESENDABLE
        ),
        changed=changed,
        relay=probe(context.settings) if relay and not problems else None,
    )


def require_ok(report: CheckReport) -> None:
    """Promise 1: stop here unless every message rendered."""
    if report.problems:
        raise summarise_problems(report.problems)


def preview(
    context: Context,
    incident_id: str,
    *,
    folder: Path | None = None,
    limit: int | None = None,
    allow_typo_domains: bool = False,
) -> SendResult:
    """Write what would be sent to a folder; no network, no ledger.

    Every message is rendered once: those previewed as they are written, the rest (beyond
    `limit`) checked after. A problem anywhere leaves no preview behind and stops the run
    with every problem listed, as the check would."""
    report = check(context, incident_id, allow_typo_domains=allow_typo_domains, render=False)
    require_ok(report)
    incident = report.incident
    target = folder or context.workspace.default_preview_dir(incident_id)
    count = len(incident.cleaned.recipients) if limit is None else limit
    writer = PreviewWriter(target)
    writer.describe(review_summary(report, target))
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
    return SendResult(summary, preview_dir=target, report=report)


def plan_send(
    context: Context,
    incident_id: str,
    *,
    limit: int | None = None,
    accept_changes: bool = False,
    allow_typo_domains: bool = False,
) -> SendPlan:
    """Check, register every recipient in the ledger, and count who is still owed a message."""
    report = check(context, incident_id, allow_typo_domains=allow_typo_domains, spool=True)
    require_ok(report)
    incident = report.incident
    SmtpTransport(incident.settings)  # validates the SMTP settings before asking anyone
    ledger = incident.open_ledger()
    templates, data = fingerprints(incident)
    ledger.check_fingerprint(
        incident_id, templates=templates, data=data, accept_changes=accept_changes
    )
    ledger.register(incident_id, (registration(incident, r) for r in incident.cleaned.recipients))
    transitions.apply_suppressions(ledger, incident_id, now=schedule.utc_now())
    states = ledger.states(incident_id)
    to_send = [r for r in incident.cleaned.recipients if states.get(r.key) in RESENDABLE]
    in_doubt = sum(1 for r in to_send if states.get(r.key) is State.SENDING)
    nobody_owed = [] if to_send else ledger.undelivered(incident_id)
    return SendPlan(report, to_send[:limit], in_doubt, nobody_owed)


def send(plan: SendPlan, *, on_outcome: Callable[[Outcome], None] | None = None) -> SendResult:
    """Deliver to everyone still owed a message over SMTP, recording every outcome.

    Several `notify send` processes on one incident share the work through their claims."""
    incident = plan.incident
    settings = incident.settings
    # Render workers only for what the spool lacks; they fork now, before any thread starts.
    spooled_all = incident.spool is not None and incident.spool.complete
    pool = RenderPool(incident, processes=1 if spooled_all else None)
    try:
        fits = functools.cache(  # on the first connection, before any message leaves
            lambda limit: require_fits(
                incident.sizes(plan.to_send, pool.build), limit, relay=settings.smtp_where()
            )
        )
        summary = sending.send_claimed(
            incident,
            claim=lambda sender, n: sender.claim(n),
            build=sending.build_for_send(incident, pool),
            count=len(plan.to_send),
            on_outcome=on_outcome,
            transport=lambda: SizeLimited(SmtpTransport(settings), fits),
        )
    finally:
        pool.close()
        if incident.spool is not None:
            incident.spool.close()
    ledger = incident.open_ledger()
    transitions.settle_refusals(ledger, incident.incident_id, now=schedule.utc_now())
    attempted = {outcome.key for outcome in summary.undelivered}
    undelivered = [r for r in ledger.undelivered(incident.incident_id) if r.key in attempted]
    return SendResult(summary, undelivered=undelivered)


def test_send(
    context: Context,
    incident_id: str,
    *,
    address: str,
    limit: int = 1,
    customer: str | None = None,
    allow_typo_domains: bool = False,
) -> SendResult:
    """Real recipients' messages (the first `limit`, or the one `customer` names), each
    with its own Message-ID and return path, delivered to the operator's address: no
    customer's record is touched, whatever comes back."""
    report = check(context, incident_id, allow_typo_domains=allow_typo_domains)
    require_ok(report)
    incident = report.incident
    chosen = [incident.customer(customer)] if customer else incident.cleaned.recipients[:limit]
    messages = [
        incident.composer.compose(
            render(incident.templates, recipient, incident.template_context), test=True
        )
        for recipient in chosen
    ]
    sizes = [(incident.recipient(m.key), len(m.data)) for m in messages]
    relay = incident.settings.smtp_where()
    transport: Transport = RedirectTransport(
        SizeLimited(
            SmtpTransport(incident.settings),
            lambda size_limit: require_fits(sizes, size_limit, relay=relay),
        ),
        address,
    )
    summary = deliver(ListSource(messages), lambda: transport, NoRecord())
    return SendResult(summary)
