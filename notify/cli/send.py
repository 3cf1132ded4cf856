"""The commands before and at the send: check, send (and its previews and test sends),
status, and the ledger. Each parses options, calls one verb, prints."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from notify import pipeline, progress, reports
from notify import status as standing
from notify.cli.options import (
    MAX_LISTED_UNDELIVERED,
    AddressType,
    incident_option,
    open_context,
    outcome_counts,
    typo_domains_option,
    workspace_option,
)
from notify.errors import ConfirmationError, exit_status
from notify.models import Outcome, State, Undelivered
from notify.transports.smtp import RelayOffer


@click.command()
@incident_option
@workspace_option
@typo_domains_option
@click.option("--offline", is_flag=True, help="Do not open the relay (no network at all).")
def check(incident_id: str, workspace_dir: Path, allow_typo_domains: bool, offline: bool) -> None:
    """Load, clean and render every message, open the relay; send nothing; print the numbers."""
    context = open_context(workspace_dir)
    report = pipeline.check(
        context, incident_id, allow_typo_domains=allow_typo_domains, relay=not offline
    )
    print_check(report)
    pipeline.require_ok(report)
    click.echo(f"\n{outlook(report)}")
    click.echo(f"Next: notify send --incident {incident_id} --dry-run")


@click.command()
@incident_option
@workspace_option
@click.option("--dry-run", is_flag=True, help="Write previews to a folder; send nothing.")
@click.option(
    "--preview-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where --dry-run writes previews.  [default: previews/incident-<ID>/]",
)
@click.option("--yes", is_flag=True, help="Send without asking for confirmation.")
@click.option("--limit", type=click.IntRange(min=1), help="Send to at most N recipients this run.")
@click.option(
    "--to", "test_address", type=AddressType(), help="Test send: deliver to ADDRESS only."
)
@click.option(
    "--customer",
    metavar="EMAIL",
    help="With --to: test-send this customer's message (default: the first customer's).",
)
@click.option(
    "--accept-changes",
    is_flag=True,
    help="Go on although templates or export changed since this incident was first sent.",
)
@typo_domains_option
def send(
    incident_id: str,
    workspace_dir: Path,
    dry_run: bool,
    preview_dir: Path | None,
    yes: bool,
    limit: int | None,
    test_address: str | None,
    customer: str | None,
    accept_changes: bool,
    allow_typo_domains: bool,
) -> None:
    """Check, confirm, then send to everyone not yet sent to (re-running is safe)."""
    context = open_context(workspace_dir)
    if dry_run:
        result = pipeline.preview(
            context,
            incident_id,
            folder=preview_dir,
            limit=limit,
            allow_typo_domains=allow_typo_domains,
        )
        assert result.preview_dir is not None and result.report is not None
        print_check(result.report)
        click.echo(f"\n{outlook(result.report)}")
        click.echo(f"Wrote {result.summary.attempted} preview(s) to {result.preview_dir}/")
        click.echo(f"Open {result.preview_dir / 'index.html'} to browse them.")
        click.echo(f"Next: notify send --incident {incident_id} --to you@your.domain (a test send)")
        return
    if customer and not test_address:
        raise click.UsageError("--customer goes with --to ADDRESS (a test send)")
    if test_address:
        result = pipeline.test_send(
            context,
            incident_id,
            address=test_address,
            limit=limit or 1,
            customer=customer,
            allow_typo_domains=allow_typo_domains,
        )
        s = result.summary
        click.echo(
            f"Test send: {s.accepted} of {s.attempted} message(s) accepted for {test_address}."
        )
        click.echo("No customer was marked as sent.")
        sys.exit(exit_status(undelivered=s.attempted - s.accepted))
    plan = pipeline.plan_send(
        context,
        incident_id,
        limit=limit,
        accept_changes=accept_changes,
        allow_typo_domains=allow_typo_domains,
    )
    print_check(plan.report)
    if not plan.to_send and not plan.undelivered:
        click.echo("\nNothing to send: everyone has been sent to already.")
        return
    if not plan.to_send:
        click.echo("\nNothing to send now.")
        _print_undelivered(incident_id, plan.undelivered)
        sys.exit(exit_status(undelivered=len(plan.undelivered)))
    if _confirmed(plan, yes):
        _send_with_progress(plan)


@click.command()
@incident_option
@workspace_option
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("--watch", is_flag=True, help="Refresh until interrupted (Ctrl-C).")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.2),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes with --watch.",
)
def status(
    incident_id: str, workspace_dir: Path, as_json: bool, watch: bool, interval: float
) -> None:
    """Counts by state, the senders at work, and what is due next."""
    context = open_context(workspace_dir)
    while True:
        report = standing.status(context, incident_id)
        if watch and sys.stdout.isatty():
            click.clear()
        if as_json:
            click.echo(json.dumps(report.as_dict(), indent=2))
        else:
            _print_status(report)
        if not watch:
            return
        time.sleep(interval)


def _print_status(report: standing.StatusReport) -> None:
    click.echo(f"Incident {report.incident_id}")
    for state, count in report.counts.items():
        if state is State.SENDING:
            click.echo(f"  {'sending':<12} {report.in_flight:>8}")
            click.echo(f"  {'in doubt':<12} {report.in_doubt:>8}")
        else:
            click.echo(f"  {state.value:<12} {count:>8}")
    click.echo(f"Replied, waiting for an answer: {report.awaiting_answer}")
    active = [s for s in report.senders if not s.finished]
    if report.senders:
        click.echo(f"Senders ({len(active)} active):")
        for s in report.senders[:20]:
            seen = "finished" if s.finished else f"heartbeat {s.heartbeat_age:.0f}s ago"
            click.echo(f"  {s.host} pid {s.pid}: claimed {s.claimed}, sent {s.sent}, {seen}")
    first, *more = report.due.split("; ")
    click.echo(f"Next: {first}")
    for clause in more:
        click.echo(f"      {clause}")


@click.group()
def ledger() -> None:
    """The delivery ledger: where it lives, its schema, moving it."""


@ledger.command("info")
@workspace_option
def ledger_info(workspace_dir: Path) -> None:
    """Where the ledger lives, its schema version and its incidents."""
    info = standing.ledger_info(open_context(workspace_dir))
    click.echo(f"Ledger: {info.where}")
    click.echo(f"Schema version: {info.version}")
    for version, name in info.migrations:
        click.echo(f"  {version}: {name}")
    for incident, count in sorted(info.incidents.items()):
        click.echo(f"Incident {incident}: {count} recipient(s)")


@ledger.command("migrate")
@workspace_option
def ledger_migrate(workspace_dir: Path) -> None:
    """Bring the ledger's schema up to date (also done on first use)."""
    info = standing.ledger_info(open_context(workspace_dir))
    click.echo(f"Ledger {info.where} is at schema version {info.version}.")


@ledger.command("copy")
@workspace_option
@click.option("--to", "target", required=True, metavar="URL", help="The ledger to copy into.")
def ledger_copy(workspace_dir: Path, target: str) -> None:
    """Copy the ledger into another, e.g. SQLite into PostgreSQL; then set NOTIFY_LEDGER."""
    copied, where = standing.ledger_copy(open_context(workspace_dir), target=target)
    click.echo(f"Copied {copied} row(s) into {where}. Next: point NOTIFY_LEDGER there in .env")


def print_check(report: pipeline.CheckReport) -> None:
    """The check's numbers, the files that list rows to look at, changes and the relay."""
    incident = report.incident
    cleaned = incident.cleaned
    click.echo(f"Incident {incident.incident_id}: {incident.manifest.title}")
    click.echo(f"  rows read            {cleaned.rows_read:>8}")
    click.echo(f"  rejected             {len(cleaned.rejects):>8}")
    for reason, count in sorted(report.rejected_by_reason.items()):
        click.echo(f"    {reason:<18} {count:>8}")
    click.echo(f"  duplicates merged    {cleaned.duplicates_merged:>8}")
    click.echo(f"  look-alikes          {len(cleaned.lookalikes):>8}")
    click.echo(f"  addresses to review  {len(cleaned.review):>8}")
    for kind, count in sorted(report.review_by_kind.items()):
        click.echo(f"    {kind:<18} {count:>8}")
    click.echo(f"  recipients           {len(cleaned.recipients):>8}")
    click.echo(f"  suppressed           {report.suppressed:>8}")
    click.echo(f"  already sent         {report.already_sent:>8}")
    _print_content(report)
    workspace = incident.workspace
    if cleaned.rejects:
        click.echo(f"Rejected rows: {workspace.relative(report.rejects_file)}")
    if cleaned.lookalikes:
        click.echo(f"Look-alikes to review: {workspace.relative(report.lookalikes_file)}")
    if cleaned.review:
        click.echo(f"Addresses to review: {workspace.relative(report.review_file)}")
    for line in reports.flagged_rows(cleaned.review):
        click.echo(line)
    if report.changed:
        click.echo(
            f"Changed since the first send: {' and '.join(report.changed)}; a send refuses "
            "to mix two versions: restore them, or send with --accept-changes"
        )
    if report.relay is not None:
        click.echo(f"Relay: {_relay_line(report.relay)}")


def _relay_line(offer: RelayOffer) -> str:
    """What the relay offers, in one line: where, how secured, and the extensions that matter."""
    login = "logged in" if offer.logged_in else "no login"
    size = f"SIZE {offer.size_limit:,} bytes" if offer.size_limit else "no SIZE limit named"
    offers = [
        "PIPELINING" if offer.pipelining else "no PIPELINING",
        "SMTPUTF8" if offer.smtputf8 else "no SMTPUTF8",
        size,
    ]
    return f"{offer.where} ({offer.security}, {login}): {', '.join(offers)}; nothing was sent"


def outlook(report: pipeline.CheckReport) -> str:
    """Exactly what a send would do now, and where the rows it would not mail are listed."""
    workspace = report.incident.workspace
    parts = [f"{report.will_send:,} will be sent"]
    if report.held_back:
        review = workspace.relative(report.review_file)
        parts.append(f"{report.held_back:,} held back (typo domain) — see {review}")
    if report.rejected:
        rejects = workspace.relative(report.rejects_file)
        parts.append(f"{report.rejected:,} rejected — see {rejects}")
    if report.suppressed:
        parts.append(f"{report.suppressed:,} suppressed")
    if report.already_sent:
        parts.append(f"{report.already_sent:,} already sent")
    return "; ".join(parts)


def _print_content(report: pipeline.CheckReport) -> None:
    """Languages given the incident's own templates, and warnings about the content."""
    fallbacks = report.language_fallbacks
    if fallbacks:
        click.echo(f"  language fallbacks   {sum(fallbacks.values()):>8}")
        width = max(18, *map(len, fallbacks))
        for language, count in fallbacks.items():
            click.echo(f"    {language:<{width}} {count:>8}")
        folder = report.incident.workspace.relative(report.incident.templates.folder)
        click.echo(
            f"Languages without a folder in {folder}/ get its own templates: "
            f"{', '.join(fallbacks)}; add {folder}/<language>/ to write to them in theirs"
        )
    signer = report.incident.composer.signer
    if signer is not None:
        click.echo(f"DKIM: every message signed with the key at {signer.description}")
    for warning in report.warnings:
        click.echo(f"Warning: {warning}")


def _confirmed(plan: pipeline.SendPlan, yes: bool) -> bool:
    incident = plan.incident
    settings = incident.settings
    question = (
        f"\nSend {len(plan.to_send)} message(s) for incident {incident.incident_id} "
        f"({incident.manifest.title!r}) via {settings.smtp_where()} ({settings.smtp_security})"
        + (f", {plan.in_doubt} of them in doubt from an earlier run" if plan.in_doubt else "")
        + "?"
    )
    if yes:
        return True
    if not sys.stdin.isatty():
        raise ConfirmationError(
            "sending needs a yes and there is no terminal to ask; run again with --yes"
        )
    if click.confirm(question, default=False):
        return True
    click.echo("Nothing sent.")
    return False


def _send_with_progress(plan: pipeline.SendPlan) -> None:
    counts = dict.fromkeys(State, 0)
    rate = progress.SendRate()
    total = len(plan.to_send)

    def describe(_: object) -> str:
        return progress.progress_text(
            accepted=counts[State.ACCEPTED],
            deferred=counts[State.DEFERRED],
            refused=counts[State.REFUSED],
            in_doubt=counts[State.SENDING],
            rate=rate.rate,
            eta=rate.eta(total - rate.done),
        )

    started = time.monotonic()
    with click.progressbar(
        length=total,
        label="Sending",
        file=sys.stderr,
        show_pos=True,
        show_eta=False,  # Click's counts from the bar's start; ours from the measured rate
        item_show_func=describe,
    ) as bar:

        def on_outcome(outcome: Outcome) -> None:
            counts[outcome.state] += 1
            rate.tick()
            bar.update(1, outcome)

        result = pipeline.send(plan, on_outcome=on_outcome)
    s = result.summary
    elapsed = time.monotonic() - started
    click.echo(progress.summary_text(outcome_counts(s), attempted=s.attempted, elapsed=elapsed))
    if result.undelivered:
        _print_undelivered(plan.incident.incident_id, result.undelivered)
    sys.exit(exit_status(undelivered=len(result.undelivered)))


def _print_undelivered(incident_id: str, undelivered: list[Undelivered]) -> None:
    click.echo(f"{len(undelivered)} recipient(s) not delivered:")
    for row in undelivered[:MAX_LISTED_UNDELIVERED]:
        state = "in doubt" if row.state is State.SENDING else row.state.value
        click.echo(f"  row {row.first_row}: {row.email}: {state} {row.reply or ''}")
    if len(undelivered) > MAX_LISTED_UNDELIVERED:
        click.echo(f"  ... and {len(undelivered) - MAX_LISTED_UNDELIVERED} more")
    if any(row.state in (State.DEFERRED, State.SENDING) for row in undelivered):
        click.echo(
            "Deferred and in-doubt ones are sent again by running: notify send --incident "
            f"{incident_id}"
        )
    alternates = sum(1 for row in undelivered if row.state is State.ALTERNATE)
    if alternates:
        click.echo(
            f"{alternates} refused for good have an alternate address: notify resend "
            f"--incident {incident_id} sends to it"
        )
    click.echo(f"Everyone's outcome, with phone numbers: notify report --incident {incident_id}")


COMMANDS = [check, send, status, ledger]
