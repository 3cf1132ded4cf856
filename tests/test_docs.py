"""Every command has help text and appears in the README."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from notify.cli import cli
from tests.conftest import REPO_ROOT

COMMANDS = sorted(cli.commands)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_and_is_in_the_readme(command):
    result = CliRunner().invoke(cli, [command, "-h"])
    assert result.exit_code == 0
    assert cli.commands[command].help
    assert f"notify {command}" in (REPO_ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_has_the_two_fresh_machine_commands():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert "pip install -e . && notify send --incident 42 --dry-run" in readme
    assert "bash .ci/run" in readme


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("notify, version ")


@pytest.mark.parametrize(("incident", "previews"), [("42", 213), ("43", 9)])
def test_the_demo_incidents_preview(tmp_path, clean_environ, incident, previews):
    """The README's demo: the repository's own incidents, copied so the test writes nothing
    into the repository."""
    for folder in ("incidents", "templates", "data"):
        shutil.copytree(REPO_ROOT / folder, tmp_path / folder)
    result = CliRunner().invoke(
        cli, ["send", "--incident", incident, "--dry-run", "--workspace", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert f"Wrote {previews} preview(s) to " in result.output
