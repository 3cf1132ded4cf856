"""Options and limits shared by every command, so each is declared once."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from notify.cleaning.addresses import normalise_address
from notify.models import RunSummary
from notify.workspace import Context

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
MAX_LISTED_UNDELIVERED = 20


class AddressType(click.ParamType):
    """An option naming one mail address, checked like the export's addresses."""

    name = "address"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        checked = normalise_address(str(value))
        if isinstance(checked, str):
            reason = checked.removeprefix("not a valid address: ").rstrip(".")
            self.fail(
                f"{value!r} is not an address ({reason}); give one, like you@example.com",
                param,
                ctx,
            )
        return checked[1]


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


def now_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--now",
        type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M"]),
        hidden=True,
        help="Act as if it were this UTC time (to rehearse a schedule).",
    )(command)


def as_utc(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment else None


def outcome_counts(summary: RunSummary) -> str:
    """'3 accepted, 1 deferred, 0 refused, 1 in doubt' for the end of a send or resend."""
    doubt = f", {summary.in_doubt} in doubt" if summary.in_doubt else ""
    return (
        f"{summary.accepted} accepted, {summary.deferred} deferred, "
        f"{summary.refused} refused{doubt}"
    )


def open_context(workspace_dir: Path) -> Context:
    """The workspace with its .env and this process's environment, read once."""
    return Context.open(workspace_dir, os.environ)
