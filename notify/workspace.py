"""Where an incident's files live, and the Context a command works in (built once)."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from notify.errors import LedgerError, WorkspaceError
from notify.ledger import Ledger
from notify.settings import Settings, load_settings, read_environment

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


class Context:
    """One command's world: the workspace, its settings and its ledger.

    Built once at the edge (the CLI), so settings are read and validated in one place and
    the ledger is opened at most once, and only by a command that needs it."""

    def __init__(self, workspace: Workspace, settings: Settings, environ: Mapping[str, str]):
        self.workspace = workspace
        self.settings = settings
        self.environ = environ  # for ${VAR} in a source URL: .env, then the environment

    @classmethod
    def open(cls, root: Path, environ: Mapping[str, str]) -> Context:
        """The workspace at `root`, with .env and `environ` read and checked now."""
        workspace = Workspace.open(root)
        settings = load_settings(workspace, environ)
        return cls(workspace, settings, read_environment(workspace, environ))

    def ledger(self) -> Ledger:
        """NOTIFY_LEDGER when set, else the workspace's own SQLite file; opened once."""
        return self._ledger

    @functools.cached_property
    def _ledger(self) -> Ledger:
        return Ledger.open(self.settings.ledger or self.workspace.default_ledger)

    def sent_ledger(self, incident_id: str, *, so: str) -> Ledger:
        """The ledger of a command that only makes sense after a send: one clear line,
        ending with `so` (what cannot be done yet), when nothing was ever sent."""
        if not self.ledger_exists():
            raise LedgerError(
                f"nothing has been sent for incident {incident_id} from this workspace, so "
                f"{so}; run notify send --incident {incident_id} first"
            )
        return self.ledger()

    def ledger_exists(self) -> bool:
        """Whether anything was ever sent from here: reading commands say so instead of
        creating an empty ledger."""
        return bool(self.settings.ledger) or self.workspace.default_ledger.exists()
