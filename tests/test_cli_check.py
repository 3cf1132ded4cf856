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
    result = run_cli(workspace, "check", "--offline", "--incident", "42")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "  rows read                   6" in lines
    assert "  rejected                    2" in lines
    assert "    no address                1" in lines
    assert "    not a valid address        1" in lines
    assert "  duplicates merged           1" in lines
    assert "  look-alikes                 1" in lines
    assert "  recipients                  3" in lines
    assert lines[-2:] == [
        "3 will be sent; 2 rejected — see .notify/incident-42/rejects.csv",
        "Next: notify send --incident 42 --dry-run",
    ]
    rejects = list(
        csv.DictReader(
            (workspace.root / ".notify/incident-42/rejects.csv").open(encoding="utf-8-sig")
        )
    )
    assert [(r["row"], r["value"]) for r in rejects] == [("6", "bob@@example.com"), ("7", "")]
    assert rejects[0]["column"] == "Email Address"
    lookalikes = list(
        csv.DictReader(
            (workspace.root / ".notify/incident-42/lookalikes.csv").open(encoding="utf-8-sig")
        )
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
    result = run_cli(workspace, "check", "--offline", "--incident", "42")
    assert result.exit_code == 3
    assert (
        "Error: 2 problem(s) stop the send; nothing was sent. First: bob@example.com "
        "(data/affected.csv row 3): body.txt.j2 line 1: 'dict object' has no attribute 'phone'; "
        "map the column in [columns] or give the template a | default(...) (and 1 more)"
    ) in result.output


def test_missing_manifest_names_the_known_incidents(workspace, run_cli):
    result = run_cli(workspace, "check", "--offline", "--incident", "43")
    assert result.exit_code == 3
    assert result.output.strip() == (
        "Error: incidents/43.toml not found; known incidents: 42; check --incident"
    )


def test_unknown_template_lists_the_known_ones(workspace, run_cli):
    workspace.write("incidents/42.toml", DEFAULT_MANIFEST.replace('"apology"', '"apologie"'))
    result = run_cli(workspace, "check", "--offline", "--incident", "42")
    assert result.exit_code == 3
    assert result.output.strip() == (
        "Error: template folder templates/apologie not found; known templates: apology, "
        "or fix template ="
    )


def test_a_mapped_column_the_export_lacks_names_the_closest(workspace, run_cli):
    workspace.write("incidents/42.toml", DEFAULT_MANIFEST.replace('"Customer"', '"Custmer"'))
    result = run_cli(workspace, "check", "--offline", "--incident", "42")
    assert result.exit_code == 3
    assert result.output.strip() == (
        "Error: incidents/42.toml [columns] name = 'Custmer': the export has no such column; "
        "closest: 'Customer'; fix the column name in [columns]"
    )


def test_an_empty_export_is_an_error(workspace, run_cli):
    workspace.rows([])
    result = run_cli(workspace, "check", "--offline", "--incident", "42")
    assert result.exit_code == 3
    assert result.output.startswith("Error: ")
    assert "data/affected.csv" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_an_unreadable_export_is_one_line(workspace, run_cli):
    (workspace.root / "data" / "affected.csv").unlink()
    (workspace.root / "data" / "affected.csv").mkdir()
    result = run_cli(workspace, "check", "--offline", "--incident", "42")
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
    result = run_cli(workspace, "check", "--offline", "--incident", "42")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "    likely typo domain        1" in lines
    assert "  addresses to review         2" in lines
    assert "    role address              1" in lines
    assert "    typo domain               1" in lines
    assert "  recipients                  2" in lines
    assert lines[-2] == (
        "2 will be sent; 1 held back (typo domain) — see .notify/incident-42/review.csv"
    )
    assert "All good" not in result.output
    review = list(
        csv.DictReader(
            (workspace.root / ".notify/incident-42/review.csv").open(encoding="utf-8-sig")
        )
    )
    assert [(r["email"], r["kind"], r["row"]) for r in review] == [
        ("mary@gmial.com", "typo domain", "2"),
        ("support@example.com", "role address", "3"),
    ]
    assert review[0]["detail"].startswith("held back: gmial.com looks like gmail.com")


def test_allow_typo_domains_sends_to_them_and_still_lists_them(workspace, run_cli):
    workspace.rows([["Mary Major", "mary@gmial.com", "", "A-1", "1.00"]])
    held = run_cli(workspace, "check", "--offline", "--incident", "42")
    assert held.exit_code == 3
    assert "no valid recipient" in held.output
    allowed = run_cli(workspace, "check", "--offline", "--incident", "42", "--allow-typo-domains")
    assert allowed.exit_code == 0, allowed.output
    assert "  recipients                  1" in allowed.output.splitlines()
    review = list(
        csv.DictReader(
            (workspace.root / ".notify/incident-42/review.csv").open(encoding="utf-8-sig")
        )
    )
    assert review[0]["detail"] == "sent although it looks like gmail.com (--allow-typo-domains)"


def test_rows_read_as_windows_1252_and_bidi_controls_are_named_with_their_rows(workspace, run_cli):
    header = "Customer,Email Address,Phone,order_id,amount\n"
    workspace.write(
        "data/affected.csv",
        header.encode()
        + "Zoë Müller,zoe@example.com,,A-1,1\n".encode()
        + "José Núñez,jose@example.com,,A-2,2\n".encode("cp1252")
        + "Ann \u202eeeL,ann@example.com,,A-3,3\n".encode()
        + b"Bob,bob@example.com,,A-4,4\n"
        + "Renée,renee@example.com,,A-5,5\n".encode("cp1252"),
    )
    result = run_cli(workspace, "check", "--offline", "--incident", "42")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "  addresses to review         3" in lines
    assert "    not UTF-8                 2" in lines
    assert "    bidi control              1" in lines
    assert (
        "Rows read as Windows-1252 (not UTF-8 like the rest); check their names: "
        "data/affected.csv rows 3, 6"
    ) in lines
    assert (
        "Rows with bidirectional controls in a value; check they read right: "
        "data/affected.csv row 4"
    ) in lines
    with (workspace.root / ".notify/incident-42/review.csv").open(encoding="utf-8-sig") as out:
        review = [(r["email"], r["kind"], r["row"]) for r in csv.DictReader(out)]
    assert review == [
        ("jose@example.com", "not UTF-8", "3"),
        ("renee@example.com", "not UTF-8", "6"),
        ("ann@example.com", "bidi control", "4"),
    ]


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (
            'Dear {{ customer.nmae | default("customer") }},\n',
            "templates/apology/body.txt.j2 line 1: customer.nmae is not a field any column maps; "
            "closest mapped field: customer.name; fix the template or [columns]",
        ),
        (
            "Hi\n{% for item in items | sort(attribute='amount') %}{{ item['amout'] | upper }}"
            "{% endfor %}\n",
            "templates/apology/body.txt.j2 line 2: item.amout is not a field any column maps; "
            "closest mapped field: item.amount; fix the template or [group] items",
        ),
    ],
)
def test_a_template_field_no_column_maps_stops_the_check(workspace, run_cli, template, expected):
    workspace.write("templates/apology/body.txt.j2", template)
    result = run_cli(workspace, "check", "--offline", "--incident", "42")
    assert result.exit_code == 3
    assert result.output.splitlines()[-1] == (
        f"Error: 1 problem(s) stop the send; nothing was sent. First: {expected}"
    )


def test_check_opens_the_relay_and_sends_nothing(workspace, run_cli, smtp_server):
    workspace.smtp(smtp_server)
    result = run_cli(workspace, "check", "--incident", "42")
    assert result.exit_code == 0, result.output
    assert (
        f"Relay: 127.0.0.1:{smtp_server.port} (none, no login): no PIPELINING, SMTPUTF8, "
        "SIZE 33,554,432 bytes; nothing was sent"
    ) in result.output.splitlines()
    assert result.output.splitlines()[-2] == "3 will be sent"
    assert smtp_server.connections == 1
    assert not any(c.startswith(("MAIL", "RCPT", "DATA")) for c in smtp_server.commands)
    assert smtp_server.messages == []


def test_check_without_a_relay_host_says_so_unless_offline(workspace, run_cli):
    result = run_cli(workspace, "check", "--incident", "42")
    assert result.exit_code == 3
    assert result.output.splitlines()[-1] == (
        "Error: NOTIFY_SMTP_HOST is not set; put NOTIFY_SMTP_HOST=smtp.example.com in .env"
    )
    assert run_cli(workspace, "check", "--incident", "42", "--offline").exit_code == 0


def test_check_stops_on_a_relay_it_cannot_reach(workspace, run_cli, unused_port):
    workspace.env(smtp_host="127.0.0.1", smtp_port=unused_port, smtp_security="none")
    result = run_cli(workspace, "check", "--incident", "42")
    assert result.exit_code == 4
    last = result.output.splitlines()[-1]
    assert last.startswith(f"Error: cannot talk to the relay at 127.0.0.1:{unused_port} (")
    assert last.endswith(
        "check NOTIFY_SMTP_HOST, NOTIFY_SMTP_PORT and NOTIFY_SMTP_SECURITY in .env"
    )


def test_check_stops_on_a_refused_login(workspace, run_cli, smtp_starttls_server, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(smtp_starttls_server.ca_file))
    workspace.env(
        smtp_host="localhost",
        smtp_port=smtp_starttls_server.port,
        smtp_user="notify",
        smtp_password="wrong-password",
    )
    result = run_cli(workspace, "check", "--incident", "42")
    assert result.exit_code == 4
    last = result.output.splitlines()[-1]
    assert last.startswith(
        f"Error: localhost:{smtp_starttls_server.port} refused the login for notify (535"
    )
    assert last.endswith("check NOTIFY_SMTP_USER and NOTIFY_SMTP_PASSWORD in .env")
    assert "wrong-password" not in result.output


def test_check_says_when_templates_changed_since_the_first_send(workspace, run_cli, smtp_server):
    workspace.smtp(smtp_server)
    assert run_cli(workspace, "send", "--incident", "42", "--yes", "--limit", "1").exit_code == 0
    workspace.write("templates/apology/subject.j2", "Sorry again, {{ customer.name }}\n")
    result = run_cli(workspace, "check", "--incident", "42", "--offline")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert (
        "Changed since the first send: templates; a send refuses to mix two versions: restore "
        "them, or send with --accept-changes"
    ) in lines
    assert lines[-2] == "2 will be sent; 1 already sent"


def test_dry_run_prints_the_numbers_of_a_send(workspace, run_cli, tmp_path):
    workspace.rows(
        [
            ["Mary Major", "mary@gmial.com", "", "A-1", "1.00"],
            ["Kim Lee", "kim@example.org", "", "A-3", "3.00"],
            ["Nobody", "", "", "A-6", "6.00"],
        ]
    )
    result = run_cli(
        workspace, "send", "--incident", "42", "--dry-run", "--preview-dir", str(tmp_path / "p")
    )
    assert result.exit_code == 0, result.output
    assert "  recipients                  1" in result.output.splitlines()
    assert (
        "1 will be sent; 1 held back (typo domain) — see .notify/incident-42/review.csv; "
        "1 rejected — see .notify/incident-42/rejects.csv"
    ) in result.output.splitlines()


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
    result = run_cli(workspace, "check", "--incident", "42", "--offline")
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
