"""The command line: parse options, call one pipeline verb, print, exit with the contract's code."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from notify import __version__, followup, pipeline, reports
from notify.errors import (
    EXIT_OK,
    EXIT_UNDELIVERED,
    ConfirmationError,
    NotifyError,
)
from notify.models import Outcome, State
from notify.workspace import Workspace

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
EXIT_INTERRUPTED = 130
MAX_LISTED_UNDELIVERED = 20


def workspace_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--workspace",
        "workspace_dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="NOTIFY_WORKSPACE",
        default=".",
        show_default="current folder, or NOTIFY_WORKSPACE",
        help="The workspace folder (incidents/, templates/, data/, .env).",
    )(command)


def typo_domains_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--allow-typo-domains",
        is_flag=True,
        help="Send to addresses whose domain looks like a typo (gmial.com); they are listed.",
    )(command)


def incident_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--incident", "incident_id", required=True, help="The incident id: incidents/<ID>.toml."
    )(command)


class NotifyGroup(click.Group):
    """Turns every expected failure into one 'Error: ...' line and the contract's exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except NotifyError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except (KeyboardInterrupt, click.exceptions.Abort):
            click.echo("\nInterrupted; run the same command again to continue.", err=True)
            ctx.exit(EXIT_INTERRUPTED)


@click.group(cls=NotifyGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="notify")
def cli() -> None:
    """Tell every customer hit by an incident, personally, correctly, once, and fast."""


@cli.command()
@incident_option
@workspace_option
@typo_domains_option
def check(incident_id: str, workspace_dir: Path, allow_typo_domains: bool) -> None:
    """Load, clean and render every message; send nothing; print the numbers."""
    workspace = Workspace.open(workspace_dir)
    report = pipeline.check(
        workspace, incident_id, os.environ, allow_typo_domains=allow_typo_domains
    )
    _print_check(report)
    pipeline.require_ok(report)
    click.echo(f"\nAll good. Next: notify send --incident {incident_id} --dry-run")


@cli.command()
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
@click.option("--to", "test_address", metavar="ADDRESS", help="Test send: deliver to ADDRESS only.")
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
    accept_changes: bool,
    allow_typo_domains: bool,
) -> None:
    """Check, confirm, then send to everyone not yet sent to (re-running is safe)."""
    workspace = Workspace.open(workspace_dir)
    if dry_run:
        result = pipeline.preview(
            workspace,
            incident_id,
            os.environ,
            folder=preview_dir,
            limit=limit,
            allow_typo_domains=allow_typo_domains,
        )
        assert result.preview_dir is not None
        click.echo(f"Wrote {result.summary.attempted} preview(s) to {result.preview_dir}/")
        click.echo(f"Open {result.preview_dir / 'index.html'} to browse them.")
        click.echo(f"Next: notify send --incident {incident_id} --to you@your.domain (a test send)")
        return
    if test_address:
        result = pipeline.test_send(
            workspace,
            incident_id,
            os.environ,
            address=test_address,
            limit=limit or 1,
            allow_typo_domains=allow_typo_domains,
        )
        s = result.summary
        click.echo(
            f"Test send: {s.accepted} of {s.attempted} message(s) accepted for {test_address}."
        )
        click.echo("No customer was marked as sent.")
        sys.exit(EXIT_OK if s.accepted == s.attempted else EXIT_UNDELIVERED)
    plan = pipeline.plan_send(
        workspace,
        incident_id,
        os.environ,
        limit=limit,
        accept_changes=accept_changes,
        allow_typo_domains=allow_typo_domains,
    )
    _print_check(plan.report)
    if not plan.to_send:
        click.echo("\nNothing to send: everyone has been sent to already.")
        return
    _confirm(plan, yes)
    _send_with_progress(plan)


@cli.command()
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
    workspace = Workspace.open(workspace_dir)
    while True:
        report = pipeline.status(workspace, incident_id, os.environ)
        if watch and sys.stdout.isatty():
            click.clear()
        if as_json:
            click.echo(json.dumps(report.as_dict(), indent=2))
        else:
            _print_status(report)
        if not watch:
            return
        time.sleep(interval)


def _print_status(report: pipeline.StatusReport) -> None:
    click.echo(f"Incident {report.incident_id}")
    for state, count in report.counts.items():
        if state is State.SENDING:
            click.echo(f"  {'sending':<12} {report.in_flight:>8}")
            click.echo(f"  {'in doubt':<12} {report.in_doubt:>8}")
        else:
            click.echo(f"  {state.value:<12} {count:>8}")
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


@cli.group()
def ledger() -> None:
    """The delivery ledger: where it lives, its schema, moving it."""


@ledger.command("info")
@workspace_option
def ledger_info(workspace_dir: Path) -> None:
    """Where the ledger lives, its schema version and its incidents."""
    info = pipeline.ledger_info(Workspace.open(workspace_dir), os.environ)
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
    info = pipeline.ledger_info(Workspace.open(workspace_dir), os.environ)
    click.echo(f"Ledger {info.where} is at schema version {info.version}.")


@ledger.command("copy")
@workspace_option
@click.option("--to", "target", required=True, metavar="URL", help="The ledger to copy into.")
def ledger_copy(workspace_dir: Path, target: str) -> None:
    """Copy the ledger into another, e.g. SQLite into PostgreSQL; then set NOTIFY_LEDGER."""
    copied, where = pipeline.ledger_copy(Workspace.open(workspace_dir), os.environ, target=target)
    click.echo(f"Copied {copied} row(s) into {where}. Next: point NOTIFY_LEDGER there in .env")


def _print_check(report: pipeline.CheckReport) -> None:
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
    workspace = incident.workspace
    if cleaned.rejects:
        click.echo(f"Rejected rows: {workspace.relative(report.rejects_file)}")
    if cleaned.lookalikes:
        click.echo(f"Look-alikes to review: {workspace.relative(report.lookalikes_file)}")
    if cleaned.review:
        click.echo(f"Addresses to review: {workspace.relative(report.review_file)}")


def _confirm(plan: pipeline.SendPlan, yes: bool) -> None:
    incident = plan.incident
    settings = incident.settings
    question = (
        f"\nSend {len(plan.to_send)} message(s) for incident {incident.incident_id} "
        f"({incident.manifest.title!r}) via {settings.smtp_where()} ({settings.smtp_security})"
        + (f", {plan.in_doubt} of them in doubt from an earlier run" if plan.in_doubt else "")
        + "?"
    )
    if yes:
        return
    if not sys.stdin.isatty():
        raise ConfirmationError(
            "sending needs a yes and there is no terminal to ask; run again with --yes"
        )
    if not click.confirm(question, default=False):
        click.echo("Nothing sent.")
        sys.exit(EXIT_OK)


def _send_with_progress(plan: pipeline.SendPlan) -> None:
    counts = dict.fromkeys(State, 0)
    started = time.monotonic()

    def describe(_: object) -> str:
        rate = sum(counts.values()) / max(time.monotonic() - started, 1e-3)
        doubt = f" in doubt {counts[State.SENDING]}" if counts[State.SENDING] else ""
        return (
            f"accepted {counts[State.ACCEPTED]} deferred {counts[State.DEFERRED]} "
            f"refused {counts[State.REFUSED]}{doubt}  {rate:,.0f}/s"
        )

    with click.progressbar(
        length=len(plan.to_send),
        label="Sending",
        file=sys.stderr,
        show_pos=True,
        item_show_func=describe,
    ) as bar:

        def on_outcome(outcome: Outcome) -> None:
            counts[outcome.state] += 1
            bar.update(1, outcome)

        try:
            result = pipeline.send(plan, on_outcome=on_outcome)
        except NotifyError as exc:
            exc.args = (
                f"{exc} (stopped after {counts[State.ACCEPTED]} accepted; "
                "run the same command again to continue)",
            )
            raise
    s = result.summary
    doubt = f", {s.in_doubt} in doubt" if s.in_doubt else ""
    elapsed = time.monotonic() - started
    click.echo(
        f"Sent: {s.accepted} accepted, {s.deferred} deferred, {s.refused} refused{doubt}."
        f" ({s.attempted / max(elapsed, 1e-3):,.0f} messages/s)"
    )
    if not result.undelivered:
        return
    click.echo(f"{len(result.undelivered)} recipient(s) not delivered:")
    for row in result.undelivered[:MAX_LISTED_UNDELIVERED]:
        state = "in doubt" if row["state"] == State.SENDING.value else row["state"]
        click.echo(f"  row {row['first_row']}: {row['email']}: {state} {row['reply'] or ''}")
    if len(result.undelivered) > MAX_LISTED_UNDELIVERED:
        click.echo(f"  ... and {len(result.undelivered) - MAX_LISTED_UNDELIVERED} more")
    incident_id = plan.incident.incident_id
    click.echo(
        "Deferred and in-doubt ones are sent again by running: notify send --incident "
        f"{incident_id}"
    )
    alternates = sum(1 for row in result.undelivered if row["state"] == State.ALTERNATE.value)
    if alternates:
        click.echo(
            f"{alternates} refused for good have an alternate address: notify resend "
            f"--incident {incident_id} sends to it"
        )
    sys.exit(EXIT_UNDELIVERED)


def now_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--now",
        type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M"]),
        hidden=True,
        help="Act as if it were this UTC time (to rehearse a schedule).",
    )(command)


def _utc(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment else None


@cli.command()
@incident_option
@workspace_option
@click.option("--mbox", type=click.Path(dir_okay=False, path_type=Path), help="An mbox file.")
@click.option("--maildir", type=click.Path(file_okay=False, path_type=Path), help="A Maildir.")
@click.option("--imap", is_flag=True, help="The NOTIFY_IMAP_* mailbox (IMAPS by default).")
@click.option(
    "--move-to",
    metavar="FOLDER",
    help="Move the bounces matched to this incident into FOLDER (default: leave all mail).",
)
@now_option
def bounces(
    incident_id: str,
    workspace_dir: Path,
    mbox: Path | None,
    maildir: Path | None,
    imap: bool,
    move_to: str | None,
    now: datetime | None,
) -> None:
    """Read bounces back and record each once: hard, soft, or the sender's problem."""
    if sum((mbox is not None, maildir is not None, imap)) != 1:
        raise click.UsageError("give exactly one of --mbox FILE, --maildir DIR or --imap")
    run = followup.read_bounces(
        Workspace.open(workspace_dir),
        incident_id,
        os.environ,
        mbox=mbox,
        maildir=maildir,
        imap=imap,
        move_to=move_to,
        now=_utc(now),
    )
    click.echo(f"Read {run.read} message(s) from {run.where}:")
    click.echo(f"  bounces recorded     {sum(run.recorded.values()):>8}")
    for kind, count in sorted(run.recorded.items()):
        click.echo(f"    {kind:<18} {count:>8}")
    click.echo(f"  already recorded     {run.already_recorded:>8}")
    click.echo(f"  auto-replies         {run.auto_replies:>8}")
    click.echo(f"  not bounces          {run.not_bounces:>8}")
    click.echo(f"  unmatched            {len(run.unmatched):>8}")
    for state, count in sorted(run.became.items()):
        click.echo(f"Recipients now {state}: {count}")
    for unmatched in run.unmatched[:MAX_LISTED_UNDELIVERED]:
        click.echo(f"  message {unmatched.mail_id}: {unmatched.reason}; left in the mailbox")
    if len(run.unmatched) > MAX_LISTED_UNDELIVERED:
        click.echo(f"  ... and {len(run.unmatched) - MAX_LISTED_UNDELIVERED} more")
    if run.moved:
        click.echo(f"Moved {run.moved} matched message(s) to {move_to}.")
    click.echo(f"Next: notify status --incident {incident_id}")


@cli.command()
@incident_option
@workspace_option
@click.option(
    "--blocked",
    is_flag=True,
    help="Also re-send those refused for the sender's reasons, once the cause is fixed.",
)
@now_option
def resend(incident_id: str, workspace_dir: Path, blocked: bool, now: datetime | None) -> None:
    """Re-send what is due: soft bounces and deferrals on the schedule, alternates now.

    Made for cron or a systemd timer (see notify schedule): it asks nothing, and two
    copies started at once never send the same message."""
    run = followup.resend(
        Workspace.open(workspace_dir), incident_id, os.environ, now=_utc(now), blocked=blocked
    )
    s = run.summary
    if run.changed_refusals:
        click.echo(f"{run.changed_refusals} refusal(s) from the send settled as bounces.")
    if run.given_up:
        click.echo(f"Gave up on {run.given_up}: the schedule ran out (see notify report).")
    if run.due:
        doubt = f", {s.in_doubt} in doubt" if s.in_doubt else ""
        click.echo(
            f"Re-sent {s.attempted} of {run.due} due: {s.accepted} accepted, "
            f"{s.deferred} deferred, {s.refused} refused{doubt}."
        )
    else:
        click.echo("Nothing is due.")
    if run.next_due is not None:
        click.echo(f"Next re-send due {run.next_due:%Y-%m-%d %H:%M} UTC.")
    if s.undelivered:
        sys.exit(EXIT_UNDELIVERED)


@cli.command()
@incident_option
@workspace_option
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["csv", "html"]),
    default="csv",
    show_default=True,
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to FILE instead of standard output.",
)
def report(incident_id: str, workspace_dir: Path, output_format: str, output: Path | None) -> None:
    """Every customer's outcome, the unreachable first with their export row (phone)."""
    result = followup.report(Workspace.open(workspace_dir), incident_id, os.environ)
    title = f"Incident {incident_id}: {result.title}"
    with click.open_file(str(output or "-"), "w", encoding="utf-8") as out:
        if output_format == "html":
            reports.write_html(result.rows, out, title=title)
        else:
            reports.write_csv(result.rows, out)
    if output is not None:
        summary = ", ".join(f"{n} {outcome}" for outcome, n in result.counts.items())
        click.echo(f"Wrote {output}: {summary}.")


@cli.command()
@incident_option
@workspace_option
def schedule(incident_id: str, workspace_dir: Path) -> None:
    """Print a crontab line and systemd units that run notify resend every few minutes."""
    workspace = Workspace.open(workspace_dir)
    plan = followup.schedule_plan(workspace, incident_id, os.environ)
    click.echo(f"# Re-send schedule: {plan.steps}")
    click.echo("# crontab -e, then add:")
    click.echo(plan.crontab)
    for name, text in plan.units.items():
        click.echo(f"\n# /etc/systemd/system/{name}")
        click.echo(text, nl=False)
    timer = next(name for name in plan.units if name.endswith(".timer"))
    click.echo(f"\n# then: systemctl daemon-reload && systemctl enable --now {timer}")


@cli.group()
def suppressions() -> None:
    """Addresses that bounced for good, which no incident mails again."""


@suppressions.command("list")
@workspace_option
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def suppressions_list(workspace_dir: Path, as_json: bool) -> None:
    """Every suppressed address, newest first, with the reason."""
    entries = followup.suppression_list(Workspace.open(workspace_dir), os.environ)
    if as_json:
        rows = [{**dataclasses.asdict(e), "added_at": e.added_at.isoformat()} for e in entries]
        click.echo(json.dumps(rows, indent=2))
        return
    for e in entries:
        click.echo(
            f"{e.address}  {e.added_at:%Y-%m-%d %H:%M}  incident {e.incident_id}: {e.reason}"
        )
    click.echo(f"{len(entries)} suppressed address(es).")


@suppressions.command("lift")
@workspace_option
@click.argument("addresses", nargs=-1, required=True)
def suppressions_lift(workspace_dir: Path, addresses: tuple[str, ...]) -> None:
    """Mail ADDRESSES again (e.g. the customer fixed their mailbox)."""
    lifted = followup.lift_suppressions(Workspace.open(workspace_dir), os.environ, addresses)
    for address in addresses:
        click.echo(f"{address}: {'lifted' if address.lower() in lifted else 'was not suppressed'}")


def main() -> None:
    """The console script."""
    cli(prog_name="notify")
