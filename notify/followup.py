"""The verbs for after the send: read bounces back, re-send what is due, report outcomes.

Each one is safe to run again and again (from cron, by hand, twice at once): bounces are
recorded once by their fingerprint, re-sends are claimed in the ledger before they go,
and the report only reads.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd

from notify import recovery, reports, suppressions
from notify.bounces.match import Matcher
from notify.bounces.parse import parse_bounce
from notify.cleaning.addresses import TYPO_REASON, normalise_address
from notify.cleaning.clean import clean
from notify.compose import Outgoing
from notify.delivery import ListSource, deliver
from notify.errors import LedgerError, RenderError
from notify.ledger import Ledger
from notify.mailboxes import Mailbox, open_imap, open_maildir, open_mbox
from notify.manifest import load_manifest
from notify.models import ROW_COLUMN, SOURCE_COLUMN, BounceKind, Outcome, Reject, RunSummary, State
from notify.pipeline import (
    Incident,
    delivery_options,
    fingerprints,
    ledger_exists,
    load_incident,
    open_ledger,
)
from notify.recovery import LedgerRecipient
from notify.rendering import render, summarise_problems
from notify.schedule import crontab_line, describe_schedule, systemd_units
from notify.senders import Sender
from notify.settings import Settings, load_settings, read_environment
from notify.sources.load import load_sources
from notify.transports.smtp import SmtpTransport
from notify.workspace import Workspace


@dataclass(frozen=True)
class Unmatched:
    """A bounce no recipient of the incident could be found for; left where it was."""

    mail_id: str
    reason: str


@dataclass
class BounceRun:
    """What reading a mailbox did."""

    where: str
    read: int = 0
    not_bounces: int = 0  # ordinary mail, left alone
    auto_replies: int = 0  # out-of-office and friends: not bounces
    already_recorded: int = 0
    recorded: Counter[str] = field(default_factory=Counter)  # by bounce kind
    became: Counter[str] = field(default_factory=Counter)  # recipients by their new state
    unmatched: list[Unmatched] = field(default_factory=list)
    moved: int = 0


def read_bounces(
    workspace: Workspace,
    incident_id: str,
    environ: Mapping[str, str],
    *,
    mbox: Path | None = None,
    maildir: Path | None = None,
    imap: bool = False,
    move_to: str | None = None,
    now: datetime | None = None,
) -> BounceRun:
    """Match every bounce in one mailbox to its recipient and record it once."""
    load_manifest(workspace, incident_id)
    settings = load_settings(workspace, environ)
    ledger = _existing_ledger(workspace, settings, incident_id)
    moment = now or recovery.utc_now()
    with _open_mailbox(settings, mbox=mbox, maildir=maildir, imap=imap) as box:
        run = BounceRun(box.where)
        matcher = Matcher(ledger, incident_id)
        attributed: list[str] = []
        for mail in box.messages():
            run.read += 1
            bounce = parse_bounce(mail.raw, return_path=settings.return_path)
            if bounce is None or bounce.kind is BounceKind.AUTO_REPLY:
                run.not_bounces += bounce is None
                run.auto_replies += bounce is not None
                continue
            recipient, reason = matcher.find(bounce)
            if recipient is None:
                run.unmatched.append(Unmatched(mail.id, reason))
                continue
            attributed.append(mail.id)
            effect = recovery.record_bounce(
                ledger,
                recipient,
                bounce,
                mailbox=box.where,
                schedule=settings.resend_schedule,
                now=moment,
            )
            if effect is None:
                run.already_recorded += 1
                continue
            run.recorded[bounce.kind.value] += 1
            if effect.state is not recipient.state:
                run.became[effect.state.value] += 1
        if move_to and attributed:
            box.move(attributed, move_to)
            run.moved = len(attributed)
    return run


def _open_mailbox(
    settings: Settings, *, mbox: Path | None, maildir: Path | None, imap: bool
) -> Mailbox:
    if mbox is not None:
        return open_mbox(mbox)
    if maildir is not None:
        return open_maildir(maildir)
    assert imap, "the CLI asks for exactly one of --mbox, --maildir, --imap"
    return open_imap(settings)


def _existing_ledger(workspace: Workspace, settings: Settings, incident_id: str) -> Ledger:
    if not ledger_exists(workspace, settings):
        raise LedgerError(
            f"nothing has been sent for incident {incident_id} from this workspace, so no "
            f"bounce can be matched; run notify send --incident {incident_id} first"
        )
    return open_ledger(workspace, settings)


@dataclass
class ResendRun:
    """What a re-send run did, and when the next one is due."""

    summary: RunSummary
    due: int
    given_up: int
    next_due: datetime | None
    changed_refusals: int = 0


def resend(
    workspace: Workspace,
    incident_id: str,
    environ: Mapping[str, str],
    *,
    now: datetime | None = None,
    blocked: bool = False,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> ResendRun:
    """Send what the schedule says is due; safe from cron and when two run at once."""
    moment = now or recovery.utc_now()
    incident = load_incident(workspace, incident_id, environ)
    settings = incident.settings
    ledger = _existing_ledger(workspace, settings, incident_id)
    templates, data = fingerprints(incident)
    ledger.check_fingerprint(incident_id, templates=templates, data=data)
    changed = recovery.settle_refusals(ledger, incident_id, now=moment)
    candidates = recovery.recipients(ledger, incident_id, states=recovery.RESENT_STATES)
    ready, exhausted = recovery.due(candidates, settings.resend_schedule, moment, blocked=blocked)
    recovery.give_up(ledger, exhausted, now=moment)
    acted_on = {r.key for r in ready} | {r.key for r in exhausted}
    waiting = [r for r in candidates if r.key not in acted_on]
    next_due = recovery.next_due(waiting, settings.resend_schedule)
    if not ready:
        return ResendRun(RunSummary(), 0, len(exhausted), next_due, changed)
    messages = _render_all(incident, ready)  # Promise 1: all of them, before any leaves
    summary = _send_claimed(incident, ledger, ready, messages, moment, on_outcome)
    return ResendRun(summary, len(ready), len(exhausted), next_due, changed)


def _render_all(incident: Incident, due: Sequence[LedgerRecipient]) -> dict[str, Outgoing]:
    messages: dict[str, Outgoing] = {}
    problems: list[str] = []
    for entry in due:
        recipient = incident.recipient(entry.key)
        if entry.sent_to:
            recipient = dataclasses.replace(recipient, email=entry.sent_to)
        try:
            rendered = render(incident.templates, recipient, incident.context)
        except RenderError as exc:
            problems.append(str(exc))
            continue
        messages[entry.key] = incident.composer.compose(rendered)
    if problems:
        raise summarise_problems(problems)
    return messages


def _send_claimed(
    incident: Incident,
    ledger: Ledger,
    due: Sequence[LedgerRecipient],
    messages: Mapping[str, Outgoing],
    moment: datetime,
    on_outcome: Callable[[Outcome], None] | None,
) -> RunSummary:
    settings = incident.settings
    sender = Sender(ledger, incident.incident_id, rate=settings.rate)
    sender.start()
    try:
        lease = time.time() + sender.lease_seconds
        taken = recovery.claim(ledger, due, holder=sender.id, lease_until=lease, now=moment)
        recorder = _ResendRecorder(ledger, incident.incident_id, sender, taken)
        return deliver(
            ListSource(messages[r.key] for r in taken),
            lambda: SmtpTransport(settings),
            recorder,
            options=delivery_options(settings, len(taken)),
            pace=sender.pace,
            on_outcome=on_outcome,
        )
    finally:
        sender.finish()


class _ResendRecorder:
    """Records outcomes; what never left goes back to the state it was claimed from."""

    def __init__(
        self, ledger: Ledger, incident_id: str, sender: Sender, taken: Sequence[LedgerRecipient]
    ) -> None:
        self.ledger, self.incident_id, self.sender = ledger, incident_id, sender
        self.before = {r.key: r for r in taken}

    def record(self, outcomes: Sequence[Outcome]) -> None:
        self.ledger.record(self.incident_id, outcomes)
        self.sender.count_sent(sum(1 for o in outcomes if o.state is State.ACCEPTED))

    def release(self, keys: Sequence[str]) -> None:
        recovery.restore(self.ledger, [self.before[key] for key in keys])


@dataclass
class IncidentReport:
    """Every affected customer's outcome, unreachable first."""

    incident_id: str
    title: str
    rows: list[reports.ReportRow]

    @property
    def counts(self) -> dict[str, int]:
        return reports.counts(self.rows)


def report(workspace: Workspace, incident_id: str, environ: Mapping[str, str]) -> IncidentReport:
    """The ledger's outcomes joined with the export's rows (phone, account id), plus the
    rows that never had a valid address."""
    manifest = load_manifest(workspace, incident_id)
    settings = load_settings(workspace, environ)
    frame = load_sources(
        manifest.sources,
        root=workspace.root,
        incident_id=incident_id,
        environ=read_environment(workspace, environ),
    )
    where = workspace.relative(manifest.path)
    cleaned = clean(frame, columns=manifest.columns, items=manifest.items, where=where)
    contact = _contact_by_row(frame)
    known: dict[str, LedgerRecipient] = {}
    accepted_at: dict[str, datetime] = {}
    if ledger_exists(workspace, settings):
        ledger = open_ledger(workspace, settings)
        known = {r.key: r for r in recovery.recipients(ledger, incident_id)}
        accepted_at = recovery.accepted_at(ledger, incident_id)
    rows: list[reports.ReportRow] = []
    sent_anyway: set[str] = set()
    for reject, row in zip(
        cleaned.rejects, reports.reject_rows(cleaned.rejects, contact), strict=True
    ):
        entry = known.get(_held_back_key(reject) or "")
        if entry is None:
            rows.append(row)
        elif entry.key not in sent_anyway:  # sent with --allow-typo-domains: its outcome
            sent_anyway.add(entry.key)
            place = (reject.source, reject.row)
            rows.append(_report_row(entry.key, entry.email, place, entry, accepted_at, contact))
    for r in cleaned.recipients:
        place = (r.source, r.first_row)
        rows.append(_report_row(r.key, r.email, place, known.get(r.key), accepted_at, contact))
    return IncidentReport(incident_id, manifest.title, reports.ordered(rows))


def _held_back_key(reject: Reject) -> str | None:
    """The ledger key of a row held back as a likely typo domain: a send with
    --allow-typo-domains may have mailed it, and then the ledger knows its outcome."""
    if not reject.reason.startswith(TYPO_REASON):
        return None
    checked = normalise_address(reject.value)
    return None if isinstance(checked, str) else checked[0]


def _report_row(
    key: str,
    email: str,
    place: tuple[str, int],
    entry: LedgerRecipient | None,
    accepted_at: Mapping[str, datetime],
    contact: Mapping[tuple[str, int], Mapping[str, str]],
) -> reports.ReportRow:
    return reports.ReportRow(
        state=entry.state.value if entry else State.PENDING.value,
        email=email,
        sent_to=(entry.sent_to or "") if entry else "",
        reason=(entry.reply or "") if entry else "never sent",
        attempts=entry.attempts if entry else 0,
        accepted_at=accepted_at.get(key),
        last_change=entry.updated_at if entry else None,
        source=place[0],
        row=place[1],
        contact=contact.get(place, {}),
    )


def _contact_by_row(frame: pd.DataFrame) -> dict[tuple[str, int], dict[str, str]]:
    columns = [c for c in frame.columns if c not in (ROW_COLUMN, SOURCE_COLUMN)]
    found: dict[tuple[str, int], dict[str, str]] = {}
    for record in frame.to_dict("records"):
        values = {c: str(record[c]).strip() for c in columns if str(record[c]).strip()}
        found[(str(record[SOURCE_COLUMN]), int(record[ROW_COLUMN]))] = values
    return found


@dataclass(frozen=True)
class SchedulePlan:
    """What `notify schedule` prints: the steps, a crontab line, systemd units."""

    steps: str
    crontab: str
    units: dict[str, str]


def schedule_plan(
    workspace: Workspace, incident_id: str, environ: Mapping[str, str]
) -> SchedulePlan:
    """The ready-made lines that run `notify resend` for this incident every few minutes."""
    load_manifest(workspace, incident_id)
    settings = load_settings(workspace, environ)
    return SchedulePlan(
        describe_schedule(settings.resend_schedule),
        crontab_line(workspace.root, incident_id),
        systemd_units(workspace.root, incident_id),
    )


def suppression_list(
    workspace: Workspace, environ: Mapping[str, str]
) -> list[suppressions.Suppression]:
    """Every suppressed address in the configured ledger."""
    settings = load_settings(workspace, environ)
    return suppressions.suppression_list(open_ledger(workspace, settings))


def lift_suppressions(
    workspace: Workspace, environ: Mapping[str, str], addresses: Sequence[str]
) -> set[str]:
    """Lift each address; returns those that were suppressed."""
    settings = load_settings(workspace, environ)
    ledger = open_ledger(workspace, settings)
    return {a.lower() for a in addresses if suppressions.lift(ledger, a)}
