"""The `notify` command: the group, one translation of errors into exit codes, `main`.

Commands live beside this file by stage (new.py: new; send.py: check, send, status, ledger;
followup.py: bounces, resend, report, schedule, suppressions). Each parses options,
calls one verb and prints; none decides an exit code of its own beyond asking
`errors.exit_status`.
"""

from __future__ import annotations

from typing import Any

import click

from notify import __version__
from notify.cli import followup, new, send
from notify.cli.options import CONTEXT_SETTINGS
from notify.errors import EXIT_INTERRUPTED, NotifyError


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


for command in [*new.COMMANDS, *send.COMMANDS, *followup.COMMANDS]:
    cli.add_command(command)


def main() -> None:
    """The console script."""
    cli(prog_name="notify")
