"""`notify new`: start an incident from an export, then check it offline."""

from __future__ import annotations

from pathlib import Path

import click

from notify import pipeline, scaffold
from notify.cli.options import open_context, workspace_option
from notify.cli.send import outlook, print_check


@click.command()
@click.argument("incident_id", metavar="ID")
@click.option(
    "--export",
    "export",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The export of affected customers (.csv .tsv .txt .xlsx .jsonl .sql).",
)
@workspace_option
def new(incident_id: str, export: Path, workspace_dir: Path) -> None:
    """Start an incident: a manifest with the export's columns mapped, a starter template."""
    context = open_context(workspace_dir)
    made = scaffold.new_incident(context, incident_id, export)
    workspace = context.workspace
    where = workspace.relative(made.manifest)
    click.echo(f"Wrote {where}: email <- {made.columns['email']!r}")
    for field, column in made.columns.items():
        if field != "email":
            click.echo(f"  {field} <- {column!r}")
    if made.copied:
        click.echo(f"Copied the export to {made.source}")
    templates = workspace.relative(made.template_dir)
    if made.wrote_templates:
        click.echo(f"Wrote a starter template in {templates}/")
    else:
        click.echo(f"Kept the existing template folder {templates}/")
    click.echo("")
    report = pipeline.check(context, incident_id)
    print_check(report)
    pipeline.require_ok(report)
    click.echo(f"\n{outlook(report)}")
    click.echo(
        f"Next: edit title, from and [facts] in {where} and the text in {templates}/, "
        f"then: notify check --incident {incident_id}"
    )


COMMANDS = [new]
