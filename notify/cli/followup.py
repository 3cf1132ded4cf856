"""The commands for after the send: bounces, replies, resend, report, schedule, suppressions.

Like the rest of the command line, each parses options, calls one verb of
`notify.followup` and prints; `notify.cli` adds them to the `notify` group.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

import click

from notify import followup, inbox, reports
from notify.cli.options import (
    MAX_LISTED_UNDELIVERED,
    as_utc,
    incident_option,
    now_option,
    open_context,
    outcome_counts,
    workspace_option,
)
from notify.errors import exit_status


@click.command()
@incident_option
@workspace_option
@click.option("--mbox", type=click.Path(dir_okay=False, path_type=Path), help="An mbox file.")
@click.option("--maildir", type=click.Path(file_okay=False, path_type=Path), help="A Maildir.")
@click.option("--imap", is_flag=True, help="The NOTIFY_IMAP_* mailbox (IMAPS by default).")
@click.option(
    "--move-to",
    metavar="FOLDER",
    help="Move the bounces matched to this incident into FOLDER: an IMAP folder, the "
    "Maildir's .FOLDER, or an mbox beside --mbox (default: leave all mail).",
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
        open_context(workspace_dir),
        incident_id,
        mbox=mbox,
        maildir=maildir,
        imap=imap,
        move_to=move_to,
        now=as_utc(now),
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


@click.command()
@incident_option
@workspace_option
@click.option("--mbox", type=click.Path(dir_okay=False, path_type=Path), help="An mbox file.")
@click.option("--maildir", type=click.Path(file_okay=False, path_type=Path), help="A Maildir.")
@click.option(
    "--imap",
    is_flag=True,
    help="The Reply-To mailbox: NOTIFY_REPLY_IMAP_*, else NOTIFY_IMAP_* (IMAPS by default).",
)
@click.option(
    "--move-to",
    metavar="FOLDER",
    help="Move the replies matched to this incident into FOLDER (default: leave all mail).",
)
@click.option(
    "--answered",
    metavar="ADDRESS",
    help="Mark every reply from ADDRESS answered instead of reading a mailbox.",
)
@now_option
def replies(
    incident_id: str,
    workspace_dir: Path,
    mbox: Path | None,
    maildir: Path | None,
    imap: bool,
    move_to: str | None,
    answered: str | None,
    now: datetime | None,
) -> None:
    """Read customers' replies, match each to its customer and record it once."""
    given = sum((mbox is not None, maildir is not None, imap))
    if answered is not None:
        if given or move_to:
            raise click.UsageError("give --answered ADDRESS alone, without a mailbox")
        found, newly = inbox.mark_answered(
            open_context(workspace_dir), incident_id, answered, now=as_utc(now)
        )
        click.echo(f"{answered}: {newly} of {found} reply(ies) marked answered.")
        click.echo(f"Next: notify status --incident {incident_id}")
        return
    if given != 1:
        raise click.UsageError("give exactly one of --mbox FILE, --maildir DIR or --imap")
    run = inbox.read_replies(
        open_context(workspace_dir),
        incident_id,
        mbox=mbox,
        maildir=maildir,
        imap=imap,
        move_to=move_to,
        now=as_utc(now),
    )
    _print_replies(run, incident_id, move_to)


def _print_replies(run: inbox.ReplyRun, incident_id: str, move_to: str | None) -> None:
    click.echo(f"Read {run.read} message(s) from {run.where}:")
    click.echo(f"  replies recorded     {run.recorded:>8}")
    for how, count in sorted(run.by_match.items()):
        click.echo(f"    matched by {how:<10} {count:>8}")
    click.echo(f"  already recorded     {run.already_recorded:>8}")
    click.echo(f"  auto-replies         {run.auto_replies:>8}")
    click.echo(f"  bounces              {run.bounces:>8}")
    click.echo(f"  unmatched            {len(run.unmatched):>8}")
    for unmatched in run.unmatched[:MAX_LISTED_UNDELIVERED]:
        click.echo(f"  message {unmatched.mail_id}: {unmatched.reason}; left in the mailbox")
    if len(run.unmatched) > MAX_LISTED_UNDELIVERED:
        click.echo(f"  ... and {len(run.unmatched) - MAX_LISTED_UNDELIVERED} more")
    if run.moved:
        click.echo(f"Moved {run.moved} matched message(s) to {move_to}.")
    click.echo(f"Next: notify report --incident {incident_id} lists who waits for an answer")


@click.command()
@incident_option
@workspace_option
@click.option(
    "--blocked",
    is_flag=True,
    help="Also re-send those refused for the sender's reasons, once the cause is fixed.",
)
@click.option(
    "--accept-changes",
    is_flag=True,
    help="Go on although templates or export changed since this incident was first sent.",
)
@now_option
def resend(
    incident_id: str, workspace_dir: Path, blocked: bool, accept_changes: bool, now: datetime | None
) -> None:
    """Re-send what is due: soft bounces and deferrals on the schedule, alternates now.

    Made for cron or a systemd timer (see notify schedule): it asks nothing, and two
    copies started at once never send the same message."""
    run = followup.resend(
        open_context(workspace_dir),
        incident_id,
        now=as_utc(now),
        blocked=blocked,
        accept_changes=accept_changes,
    )
    s = run.summary
    if run.changed_refusals:
        click.echo(f"{run.changed_refusals} refusal(s) from the send settled as bounces.")
    if run.given_up:
        click.echo(f"Gave up on {run.given_up}: the schedule ran out (see notify report).")
    if run.due:
        click.echo(f"Re-sent {s.attempted} of {run.due} due: {outcome_counts(s)}.")
    else:
        click.echo("Nothing is due.")
    if run.next_due is not None:
        click.echo(f"Next re-send due {run.next_due:%Y-%m-%d %H:%M} UTC.")
    if run.undelivered:
        by_state = Counter(row.state.value for row in run.undelivered)
        states = ", ".join(f"{n} {state}" for state, n in sorted(by_state.items()))
        click.echo(
            f"{len(run.undelivered)} recipient(s) not delivered ({states}): "
            f"notify report --incident {incident_id} lists them"
        )
    sys.exit(exit_status(undelivered=len(run.undelivered)))


@click.command()
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
    result = followup.report(open_context(workspace_dir), incident_id)
    title = f"Incident {incident_id}: {result.title}"
    if output is not None:
        reports.write_report(
            result.rows,
            output,
            html_title=title if output_format == "html" else None,
            history=result.history,
        )
    elif output_format == "html":
        stdout = click.get_text_stream("stdout", "utf-8")
        reports.write_html(result.rows, stdout, title=title, history=result.history)
    else:
        reports.write_csv(result.rows, click.get_text_stream("stdout", "utf-8"))
    if output is not None:
        summary = ", ".join(f"{n} {outcome}" for outcome, n in result.counts.items())
        click.echo(f"Wrote {output}: {summary}.")


@click.command()
@incident_option
@workspace_option
def schedule(incident_id: str, workspace_dir: Path) -> None:
    """Print a crontab line and systemd units that run notify resend every few minutes."""
    context = open_context(workspace_dir)
    plan = followup.schedule_plan(context, incident_id)
    click.echo(f"# Re-send schedule: {plan.steps}")
    click.echo("# crontab -e, then add:")
    click.echo(plan.crontab)
    for name, text in plan.units.items():
        click.echo(f"\n# /etc/systemd/system/{name}")
        click.echo(text, nl=False)
    timer = next(name for name in plan.units if name.endswith(".timer"))
    click.echo(f"\n# then: systemctl daemon-reload && systemctl enable --now {timer}")


@click.group()
def suppressions() -> None:
    """Addresses that bounced for good, which no incident mails again."""


@suppressions.command("list")
@workspace_option
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def suppressions_list(workspace_dir: Path, as_json: bool) -> None:
    """Every suppressed address, newest first, with the reason."""
    entries = followup.suppression_list(open_context(workspace_dir))
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
    lifted = followup.lift_suppressions(open_context(workspace_dir), addresses)
    for address in addresses:
        click.echo(f"{address}: {'lifted' if address.lower() in lifted else 'was not suppressed'}")


COMMANDS = [bounces, replies, resend, report, schedule, suppressions]
