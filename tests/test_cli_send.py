"""`notify send`: previews, test sends and real sends to a real SMTP server on loopback."""

from __future__ import annotations

import csv
import json
import time
from collections import Counter
from email import message_from_bytes, policy

from tests.conftest import make_rows


def parse(data: bytes):
    return message_from_bytes(data, policy=policy.default)


def test_dry_run_writes_previews_and_touches_nothing(workspace, run_cli, smtp_server):
    workspace.smtp(smtp_server)
    result = run_cli(workspace, "send", "--incident", "42", "--dry-run")
    assert result.exit_code == 0, result.output
    folder = workspace.root / "previews" / "incident-42"
    emls = sorted(p.name for p in folder.glob("*.eml"))
    assert emls == [
        "000001-ann_example.com.eml",
        "000002-bob_example.com.eml",
        "000003-zoe_example.org.eml",
    ]
    summary = list(csv.DictReader((folder / "summary.csv").open(encoding="utf-8-sig")))
    assert [row["to"] for row in summary] == [
        "ann@example.com",
        "bob@example.com",
        "zoe@example.org",
    ]
    index = (folder / "index.html").read_text(encoding="utf-8")
    assert 'href="messages/000003.html"' in index
    page = (folder / "messages" / "000003.html").read_text(encoding="utf-8")
    assert 'href="../000003-zoe_example.org.eml"' in page
    assert "<iframe" in page and "&lt;p&gt;Dear Zo\u00eb O&amp;#39;Brien,&lt;/p&gt;" in page
    assert '<td data-label="Name">Zo\u00eb O&#39;Brien</td>' in index
    message = parse((folder / emls[0]).read_bytes())
    assert "order A-1: 49.00" in message.get_body(("plain",)).get_content()
    assert "order A-3: 5.00" in message.get_body(("plain",)).get_content()
    assert smtp_server.messages == [] and smtp_server.connections == 0
    assert not (workspace.root / ".notify" / "ledger.sqlite3").exists()


def test_dry_run_into_a_chosen_folder(workspace, run_cli, tmp_path):
    target = tmp_path / "look-here"
    result = run_cli(
        workspace, "send", "--incident", "42", "--dry-run", "--preview-dir", str(target)
    )
    assert result.exit_code == 0, result.output
    assert len(list(target.glob("*.eml"))) == 3
    assert (target / "index.html").is_file()


def test_send_delivers_one_message_per_recipient(workspace, run_cli, smtp_server):
    workspace.smtp(smtp_server)
    result = run_cli(workspace, "send", "--incident", "42", "--yes")
    assert result.exit_code == 0, result.output
    assert "Sent: 3 accepted, 0 deferred, 0 refused in " in result.output
    received = {m.rcpt_tos[0]: m for m in smtp_server.messages}
    assert sorted(received) == ["ann@example.com", "bob@example.com", "zoe@example.org"]
    assert smtp_server.connections == 3  # work spreads over every connection from the start
    ann = parse(received["ann@example.com"].data)
    assert received["ann@example.com"].mail_from == "support@acme.example"
    assert ann["From"] == "Acme Support <support@acme.example>"
    assert ann["To"].addresses[0].display_name == "Ann Lee"
    assert ann["Reply-To"] == "help@acme.example"
    assert ann["Auto-Submitted"] == "auto-generated"
    assert ann["X-Notify-Incident"] == "42"
    assert ann["Message-ID"].endswith("@acme.example>")
    assert ann.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in ann.iter_parts()] == ["text/plain", "text/html"]
    text = ann.get_body(("plain",)).get_content()
    assert text.index("order A-1: 49.00") < text.index("order A-3: 5.00")
    zoe = parse(received["zoe@example.org"].data)
    assert zoe["To"].addresses[0].display_name == "Zo\u00eb O'Brien"
    assert "Dear Zo\u00eb O'Brien" in zoe.get_body(("plain",)).get_content()
    assert "Dear Zo\u00eb O&#39;Brien" in zoe.get_body(("html",)).get_content()


def test_a_send_renders_each_message_once(workspace, run_cli, smtp_server, monkeypatch):
    """The check builds every message before anything leaves; the send takes those bytes
    from the spool instead of rendering them again."""
    import notify.incident
    import notify.messages.pool

    rendered: list[str] = []

    def counting(render):
        def wrapped(templates, recipient, context):
            rendered.append(recipient.key)
            return render(templates, recipient, context)

        return wrapped

    monkeypatch.setattr(notify.messages.pool, "render", counting(notify.messages.pool.render))
    monkeypatch.setattr(notify.incident, "render", counting(notify.incident.render))
    workspace.smtp(smtp_server)
    result = run_cli(workspace, "send", "--incident", "42", "--yes")
    assert result.exit_code == 0, result.output
    assert sorted(rendered) == ["ann@example.com", "bob@example.com", "zoe@example.org"]
    assert len(smtp_server.messages) == 3
    assert not list((workspace.root / "incidents").rglob("notify-spool-*"))


def test_spooled_bytes_of_another_recipient_are_rebuilt_not_sent(
    workspace, run_cli, smtp_server, monkeypatch
):
    """Whatever happens to the spool, no customer gets another customer's message."""
    from notify.messages.spool import Spool

    real_get = Spool.get

    def shifted(self, position):
        return real_get(self, (position + 1) % len(self._offsets))

    monkeypatch.setattr(Spool, "get", shifted)
    workspace.smtp(smtp_server)
    result = run_cli(workspace, "send", "--incident", "42", "--yes")
    assert result.exit_code == 0, result.output
    for message in smtp_server.messages:
        assert parse(message.data)["To"].addresses[0].addr_spec == message.rcpt_tos[0]
    assert len(smtp_server.messages) == 3


def test_rerun_sends_nothing_twice_and_status_counts(workspace, run_cli, smtp_server):
    workspace.smtp(smtp_server)
    assert run_cli(workspace, "send", "--incident", "42", "--yes").exit_code == 0
    again = run_cli(workspace, "send", "--incident", "42", "--yes")
    assert again.exit_code == 0
    assert "Nothing to send: everyone has been sent to already." in again.output
    assert len(smtp_server.messages) == 3
    status = run_cli(workspace, "status", "--incident", "42", "--json")
    assert '"accepted": 3' in status.output
    assert '"due": "nothing is due"' in status.output


def test_limit_sends_in_slices(workspace, run_cli, smtp_server):
    workspace.smtp(smtp_server)
    workspace.rows(make_rows(5))
    assert run_cli(workspace, "send", "--incident", "42", "--yes", "--limit", "2").exit_code == 0
    assert len(smtp_server.messages) == 2
    assert run_cli(workspace, "send", "--incident", "42", "--yes").exit_code == 0
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == [
        f"customer{n}@example.com" for n in range(5)
    ]


def test_test_send_goes_to_the_operator_only(workspace, run_cli, smtp_server):
    workspace.smtp(smtp_server)
    result = run_cli(workspace, "send", "--incident", "42", "--to", "me@acme.example")
    assert result.exit_code == 0, result.output
    assert [m.rcpt_tos for m in smtp_server.messages] == [["me@acme.example"]]
    message = parse(smtp_server.messages[0].data)
    assert message["X-Notify-Test-Send"].startswith("for ann@example.com")
    assert message["To"].addresses[0].addr_spec == "ann@example.com"
    status = run_cli(workspace, "status", "--incident", "42", "--json")
    assert '"accepted": 0' in status.output


def test_permanent_and_temporary_refusals_exit_1_with_who(workspace, run_cli, smtp_server):
    workspace.smtp(smtp_server)
    workspace.rows(
        [
            ["Ok", "ok@example.com", "", "A-1", "1"],
            ["Gone", "fail-550@example.com", "", "A-2", "2"],
            ["Later", "fail-451@example.com", "", "A-3", "3"],
        ]
    )
    result = run_cli(workspace, "send", "--incident", "42", "--yes")
    assert result.exit_code == 1
    assert "Sent: 1 accepted, 1 deferred, 1 refused in " in result.output
    assert "row 3: fail-550@example.com: refused 5.1.1" in result.output
    assert "row 4: fail-451@example.com: deferred 4.3.0" in result.output
    status = run_cli(workspace, "status", "--incident", "42", "--json")
    assert '"refused": 1' in status.output and '"deferred": 1' in status.output


def test_starttls_with_login(workspace, run_cli, smtp_starttls_server, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(smtp_starttls_server.ca_file))
    workspace.env(
        smtp_host="localhost",
        smtp_port=smtp_starttls_server.port,
        smtp_security="starttls",
        smtp_user="notify",
        smtp_password="s3cret",
    )
    result = run_cli(workspace, "send", "--incident", "42", "--yes")
    assert result.exit_code == 0, result.output
    assert len(smtp_starttls_server.messages) == 3
    assert "s3cret" not in result.output


def test_implicit_tls(workspace, run_cli, smtp_tls_server, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(smtp_tls_server.ca_file))
    workspace.env(smtp_host="localhost", smtp_port=smtp_tls_server.port, smtp_security="tls")
    result = run_cli(workspace, "send", "--incident", "42", "--yes")
    assert result.exit_code == 0, result.output
    assert len(smtp_tls_server.messages) == 3


def test_tls_refuses_an_untrusted_certificate(workspace, run_cli, smtp_tls_server):
    workspace.env(smtp_host="localhost", smtp_port=smtp_tls_server.port, smtp_security="tls")
    result = run_cli(workspace, "send", "--incident", "42", "--yes")
    assert result.exit_code == 4
    assert result.output.splitlines()[-1].startswith(
        f"Error: TLS with localhost:{smtp_tls_server.port} failed (CERTIFICATE_VERIFY_FAILED)"
    )
    assert smtp_tls_server.messages == []


def test_wrong_password_sends_nothing_and_marks_nobody(
    workspace, run_cli, smtp_starttls_server, monkeypatch
):
    monkeypatch.setenv("SSL_CERT_FILE", str(smtp_starttls_server.ca_file))
    workspace.env(
        smtp_host="localhost",
        smtp_port=smtp_starttls_server.port,
        smtp_user="notify",
        smtp_password="wrong-password",
    )
    result = run_cli(workspace, "send", "--incident", "42", "--yes")
    assert result.exit_code == 4
    last = result.output.splitlines()[-1]
    assert last.startswith(
        f"Error: localhost:{smtp_starttls_server.port} refused the login for notify (535"
    )
    hint = "check NOTIFY_SMTP_USER and NOTIFY_SMTP_PASSWORD in .env"
    again = "run the same command again to continue"
    assert last.endswith(f"{hint} (stopped after 0 accepted; {again})")
    assert "wrong-password" not in result.output
    assert smtp_starttls_server.messages == []
    status = run_cli(workspace, "status", "--incident", "42", "--json")
    assert '"accepted": 0' in status.output and '"pending": 3' in status.output


def test_wrong_host_sends_nothing(workspace, run_cli, unused_port):
    workspace.env(smtp_host="127.0.0.1", smtp_port=unused_port, smtp_security="none")
    result = run_cli(workspace, "send", "--incident", "42", "--yes")
    assert result.exit_code == 4
    assert f"Error: cannot talk to the relay at 127.0.0.1:{unused_port}" in result.output
    status = run_cli(workspace, "status", "--incident", "42", "--json")
    assert '"accepted": 0' in status.output and '"sending": 0' in status.output


def test_password_over_plain_text_to_a_remote_host_is_refused(workspace, run_cli):
    workspace.env(
        smtp_host="smtp.example.com", smtp_security="none", smtp_user="u", smtp_password="p"
    )
    result = run_cli(workspace, "send", "--incident", "42", "--yes")
    assert result.exit_code == 3
    assert result.output.splitlines()[-1] == (
        "Error: refusing to send the SMTP password unencrypted to smtp.example.com; "
        "set NOTIFY_SMTP_SECURITY=starttls or tls"
    )


def test_sender_refused_stops_the_run_with_one_line(workspace, run_cli, smtp_server):
    workspace.smtp(smtp_server)
    smtp_server.refuse_sender = "support@acme.example"
    result = run_cli(workspace, "send", "--incident", "42", "--yes")
    assert result.exit_code == 4
    assert result.output.count("Error:") == 1
    assert "refused the sender support@acme.example (553" in result.output
    status = run_cli(workspace, "status", "--incident", "42", "--json")
    counts = json.loads(status.output)["counts"]
    # Each connection tried one message; none of them went, so none is in doubt.
    assert counts["sending"] == 0 and counts["accepted"] == 0
    assert counts["pending"] + counts["deferred"] == 3


def test_without_a_terminal_and_without_yes_it_refuses(workspace, run_notify, smtp_server):
    workspace.smtp(smtp_server)
    result = run_notify(workspace, "send", "--incident", "42")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "Error: sending needs a yes and there is no terminal to ask; run again with --yes"
    )
    assert smtp_server.messages == []


def test_in_doubt_is_shown_and_settled_by_the_next_run(workspace, run_cli, smtp_server):
    workspace.smtp(smtp_server, connections=1)  # one connection: the first message is ann's
    smtp_server.drop_next(1, at="data")
    first = run_cli(workspace, "send", "--incident", "42", "--yes")
    assert first.exit_code == 1
    assert "Sent: 2 accepted, 0 deferred, 0 refused, 1 in doubt in " in first.output
    assert "row 2: ann@example.com: in doubt connection lost after the message was sent" in (
        first.output
    )
    status = run_cli(workspace, "status", "--incident", "42")
    assert "  in doubt            1" in status.output.splitlines()
    second = run_cli(workspace, "send", "--incident", "42", "--yes")
    assert second.exit_code == 0, second.output
    assert [m.rcpt_tos[0] for m in smtp_server.messages] == [
        "bob@example.com",
        "zoe@example.org",
        "ann@example.com",  # the one in doubt, settled by the second run
    ]


def test_a_unicode_address_without_smtputf8_is_held_not_sent_and_not_suppressed(
    workspace, run_cli, smtp_server, monkeypatch
):
    from tests import smtp_server as server_module

    offered = server_module._Handler.handle_EHLO

    async def without_smtputf8(self, server, session, envelope, hostname, responses):
        lines = await offered(self, server, session, envelope, hostname, responses)
        return [line for line in lines if "SMTPUTF8" not in line]

    monkeypatch.setattr(server_module._Handler, "handle_EHLO", without_smtputf8)
    workspace.smtp(smtp_server)
    workspace.rows(
        [["José", "josé@example.com", "", "A-1", "1"], ["Ann", "ann@example.com", "", "A-2", "2"]]
    )
    result = run_cli(workspace, "send", "--incident", "42", "--yes")
    assert result.exit_code == 1, result.output
    assert [m.rcpt_tos for m in smtp_server.messages] == [["ann@example.com"]]
    assert "row 2: josé@example.com: blocked 5.6.7 the relay does not offer SMTPUTF8" in (
        result.output
    )
    listed = run_cli(workspace, "suppressions", "list")
    assert listed.output.strip() == "0 suppressed address(es)."


def test_a_very_long_name_goes_out_in_folded_header_lines(workspace, run_cli, smtp_server):
    """A 1,200-character name once made a 1,221-octet To line, and the relay refused it."""
    workspace.smtp(smtp_server)
    long_name = "Ann-Marie " * 120
    workspace.rows([[long_name, "ann@example.com", "", "A-1", "1.00"]])
    workspace.write("templates/apology/subject.j2", "Sorry {{ customer.name }}\n")
    assert run_cli(workspace, "check", "--incident", "42").exit_code == 0
    result = run_cli(workspace, "send", "--incident", "42", "--yes")
    assert result.exit_code == 0, result.output
    (received,) = smtp_server.messages
    head = received.data[: received.data.index(b"\r\n\r\n")]
    assert max(len(line) for line in head.split(b"\r\n")) <= 78
    message = parse(received.data)
    assert message["To"].addresses[0].display_name == long_name.strip()
    assert message["Subject"] == f"Sorry {long_name.strip()}"


def test_a_relay_trickling_one_reply_costs_one_deadline_and_the_rest_is_sent(
    workspace, run_cli, smtp_server, monkeypatch
):
    from notify.transports import smtp

    monkeypatch.setattr(smtp, "MESSAGE_SECONDS", 1.0)
    smtp_server.trickle_seconds = 0.2
    workspace.smtp(smtp_server, connections="1")
    workspace.rows(
        [
            ["Ann", "ann@example.com", "", "A-1", "1.00"],
            ["Tom", "trickle@example.com", "", "A-2", "2.00"],
            ["Bob", "bob@example.com", "", "A-3", "3.00"],
        ]
    )
    started = time.monotonic()
    result = run_cli(workspace, "send", "--incident", "42", "--yes")
    assert time.monotonic() - started < 10
    assert result.exit_code == 1
    assert "Sent: 2 accepted, 0 deferred, 0 refused, 1 in doubt in " in result.output
    assert (
        "row 3: trickle@example.com: in doubt connection lost after the message was sent, "
        "outcome unknown: no reply within the 1 s given to the message"
    ) in result.output
    assert sorted(m.rcpt_tos[0] for m in smtp_server.messages) == [
        "ann@example.com",
        "bob@example.com",
    ]


def test_a_test_send_has_its_own_identity_and_picks_the_named_customer(
    workspace, run_cli, smtp_server
):
    workspace.smtp(smtp_server, return_path="bounces@acme.example")
    result = run_cli(
        workspace,
        "send",
        "--incident",
        "42",
        "--to",
        "me@acme.example",
        "--customer",
        "ZOE@example.org",
    )
    assert result.exit_code == 0, result.output
    received = smtp_server.messages[0]
    message = parse(received.data)
    assert message["To"].addresses[0].addr_spec == "zoe@example.org"
    assert message["Message-ID"].startswith("<test-")
    assert message["Message-ID"].endswith(".42@acme.example>")
    assert received.mail_from == "bounces@acme.example"  # no customer's VERP token


def test_customer_must_be_one_of_the_incident(workspace, run_cli, smtp_server):
    workspace.smtp(smtp_server)
    result = run_cli(
        workspace, "send", "--incident", "42", "--to", "me@acme.example", "--customer", "x@y.org"
    )
    assert result.exit_code == 3
    assert result.output.strip().splitlines()[-1] == (
        "Error: --customer x@y.org: no recipient of incident 42 has this address; give one "
        "from the export (see notify check's counts)"
    )
    assert smtp_server.messages == []


def test_a_bounce_of_a_test_send_changes_no_customer(workspace, run_cli, smtp_server, tmp_path):
    from tests.bounce_factory import dsn, write_mbox

    workspace.smtp(smtp_server, return_path="bounces@acme.example")
    assert run_cli(workspace, "send", "--incident", "42", "--yes").exit_code == 0
    smtp_server.reset()
    # The worst case: a test send to a customer's own address, which then bounces.
    test = run_cli(workspace, "send", "--incident", "42", "--to", "ann@example.com")
    assert test.exit_code == 0, test.output
    box = tmp_path / "bounces.mbox"
    write_mbox(box, [dsn(smtp_server.messages[0], status="5.1.1", diagnostic="550 no such user")])
    read = run_cli(workspace, "bounces", "--incident", "42", "--mbox", str(box))
    assert "returns a test send, which no customer's record is touched by" in read.output
    status = json.loads(run_cli(workspace, "status", "--incident", "42", "--json").output)
    assert status["counts"]["accepted"] == 3 and status["counts"]["hard-bounced"] == 0
    listed = run_cli(workspace, "suppressions", "list")
    assert "ann@example.com" not in listed.output


def test_thirty_recipients_spread_over_three_connections_from_the_start(
    workspace, run_cli, smtp_server
):
    workspace.smtp(smtp_server, connections=3)
    workspace.rows(make_rows(30))
    smtp_server.delay = 0.05
    result = run_cli(workspace, "send", "--incident", "42", "--yes")
    assert result.exit_code == 0, result.output
    per_connection = Counter(m.connection for m in smtp_server.messages)
    assert len(per_connection) == 3 and min(per_connection.values()) >= 5, per_connection
    first_three = {m.connection for m in smtp_server.messages[:3]}
    assert len(first_three) == 3  # every connection carries one of the first messages


def test_a_rerun_with_nobody_left_to_send_exits_1_while_someone_is_refused(
    workspace, run_cli, smtp_server
):
    workspace.smtp(smtp_server)
    workspace.rows(
        [["Ok", "ok@example.com", "", "A-1", "1"], ["Gone", "fail-550@example.com", "", "A-2", "2"]]
    )
    assert run_cli(workspace, "send", "--incident", "42", "--yes").exit_code == 1
    again = run_cli(workspace, "send", "--incident", "42", "--yes")
    assert again.exit_code == 1, again.output
    assert "Nothing to send now." in again.output
    assert "row 3: fail-550@example.com: refused" in again.output
