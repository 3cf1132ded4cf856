"""`notify new`: a manifest and starter template from an export, that passes the check as is."""

from __future__ import annotations

import shutil
import tomllib

from tests.conftest import REPO_ROOT


def test_new_on_the_demo_export_passes_the_check_unedited(workspace, run_cli):
    shutil.copyfile(REPO_ROOT / "data/incident-42-affected.csv", workspace.root / "data/demo.csv")
    result = run_cli(workspace, "new", "7", "--export", str(workspace.root / "data/demo.csv"))
    assert result.exit_code == 0, result.output
    manifest = (workspace.root / "incidents/7.toml").read_text(encoding="utf-8")
    data = tomllib.loads(manifest)
    assert data["source"] == {"path": "data/demo.csv"}
    assert data["columns"] == {"email": "Email Address", "name": "Customer"}
    assert data["template"] == "7"
    assert '# account_id = "Account ID"' in manifest.splitlines()
    assert '# charged_on = "charged_on"' in manifest.splitlines()
    lines = result.output.splitlines()
    assert lines[0] == "Wrote incidents/7.toml: email <- 'Email Address'"
    assert "Wrote a starter template in templates/7/" in lines
    assert lines[-1] == (
        "Next: edit title, from and [facts] in incidents/7.toml and the text in templates/7/, "
        "then: notify check --incident 7"
    )
    check = run_cli(workspace, "check", "--offline", "--incident", "7")
    assert check.exit_code == 0, check.output
    assert check.output.splitlines()[-2] == (
        "213 will be sent; 1 held back (typo domain) — see .notify/incident-7/review.csv; "
        "11 rejected — see .notify/incident-7/rejects.csv"
    )


def test_new_copies_a_windows_1252_semicolon_export_from_outside(workspace, run_cli, tmp_path):
    outside = tmp_path / "crm export.csv"
    outside.write_bytes(
        "Kunde;Nummer;E-Mail\n"
        "José Núñez;17;jose@example.com\n"
        "Renée Faÿ;18;renee@example.org\n".encode("cp1252")
    )
    result = run_cli(workspace, "new", "cp", "--export", str(outside))
    assert result.exit_code == 0, result.output
    data = tomllib.loads((workspace.root / "incidents/cp.toml").read_text(encoding="utf-8"))
    assert data["columns"] == {"email": "E-Mail"}
    assert data["source"] == {"path": "data/crm export.csv"}
    assert (workspace.root / "data/crm export.csv").read_bytes() == outside.read_bytes()
    assert "Copied the export to data/crm export.csv" in result.output.splitlines()
    assert "2 will be sent" in result.output.splitlines()
    check = run_cli(workspace, "check", "--offline", "--incident", "cp")
    assert check.exit_code == 0, check.output


def test_new_finds_the_address_column_by_its_values_and_first_names(workspace, run_cli):
    workspace.write(
        "data/people.csv",
        "Contact,First Name,Last Name,Notes\n"
        "ann@example.com,Ann,Lee,mail me at x@y\n"
        "bob@example.com,Bob,Stone,\n",
    )
    result = run_cli(workspace, "new", "8", "--export", str(workspace.root / "data/people.csv"))
    assert result.exit_code == 0, result.output
    data = tomllib.loads((workspace.root / "incidents/8.toml").read_text(encoding="utf-8"))
    assert data["columns"] == {
        "email": "Contact",
        "first_name": "First Name",
        "last_name": "Last Name",
    }
    body = (workspace.root / "templates/8/body.txt.j2").read_text(encoding="utf-8")
    assert body.startswith('Dear {{ customer.first_name | default("customer") }},')


def test_new_refuses_to_overwrite_a_manifest(workspace, run_cli):
    before = (workspace.root / "incidents/42.toml").read_text(encoding="utf-8")
    result = run_cli(workspace, "new", "42", "--export", str(workspace.root / "data/affected.csv"))
    assert result.exit_code == 3
    assert result.output.strip() == (
        "Error: incidents/42.toml already exists; edit it, or pick another ID"
    )
    assert (workspace.root / "incidents/42.toml").read_text(encoding="utf-8") == before


def test_new_on_an_export_without_addresses_is_one_line(workspace, run_cli):
    workspace.write("data/names.csv", "Name,City\nAnn,Oslo\nBob,Rome\n")
    result = run_cli(workspace, "new", "9", "--export", str(workspace.root / "data/names.csv"))
    assert result.exit_code == 3
    assert result.output.strip() == (
        f"Error: {(workspace.root / 'data/names.csv').resolve()}: no column holds mostly email "
        "addresses; export the address column too"
    )
    assert not (workspace.root / "incidents/9.toml").exists()
