"""Read and validate incidents/<ID>.toml: what happened, whom to tell, and with which template."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from notify.errors import ManifestError, WorkspaceError
from notify.models import SourceSpec
from notify.workspace import Workspace

_TOP_KEYS = {
    "title",
    "template",
    "from",
    "reply_to",
    "attachments",
    "source",
    "columns",
    "group",
    "facts",
}
_SOURCE_KEYS = {"path", "url", "query", "query_file", "encoding", "delimiter", "sheet"}


@dataclass(frozen=True)
class Manifest:
    """One incident as the operator described it."""

    incident_id: str
    path: Path
    title: str
    template: str
    sender: str | None
    reply_to: str | None
    sources: list[SourceSpec]
    columns: dict[str, str]  # template field -> export column
    items: dict[str, str]  # item field -> export column; empty: no grouping fields
    facts: dict[str, Any] = field(default_factory=dict)
    attachments: list[str] = field(default_factory=list)  # workspace paths, every message


def load_manifest(workspace: Workspace, incident_id: str) -> Manifest:
    """Parse the manifest and reject anything a send would trip over later."""
    path = workspace.manifest_path(incident_id)
    where = workspace.relative(path)
    if not path.is_file():
        raise WorkspaceError(f"{where} not found; {_known_incidents(workspace)}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{where}: not valid TOML ({exc}); fix the file") from exc
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ManifestError(
            f"{where}: unknown key {unknown[0]!r}; expected one of {', '.join(sorted(_TOP_KEYS))}"
        )
    columns = _string_table(data, "columns", where)
    if "email" not in columns:
        raise ManifestError(
            f'{where}: [columns] has no email; add email = "<column with the address>"'
        )
    return Manifest(
        incident_id=incident_id,
        path=path,
        title=_required_string(data, "title", where),
        template=_required_string(data, "template", where),
        sender=_optional_string(data, "from", where),
        reply_to=_optional_string(data, "reply_to", where),
        sources=_sources(data.get("source"), where),
        columns=columns,
        items=_items(data.get("group", {}), where),
        facts=_table(data, "facts", where),
        attachments=_attachments(data.get("attachments", []), where),
    )


def _known_incidents(workspace: Workspace) -> str:
    found = sorted(p.stem for p in (workspace.root / "incidents").glob("*.toml"))
    if not found:
        return f"create incidents/<ID>.toml in {workspace.root} or pass --workspace"
    return f"known incidents: {', '.join(found)}; check --incident"


def _required_string(data: dict[str, Any], key: str, where: str) -> str:
    value = _optional_string(data, key, where)
    if not value:
        raise ManifestError(f'{where}: {key} is missing; add {key} = "..." at the top')
    return value


def _optional_string(data: dict[str, Any], key: str, where: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ManifestError(f'{where}: {key} must be a string in quotes, like {key} = "..."')
    return value.strip() or None


def _table(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ManifestError(f"{where}: {key} must be a table, written [{key}]")
    return value


def _string_table(data: dict[str, Any], key: str, where: str) -> dict[str, str]:
    table = _table(data, key, where)
    for name, value in table.items():
        if not isinstance(value, str) or not value.strip():
            raise ManifestError(f'{where}: [{key}] {name} must name a column, like {name} = "..."')
    return {name: value.strip() for name, value in table.items()}


def _attachments(value: Any, where: str) -> list[str]:
    """attachments = ["data/faq.pdf", ...]: files every message carries."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ManifestError(
            f'{where}: attachments must list files, like attachments = ["data/faq.pdf"]'
        )
    return [v.strip() for v in value]


def _items(group: Any, where: str) -> dict[str, str]:
    """[group] items is a list of columns, or a table of item field -> column."""
    if not isinstance(group, dict):
        raise ManifestError(f"{where}: group must be a table, written [group]")
    items = group.get("items", [])
    if isinstance(items, list) and all(isinstance(i, str) and i.strip() for i in items):
        return {name.strip(): name.strip() for name in items}
    if isinstance(items, dict) and all(isinstance(v, str) for v in items.values()):
        return {name: column.strip() for name, column in items.items()}
    raise ManifestError(
        f'{where}: [group] items must list columns, like items = ["order_id", "amount"]'
    )


def _sources(raw: Any, where: str) -> list[SourceSpec]:
    """[source] is one table; [[source]] is a list of them."""
    if raw is None:
        raise ManifestError(f'{where}: [source] is missing; add [source] path = "data/....csv"')
    tables = raw if isinstance(raw, list) else [raw]
    if not tables:
        raise ManifestError(f'{where}: [[source]] is empty; add [[source]] path = "data/....csv"')
    return [_source(table, where) for table in tables]


def _source(table: Any, where: str) -> SourceSpec:
    if not isinstance(table, dict):
        raise ManifestError(f"{where}: [source] must be a table")
    unknown = sorted(set(table) - _SOURCE_KEYS)
    if unknown:
        raise ManifestError(
            f"{where}: [source] has unknown key {unknown[0]!r}; "
            f"expected {', '.join(sorted(_SOURCE_KEYS))}"
        )
    if any(not isinstance(v, str) for v in table.values()):
        raise ManifestError(f"{where}: every [source] value must be a string in quotes")
    spec = SourceSpec(**table)
    if bool(spec.path) == bool(spec.url):
        raise ManifestError(
            f"{where}: [source] needs exactly one of path or url (with query or query_file)"
        )
    if spec.url and not (spec.query or spec.query_file):
        raise ManifestError(f"{where}: [source] url needs query or query_file")
    return spec
