"""Where an incident's files live, so no other module builds paths by hand."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from notify.errors import WorkspaceError

_INCIDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Workspace:
    """A folder holding .env, incidents/, templates/, data/ and the tool's state in .notify/."""

    root: Path

    @classmethod
    def open(cls, root: Path) -> Workspace:
        """Check the folder exists; its contents are checked when they are needed."""
        root = root.expanduser().resolve()
        if not root.is_dir():
            raise WorkspaceError(
                f"workspace {root} is not a folder; pass --workspace DIR or set NOTIFY_WORKSPACE"
            )
        return cls(root)

    @property
    def env_file(self) -> Path:
        return self.root / ".env"

    @property
    def state_dir(self) -> Path:
        return self.root / ".notify"

    @property
    def default_ledger(self) -> Path:
        return self.state_dir / "ledger.sqlite3"

    def manifest_path(self, incident_id: str) -> Path:
        return self.root / "incidents" / f"{check_incident_id(incident_id)}.toml"

    def template_dir(self, name: str) -> Path:
        return self.root / "templates" / name

    def incident_dir(self, incident_id: str) -> Path:
        """Files written about one incident: rejects, look-alikes, reports."""
        return self.state_dir / f"incident-{check_incident_id(incident_id)}"

    def default_preview_dir(self, incident_id: str) -> Path:
        return self.root / "previews" / f"incident-{check_incident_id(incident_id)}"

    def relative(self, path: Path) -> str:
        """A path as the operator would type it from the workspace."""
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)


def check_incident_id(incident_id: str) -> str:
    """Incident ids become file names and headers, so only safe characters are allowed."""
    if not _INCIDENT_ID.match(incident_id):
        raise WorkspaceError(
            f"incident id {incident_id!r} must be letters, digits, '.', '_' or '-'; "
            "name the manifest incidents/<ID>.toml accordingly"
        )
    return incident_id
