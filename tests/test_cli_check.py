"""`notify check`: the numbers an operator sees, and one clear line for each bad input."""

from __future__ import annotations

import csv
import sqlite3
import time

import pytest

from notify import sandbox
from tests.conftest import DEFAULT_MANIFEST


def test_check_prints_the_numbers_and_writes_rejects_and_lookalikes(workspace, run_cli):
    workspace.rows(
        [
            ["Ann Lee", "ann@example.com", "", "A-1", "1.00"],
            ["Ann Lee", " ANN@example.com", "", "A-2", "2.00"],
            ["Jon Smith", "jon.smith@example.net", "", "A-3", "3.00"],
            ["John Smith", "john.smith@example.org", "", "A-4", "4.00"],
            ["Bad", "bob@@example.com", "", "A-5", "5.00"],
            ["Nobody", "", "", "A-6", "6.00"],
        ]
    )
    result = run_cli(workspace, "check", "--incident", "42")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "  rows read                   6" in lines
    assert "  rejected                    2" in lines
    assert "    no address                1" in lines
    assert "    not a valid address        1" in lines
    assert "  duplicates merged           1" in lines
    assert "  look-alikes                 1" in lines
    assert "  recipients                  3" in lines
    assert lines[-1] == "All good. Next: notify send --incident 42 --dry-run"
    rejects = list(csv.DictReader((workspace.root / ".notify/incident-42/rejects.csv").open()))
    assert [(r["row"], r["value"]) for r in rejects] == [("6", "bob@@example.com"), ("7", "")]
    assert rejects[0]["column"] == "Email Address"
    lookalikes = list(
        csv.DictReader((workspace.root / ".notify/incident-42/lookalikes.csv").open())
    )
    assert lookalikes == [
        {
            "first": "jon.smith@example.net",
            "second": "john.smith@example.org",
            "reason": "similar names 'Jon Smith' and 'John Smith'",
        }
    ]


def test_check_fails_when_a_template_needs_a_field_a_recipient_lacks(workspace, run_cli):
    workspace.write("templates/apology/body.txt.j2", "Call us on {{ customer.phone }}\n")
    result = run_cli(workspace, "check", "--incident", "42")
    assert result.exit_code == 3
    assert (
        "Error: 2 problem(s) stop the send; nothing was sent. First: bob@example.com "
        "(data/affected.csv row 3): body.txt.j2 line 1: 'dict object' has no attribute 'phone'; "
        "map the column in [columns] or give the template a | default(...) (and 1 more)"
    ) in result.output


def test_missing_manifest_names_the_known_incidents(workspace, run_cli):
    result = run_cli(workspace, "check", "--incident", "43")
    assert result.exit_code == 3
    assert result.output.strip() == (
        "Error: incidents/43.toml not found; known incidents: 42; check --incident"
    )


def test_unknown_template_lists_the_known_ones(workspace, run_cli):
    workspace.write("incidents/42.toml", DEFAULT_MANIFEST.replace('"apology"', '"apologie"'))
    result = run_cli(workspace, "check", "--incident", "42")
    assert result.exit_code == 3
    assert result.output.strip() == (
        "Error: template folder templates/apologie not found; known templates: apology, "
        "or fix template ="
    )


def test_a_mapped_column_the_export_lacks_names_the_closest(workspace, run_cli):
    workspace.write("incidents/42.toml", DEFAULT_MANIFEST.replace('"Customer"', '"Custmer"'))
    result = run_cli(workspace, "check", "--incident", "42")
    assert result.exit_code == 3
    assert result.output.strip() == (
        "Error: incidents/42.toml [columns] name = 'Custmer': the export has no such column; "
        "closest: 'Customer'; fix the column name in [columns]"
    )


def test_an_empty_export_is_an_error(workspace, run_cli):
    workspace.rows([])
    result = run_cli(workspace, "check", "--incident", "42")
    assert result.exit_code == 3
    assert result.output.startswith("Error: ")
    assert "data/affected.csv" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_an_unreadable_export_is_one_line(workspace, run_cli):
    (workspace.root / "data" / "affected.csv").unlink()
    (workspace.root / "data" / "affected.csv").mkdir()
    result = run_cli(workspace, "check", "--incident", "42")
    assert result.exit_code == 3
    assert result.output.startswith("Error: data/affected.csv")
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("args", [["check"], ["check", "--incident"], ["send", "--limit", "0"]])
def test_usage_errors_exit_2(workspace, run_cli, args):
    result = run_cli(workspace, *args)
    assert result.exit_code == 2


def test_typo_domains_are_held_back_and_role_addresses_listed(workspace, run_cli):
    workspace.rows(
        [
            ["Mary Major", "mary@gmial.com", "", "A-1", "1.00"],
            ["Help Desk", "support@example.com", "", "A-2", "2.00"],
            ["Kim Lee", "kim@example.org", "", "A-3", "3.00"],
        ]
    )
    result = run_cli(workspace, "check", "--incident", "42")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "    likely typo domain        1" in lines
    assert "  addresses to review         2" in lines
    assert "    role address              1" in lines
    assert "    typo domain               1" in lines
    assert "  recipients                  2" in lines
    review = list(csv.DictReader((workspace.root / ".notify/incident-42/review.csv").open()))
    assert [(r["email"], r["kind"], r["row"]) for r in review] == [
        ("mary@gmial.com", "typo domain", "2"),
        ("support@example.com", "role address", "3"),
    ]
    assert review[0]["detail"].startswith("held back: gmial.com looks like gmail.com")


def test_allow_typo_domains_sends_to_them_and_still_lists_them(workspace, run_cli):
    workspace.rows([["Mary Major", "mary@gmial.com", "", "A-1", "1.00"]])
    held = run_cli(workspace, "check", "--incident", "42")
    assert held.exit_code == 3
    assert "no valid recipient" in held.output
    allowed = run_cli(workspace, "check", "--incident", "42", "--allow-typo-domains")
    assert allowed.exit_code == 0, allowed.output
    assert "  recipients                  1" in allowed.output.splitlines()
    review = list(csv.DictReader((workspace.root / ".notify/incident-42/review.csv").open()))
    assert review[0]["detail"] == "sent although it looks like gmail.com (--allow-typo-domains)"


BROKEN_ENV = 'NOTIFY_SMTP_HOST=127.0.0.1\n# pacing\n\nNOTIFY_RATE="2\n'


@pytest.mark.parametrize(
    "command",
    [
        ["check", "--incident", "42"],
        ["send", "--incident", "42", "--dry-run"],
        ["send", "--incident", "42", "--yes"],
        ["status", "--incident", "42"],
        ["report", "--incident", "42"],
    ],
)
def test_a_env_line_that_does_not_parse_stops_every_command(workspace, run_cli, command):
    workspace.write(".env", BROKEN_ENV)
    result = run_cli(workspace, *command)
    assert result.exit_code == 3
    assert result.output.strip() == (
        'Error: .env line 4: the value of NOTIFY_RATE opens a quote (") that is never closed; '
        "fix the line"
    )


def test_a_misspelt_setting_in_the_environment_stops_the_check(workspace, run_cli, monkeypatch):
    monkeypatch.setenv("NOTIFY_SMTP_HOTS", "relay.example")
    result = run_cli(workspace, "check", "--incident", "42")
    assert result.exit_code == 3
    assert result.output.strip() == (
        "Error: NOTIFY_SMTP_HOTS in the environment is not a setting (did you mean "
        "NOTIFY_SMTP_HOST?); unset it or fix the name"
    )


def test_a_source_url_reads_its_variables_from_env_too(workspace, run_cli):
    with sqlite3.connect(workspace.root / "data" / "crm.db") as connection:
        connection.execute(
            'CREATE TABLE affected ("Customer", "Email Address", Phone, order_id, amount)'
        )
        connection.execute(
            "INSERT INTO affected VALUES ('Ann Lee', 'ann@example.com', '', 'A-1', '9')"
        )
    workspace.write(
        "incidents/42.toml",
        DEFAULT_MANIFEST.replace(
            'path = "data/affected.csv"', 'url = "${CRM_URL}"\nquery = "SELECT * FROM affected"'
        ),
    )
    workspace.write(".env", "CRM_URL=sqlite:///data/crm.db\n")
    result = run_cli(workspace, "check", "--incident", "42")
    assert result.exit_code == 0, result.output
    assert "  recipients                  1" in result.output.splitlines()


@pytest.mark.parametrize("command", [["check"], ["send", "--dry-run"]])
@pytest.mark.parametrize(
    ("template", "error"),
    [
        (
            "{{ cycler.__init__.__globals__.os.popen('id').read() }}\n",
            "Error: 3 problem(s) stop the send; nothing was sent. First: ann@example.com "
            "(data/affected.csv row 2): body.txt.j2 line 1: access to attribute '__init__' of "
            "'type' object is unsafe: templates cannot reach Python internals; fix the template "
            "(and 2 more)",
        ),
        (
            "{{ os.environ }}\n",
            "Error: 3 problem(s) stop the send; nothing was sent. First: ann@example.com "
            "(data/affected.csv row 2): body.txt.j2 line 1: 'os' is undefined; map the column "
            "in [columns] or give the template a | default(...) (and 2 more)",
        ),
        (
            "{% for i in range(10**12) %}x{% endfor %}\n",
            "Error: ann@example.com (data/affected.csv row 2): body.txt.j2 line 1: the template "
            "asks range() for 1,000,000,000,000 items; it gives 10,000 at most; fix "
            "templates/apology",
        ),
        (
            "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}\n",
            "Error: ann@example.com (data/affected.csv row 2): body.txt.j2 line 1: the template "
            "ran past its limit of 0.5 s for one message (a loop that never ends?); fix "
            "templates/apology",
        ),
        (
            "{% include '../../etc/passwd' %}\n",
            "Error: 3 problem(s) stop the send; nothing was sent. First: ann@example.com "
            "(data/affected.csv row 2): body.txt.j2 line 1: template '../../etc/passwd' not "
            "found in templates/apology/; a template may include only templates of its own "
            "folder (and 2 more)",
        ),
    ],
)
def test_a_hostile_template_stops_check_and_preview_with_one_line(
    workspace, run_cli, monkeypatch, command, template, error
):
    monkeypatch.setattr(sandbox, "TIME_LIMIT", 0.5)
    workspace.write("templates/apology/body.txt.j2", template)
    started = time.monotonic()
    result = run_cli(workspace, *command, "--incident", "42")
    assert time.monotonic() - started < 10
    assert result.exit_code == 3
    assert result.output.splitlines()[-1] == error
    assert "uid=" not in result.output
    assert not [path for path in workspace.root.glob("previews/**/*") if path.is_file()]
