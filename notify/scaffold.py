"""Start a new incident from an export: a manifest with its columns mapped, a starter template.

Copying the demo and renaming columns by hand is where a new incident goes wrong first;
the address column is found by what its cells hold, not by what its header says.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from notify.cleaning.addresses import normalise_address
from notify.errors import SourceError, WorkspaceError
from notify.models import ORIGIN_COLUMNS, SourceSpec
from notify.sources.load import load_sources
from notify.workspace import Context

SAMPLE_CELLS = 500  # cells read per column to find the addresses: enough, and fast
_NAME_HEADERS = ("name", "fullname", "customer", "customername", "contact", "contactname")
_FIRST_HEADERS = ("firstname", "first", "givenname", "forename")
_LAST_HEADERS = ("lastname", "last", "surname", "familyname")


@dataclass(frozen=True)
class NewIncident:
    """What `notify new` wrote, for the operator to edit next."""

    manifest: Path
    source: str  # the export, as the manifest names it (workspace-relative)
    copied: bool  # the export was outside the workspace and was copied into data/
    template_dir: Path
    wrote_templates: bool  # False: the folder existed and was left alone
    columns: dict[str, str]  # template field -> column, as mapped


def new_incident(context: Context, incident_id: str, export: Path) -> NewIncident:
    """Write incidents/ID.toml and templates/ID/ for an export; never overwrite a manifest."""
    workspace = context.workspace
    manifest = workspace.manifest_path(incident_id)
    if manifest.exists():
        raise WorkspaceError(
            f"{workspace.relative(manifest)} already exists; edit it, or pick another ID"
        )
    export = export.expanduser().resolve()
    if not export.is_file():
        raise SourceError(f"{export} not found; give --export the path of the export file")
    frame = load_sources(
        [SourceSpec(path=export.name)],
        root=export.parent,
        incident_id=incident_id,
        environ=context.environ,
    )
    columns = map_columns(frame, where=str(export))
    source, copied = _place_export(context, export)
    template_dir = workspace.template_dir(incident_id)
    wrote_templates = not template_dir.exists()
    if wrote_templates:
        _write_templates(template_dir, columns)
    others = [c for c in _data_columns(frame) if c not in columns.values()]
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(
        manifest_text(
            incident_id,
            source=source,
            columns=columns,
            others=others,
            sender=None if context.settings.default_from else "Support <support@example.com>",
        ),
        encoding="utf-8",
    )
    return NewIncident(manifest, source, copied, template_dir, wrote_templates, columns)


def map_columns(frame: pd.DataFrame, *, where: str) -> dict[str, str]:
    """Template field -> column: the address column by its values, the name by its header."""
    data = _data_columns(frame)
    scores = {column: _address_share(frame[column]) for column in data}
    email = max(data, key=lambda column: scores[column], default=None)
    if email is None or scores[email] < 0.5:
        raise SourceError(
            f"{where}: no column holds mostly email addresses; export the address column too"
        )
    columns = {"email": email}
    by_key = {_key(column): column for column in data if column != email}
    name = next((by_key[k] for k in _NAME_HEADERS if k in by_key), None)
    first = next((by_key[k] for k in _FIRST_HEADERS if k in by_key), None)
    last = next((by_key[k] for k in _LAST_HEADERS if k in by_key), None)
    if name is not None:
        columns["name"] = name
    elif first is not None:
        columns["first_name"] = first
        if last is not None:
            columns["last_name"] = last
    return columns


def manifest_text(
    incident_id: str,
    *,
    source: str,
    columns: dict[str, str],
    others: list[str],
    sender: str | None,
) -> str:
    """The manifest as TOML, with every unmapped column listed as a comment to map."""
    lines = [f"title = {_toml(f'Incident {incident_id}')}", f"template = {_toml(incident_id)}"]
    if sender is not None:
        lines.append(f"from = {_toml(sender)}  # who customers see the message from")
    lines += ["", "[source]", f"path = {_toml(source)}", "", "[columns]"]
    lines += [f"{field} = {_toml(column)}" for field, column in columns.items()]
    if others:
        lines.append("# more columns of the export; uncomment to use them as customer.<field>")
        lines += [f"# {_field_name(column)} = {_toml(column)}" for column in others]
    lines += ["", "[facts]", '# incident-wide values, e.g. refund_eta = "5 business days"']
    return "\n".join(lines) + "\n"


def _data_columns(frame: pd.DataFrame) -> list[str]:
    return [str(c) for c in frame.columns if c not in ORIGIN_COLUMNS]


def _address_share(cells: pd.Series) -> float:
    """The share of a column's non-empty cells (a sample) that are valid addresses."""
    values = [str(v).strip() for v in cells.head(SAMPLE_CELLS * 4) if str(v).strip()]
    values = values[:SAMPLE_CELLS]
    if not values:
        return 0.0
    valid = sum(1 for v in values if "@" in v and isinstance(normalise_address(v), tuple))
    return valid / len(values)


def _key(header: str) -> str:
    """A header compared loosely: 'Full Name', 'full_name' and 'FULLNAME' are one."""
    return re.sub(r"[^a-z0-9]", "", header.lower())


def _field_name(header: str) -> str:
    """A template field for a column header: 'Account ID' -> account_id."""
    name = re.sub(r"\W+", "_", header.lower()).strip("_")
    return name if name and not name[0].isdigit() else f"column_{name}"


def _toml(value: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(value, ensure_ascii=False)


def _place_export(context: Context, export: Path) -> tuple[str, bool]:
    """The export's workspace-relative path, copying it into data/ when it is outside."""
    root = context.workspace.root.resolve()
    if export.is_relative_to(root):
        return export.relative_to(root).as_posix(), False
    target = root / "data" / export.name
    if target.exists() and target.read_bytes() != export.read_bytes():
        raise WorkspaceError(
            f"data/{export.name} exists and differs from {export}; rename one of them"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(export, target)
    return f"data/{export.name}", True


def _write_templates(folder: Path, columns: dict[str, str]) -> None:
    """A subject and a plain-text body that use only the fields just mapped."""
    if "name" in columns:
        greeting = '{{ customer.name | default("customer") }}'
    elif "first_name" in columns:
        greeting = '{{ customer.first_name | default("customer") }}'
    else:
        greeting = "customer"
    folder.mkdir(parents=True)
    (folder / "subject.j2").write_text("{{ incident.title }}\n", encoding="utf-8")
    (folder / "body.txt.j2").write_text(
        f"Dear {greeting},\n\n"
        "We are writing to you about: {{ incident.title }}.\n\n"
        "What happened, what we did about it, and what (if anything) you need to do.\n\n"
        "We are sorry for the trouble.\n",
        encoding="utf-8",
    )
