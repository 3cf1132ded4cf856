"""The verbs for after the send: read bounces back, re-send what is due, report outcomes.

Each one is safe to run again and again (from cron, by hand, twice at once): bounces are
recorded once by their fingerprint, re-sends are claimed in the ledger before they go,
and the report only reads.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import pandas as pd

from notify import reports, schedule, sending
from notify.bounces.match import Matcher
from notify.bounces.parse import parse_bounce
from notify.cleaning.addresses import normalise_address
from notify.cleaning.clean import clean
from notify.compose import Outgoing
from notify.errors import RenderError
from notify.incident import Incident, fingerprints, load_incident
from notify.ledger import Ledger, claims, inbox, store, transitions
from notify.ledger.claims import Claim, Sender
from notify.ledger.store import LedgerRecipient
from notify.mailboxes import Unmatched, open_mailbox
from notify.manifest import load_manifest
from notify.messages.pool import RenderPool
from notify.models import (
    ORIGIN_COLUMNS,
    ROW_COLUMN,
    SOURCE_COLUMN,
    BounceKind,
    Outcome,
    Reject,
    RejectKind,
    RunSummary,
    State,
    Undelivered,
)
from notify.pages import charts
from notify.rendering import render, summarise_problems
from notify.schedule import crontab_line, describe_schedule, systemd_units
from notify.sources.load import load_sources
from notify.workspace import Context


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
    context: Context,
    incident_id: str,
    *,
    mbox: Path | None = None,
    maildir: Path | None = None,
    imap: bool = False,
    move_to: str | None = None,
    now: datetime | None = None,
) -> BounceRun:
    """Match every bounce in one mailbox to its recipient and record it once."""
    load_manifest(context.workspace, incident_id)
    settings = context.settings
    ledger = context.sent_ledger(incident_id, so="no bounce can be matched")
    moment = now or schedule.utc_now()
    with open_mailbox(settings, mbox=mbox, maildir=maildir, imap=imap) as box:
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
            effect = transitions.record_bounce(
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


@dataclass
class ResendRun:
    """What a re-send run did, and when the next one is due."""

    summary: RunSummary
    due: int
    given_up: int
    next_due: datetime | None
    changed_refusals: int = 0
    undelivered: list[Undelivered] = field(default_factory=list)  # the incident's, after


def resend(
    context: Context,
    incident_id: str,
    *,
    now: datetime | None = None,
    blocked: bool = False,
    accept_changes: bool = False,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> ResendRun:
    """Send what the schedule says is due; safe from cron and when two run at once."""
    moment = now or schedule.utc_now()
    incident = load_incident(context, incident_id)
    settings = incident.settings
    ledger = context.sent_ledger(incident_id, so="there is nothing to re-send")
    templates, data = fingerprints(incident)
    ledger.check_fingerprint(
        incident_id, templates=templates, data=data, accept_changes=accept_changes
    )
    changed = transitions.settle_refusals(ledger, incident_id, now=moment)
    dead = claims.dead_holders(ledger, incident_id)
    candidates = store.recipients(
        ledger, incident_id, states=store.RESENT_STATES, unclaimed=True, dead=dead
    )
    ready, exhausted = schedule.due(candidates, settings.resend_schedule, moment, blocked=blocked)
    transitions.give_up(ledger, exhausted, now=moment)
    acted_on = {r.key for r in ready} | {r.key for r in exhausted}
    waiting = [r for r in candidates if r.key not in acted_on]
    next_due = schedule.next_due(waiting, settings.resend_schedule)
    if not ready:
        undelivered = ledger.undelivered(incident_id, dead=dead)
        return ResendRun(RunSummary(), 0, len(exhausted), next_due, changed, undelivered)
    messages = _build_all(incident, ready)  # Promise 1: all of them, before any leaves
    summary = sending.send_claimed(
        incident,
        claim=_claim_in_turn(ledger, ready, dead),
        build=lambda claimed: messages,
        count=len(ready),
        on_outcome=on_outcome,
    )
    undelivered = ledger.undelivered(incident_id, dead=dead)
    return ResendRun(summary, len(ready), len(exhausted), next_due, changed, undelivered)


def _build_all(incident: Incident, due: Sequence[LedgerRecipient]) -> dict[str, Outgoing]:
    """Every due message, to the address now in use, built in the render pool; every
    problem listed when any fails."""
    recipients = [sending.addressed(incident.recipient(r.key), r.sent_to) for r in due]
    with RenderPool(incident) as pool:
        try:
            return {message.key: message for message in pool.build(recipients)}
        except RenderError:
            pass
    problems = []
    for recipient in recipients:
        try:
            incident.composer.validate(
                render(incident.templates, recipient, incident.template_context)
            )
        except RenderError as exc:
            problems.append(str(exc))
    raise summarise_problems(problems)


def _claim_in_turn(
    ledger: Ledger, due: Sequence[LedgerRecipient], dead: Sequence[str]
) -> sending.ClaimDue:
    """Reserve the due recipients a few at a time, each only if unchanged since read."""
    waiting = iter(due)

    def claim(sender: Sender, count: int) -> list[Claim]:
        while chosen := list(itertools.islice(waiting, count)):
            lease = time.time() + sender.lease_seconds
            taken = claims.claim(
                ledger,
                chosen,
                holder=sender.id,
                lease_until=lease,
                now=schedule.utc_now(),
                dead=dead,
            )
            if taken:
                return [Claim(r.key, r.sent_to) for r in taken]
        return []

    return claim


@dataclass
class IncidentReport:
    """Every affected customer's outcome, unreachable first."""

    incident_id: str
    title: str
    rows: list[reports.ReportRow]
    history: charts.History = field(default_factory=charts.History)

    @property
    def counts(self) -> dict[str, int]:
        return reports.counts(self.rows)


def report(context: Context, incident_id: str) -> IncidentReport:
    """The ledger's outcomes joined with the export's rows (phone, account id), plus the
    rows that never had a valid address."""
    workspace = context.workspace
    manifest = load_manifest(workspace, incident_id)
    frame = load_sources(
        manifest.sources, root=workspace.root, incident_id=incident_id, environ=context.environ
    )
    where = workspace.relative(manifest.path)
    cleaned = clean(frame, columns=manifest.columns, items=manifest.items, where=where)
    contact = _contact_by_row(frame)
    known: dict[str, LedgerRecipient] = {}
    accepted_at: dict[str, datetime] = {}
    bounced: list[datetime] = []
    waiting: dict[str, inbox.RecordedReply] = {}
    if context.ledger_exists():
        ledger = context.ledger()
        known = {r.key: r for r in store.recipients(ledger, incident_id)}
        accepted_at = store.accepted_at(ledger, incident_id)
        bounced = store.bounce_times(ledger, incident_id)
        waiting = inbox.waiting(ledger, incident_id)
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
            outcome = _report_row(entry.key, entry.email, place, entry, accepted_at, contact)
            rows.append(_with_reply(outcome, waiting.get(entry.key)))
    for r in cleaned.recipients:
        place = (r.source, r.first_row)
        made = _report_row(r.key, r.email, place, known.get(r.key), accepted_at, contact)
        made = replace(made, items=len(r.items) or len(r.rows))
        rows.append(_with_reply(made, waiting.get(r.key)))
    history = charts.History(sorted(accepted_at.values()), bounced)
    return IncidentReport(incident_id, manifest.title, reports.ordered(reports.fold(rows)), history)


def _held_back_key(reject: Reject) -> str | None:
    """The ledger key of a row held back as a likely typo domain: a send with
    --allow-typo-domains may have mailed it, and then the ledger knows its outcome."""
    if reject.kind is not RejectKind.TYPO_DOMAIN:
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


def _with_reply(row: reports.ReportRow, reply: inbox.RecordedReply | None) -> reports.ReportRow:
    """The row of a customer whose reply waits for an answer carries its first lines."""
    if reply is None:
        return row
    excerpt = reply.excerpt or "(no text)"
    return dataclasses.replace(row, reply=excerpt, replied_at=reply.received_at)


def _contact_by_row(frame: pd.DataFrame) -> dict[tuple[str, int], dict[str, str]]:
    columns = [c for c in frame.columns if c not in ORIGIN_COLUMNS]
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


def schedule_plan(context: Context, incident_id: str) -> SchedulePlan:
    """The ready-made lines that run `notify resend` for this incident every few minutes."""
    load_manifest(context.workspace, incident_id)
    return SchedulePlan(
        describe_schedule(context.settings.resend_schedule),
        crontab_line(context.workspace.root, incident_id),
        systemd_units(context.workspace.root, incident_id),
    )


def suppression_list(context: Context) -> list[store.Suppression]:
    """Every suppressed address in the configured ledger."""
    return store.suppression_list(context.ledger())


def lift_suppressions(context: Context, addresses: Sequence[str]) -> set[str]:
    """Lift each address; returns those that were suppressed."""
    ledger = context.ledger()
    return {a.lower() for a in addresses if transitions.lift(ledger, a)}
