"""Every command has help text and appears in the README."""

from __future__ import annotations

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
