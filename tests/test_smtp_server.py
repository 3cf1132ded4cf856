"""The test SMTP server itself behaves like a real MTA (checked with plain smtplib)."""

from __future__ import annotations

import smtplib
import ssl
import time

import pytest

from tests.smtp_server import AUTH_PASSWORD, AUTH_USER, SmtpServer

SENDER = "support@acme.example"
RAW = (
    b"From: Acme <support@acme.example>\r\n"
    b"To: ann@example.com\r\n"
    b"Subject: =?utf-8?q?Sorry?=\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Dear Zo\xc3\xab,\r\n"
    b".a line starting with a dot\r\n"
    b"..two dots\r\n"
    b"\r\n"
)


def connect(server: SmtpServer, timeout: float = 5) -> smtplib.SMTP:
    return smtplib.SMTP(server.host, server.port, timeout=timeout)


def test_records_exact_bytes_and_envelope(smtp_server: SmtpServer) -> None:
    with connect(smtp_server) as client:
        client.ehlo()
        assert client.has_extn("smtputf8")
        assert client.has_extn("8bitmime")
        assert not client.has_extn("auth")
        refused = client.sendmail(
            "zoë@acme.example",
            ["ann@example.com", "Bob@Example.com"],
            RAW,
            mail_options=["SMTPUTF8", "BODY=8BITMIME"],
        )
    assert refused == {}
    [message] = smtp_server.messages
    assert message.mail_from == "zoë@acme.example"
    assert message.rcpt_tos == ["ann@example.com", "Bob@Example.com"]
    assert message.data == RAW
    assert message.connection == 1
    assert {"SMTPUTF8", "BODY=8BITMIME"} <= set(message.mail_options)  # smtplib adds SIZE=
    assert message.message["To"] == "ann@example.com"
    assert len(message.queue_id) == 12
    assert smtp_server.commands[0] == f"EHLO {client.local_hostname}"
    assert smtp_server.commands[1].startswith("MAIL FROM:<zoë@acme.example>")


def test_counts_connections_and_numbers_messages(smtp_server: SmtpServer) -> None:
    for _ in range(2):
        with connect(smtp_server) as client:
            client.sendmail(SENDER, ["a@example.com"], RAW)
            client.sendmail(SENDER, ["b@example.com"], RAW)
    assert smtp_server.connections == 2
    assert [m.connection for m in smtp_server.messages] == [1, 1, 2, 2]
    smtp_server.reset()
    assert (smtp_server.messages, smtp_server.connections, smtp_server.commands) == ([], 0, [])


@pytest.mark.parametrize(
    ("rcpt", "code", "text"),
    [
        ("fail-550@example.com", 550,
         b"5.1.1 <fail-550@example.com>: Recipient address rejected: User unknown"),
        ("FAIL-552@example.com", 552, b"5.2.2 Mailbox full"),
        ("fail-451+3@example.com", 451, b"4.3.0 Temporary lookup failure"),
        ("rate-451@example.com", 451, b"4.7.1 Rate limit exceeded, retry in 1 seconds"),
        ("fail-421@example.com", 421, b"4.7.0 Try again later, closing connection"),
    ],
)  # fmt: skip
def test_rcpt_switchboard(smtp_server: SmtpServer, rcpt: str, code: int, text: bytes) -> None:
    with connect(smtp_server) as client, pytest.raises(smtplib.SMTPRecipientsRefused) as info:
        client.sendmail(SENDER, [rcpt], RAW)
    assert info.value.recipients == {rcpt: (code, text)}
    assert smtp_server.messages == []


def test_421_at_rcpt_closes_the_connection(smtp_server: SmtpServer) -> None:
    client = connect(smtp_server)
    try:
        client.ehlo()
        client.mail(SENDER)
        assert client.rcpt("fail-421@example.com")[0] == 421
        assert client.sock is not None
        client.sock.settimeout(2)
        assert client.sock.recv(100) == b""  # EOF: the server hung up
    finally:
        client.close()


def test_partial_refusal_delivers_to_the_rest(smtp_server: SmtpServer) -> None:
    with connect(smtp_server) as client:
        refused = client.sendmail(SENDER, ["ok@example.com", "fail-550@example.com"], RAW)
    assert list(refused) == ["fail-550@example.com"]
    assert [m.rcpt_tos for m in smtp_server.messages] == [["ok@example.com"]]


def test_data_554(smtp_server: SmtpServer) -> None:
    with connect(smtp_server) as client:
        with pytest.raises(smtplib.SMTPDataError) as info:
            client.sendmail(SENDER, ["data-554@example.com"], RAW)
        assert (info.value.smtp_code, info.value.smtp_error) == (554, b"5.6.0 Message rejected")
        client.sendmail(SENDER, ["ok@example.com"], RAW)  # connection still usable
    assert [m.rcpt_tos for m in smtp_server.messages] == [["ok@example.com"]]


def test_slow_is_accepted_late(smtp_server: SmtpServer) -> None:
    smtp_server.slow_seconds = 0.3
    with connect(smtp_server) as client:
        client.ehlo()
        start = time.monotonic()
        client.sendmail(SENDER, ["slow@example.com"], RAW)
        assert time.monotonic() - start >= 0.3
    assert [m.rcpt_tos for m in smtp_server.messages] == [["slow@example.com"]]


def test_slow_client_timeout_records_nothing(smtp_server: SmtpServer) -> None:
    smtp_server.slow_seconds = 0.5
    with connect(smtp_server, timeout=0.2) as client, pytest.raises(smtplib.SMTPServerDisconnected):
        client.sendmail(SENDER, ["slow@example.com"], RAW)
    time.sleep(0.5)
    assert smtp_server.messages == []


@pytest.mark.parametrize("rcpt", ["trickle@example.com", "trickle-rcpt@example.com"])
def test_trickle_sends_each_byte_of_a_reply_late(smtp_server: SmtpServer, rcpt: str) -> None:
    """Each read gets a byte within its timeout; the whole reply takes many of them."""
    smtp_server.trickle_seconds = 0.1
    with connect(smtp_server, timeout=0.5) as client:
        client.ehlo()
        client.mail(SENDER)
        start = time.monotonic()
        if rcpt.startswith("trickle-rcpt"):
            assert client.rcpt(rcpt) == (250, b"2.1.5 Ok")
        else:
            client.rcpt(rcpt)
            assert client.data(RAW) == (250, b"2.0.0 Ok: queued")
        assert time.monotonic() - start >= 0.1 * 12  # "250 2.1.5 Ok\r\n", a byte at a time
    assert smtp_server.messages == []


def test_drop_disconnects_without_reply(smtp_server: SmtpServer) -> None:
    with connect(smtp_server) as client, pytest.raises(smtplib.SMTPServerDisconnected):
        client.sendmail(SENDER, ["drop@example.com"], RAW)
    assert smtp_server.messages == []
    assert smtp_server.connections == 1


def test_fail_next(smtp_server: SmtpServer) -> None:
    smtp_server.fail_next(2, "451 4.3.0 Try later")
    with connect(smtp_server) as client:
        for _ in range(2):
            with pytest.raises(smtplib.SMTPDataError) as info:
                client.sendmail(SENDER, ["ok@example.com"], RAW)
            assert info.value.smtp_code == 451
        client.sendmail(SENDER, ["ok@example.com"], RAW)
    assert len(smtp_server.messages) == 1


def test_fail_next_421_closes_the_connection(smtp_server: SmtpServer) -> None:
    smtp_server.fail_next(1, "421 4.7.0 Shutting down")
    client = connect(smtp_server)
    with pytest.raises(smtplib.SMTPDataError) as info:
        client.sendmail(SENDER, ["ok@example.com"], RAW)
    assert (info.value.smtp_code, info.value.smtp_error) == (421, b"4.7.0 Shutting down")
    assert client.sock is None  # smtplib closes on 421
    with connect(smtp_server) as client:
        client.sendmail(SENDER, ["ok@example.com"], RAW)
    assert [m.connection for m in smtp_server.messages] == [2]


def test_refuse_sender(smtp_server: SmtpServer) -> None:
    smtp_server.refuse_sender = SENDER.upper()
    with connect(smtp_server) as client:
        with pytest.raises(smtplib.SMTPSenderRefused) as info:
            client.sendmail(SENDER, ["ok@example.com"], RAW)
        assert info.value.smtp_code == 553
        client.sendmail("other@acme.example", ["ok@example.com"], RAW)
    smtp_server.refuse_sender = "550 5.7.1 Relay denied"
    with connect(smtp_server) as client, pytest.raises(smtplib.SMTPSenderRefused) as info:
        client.sendmail("other@acme.example", ["ok@example.com"], RAW)
    assert (info.value.smtp_code, info.value.smtp_error) == (550, b"5.7.1 Relay denied")
    assert len(smtp_server.messages) == 1


def test_delay_is_added_before_every_reply(smtp_server: SmtpServer) -> None:
    smtp_server.delay = 0.15
    start = time.monotonic()
    with connect(smtp_server) as client:  # greeting
        assert time.monotonic() - start >= 0.15
        start = time.monotonic()
        client.noop()
        client.noop()
        assert time.monotonic() - start >= 0.3
    smtp_server.reset()
    assert smtp_server.delay == 0


def test_starttls_and_login(smtp_starttls_server: SmtpServer) -> None:
    server = smtp_starttls_server
    with connect(server) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        code, text = client.mail(SENDER)
        assert (code, text) == (530, b"Must issue a STARTTLS command first")
        client.starttls(context=server.client_context())
        client.ehlo()
        assert client.has_extn("auth")
        assert client.mail(SENDER)[0] == 530  # authentication required
        client.rset()
        client.login(AUTH_USER, AUTH_PASSWORD)
        client.sendmail(SENDER, ["ok@example.com"], RAW)
    [message] = server.messages
    assert (message.login, message.data, message.connection) == (AUTH_USER, RAW, 1)
    assert "AUTH PLAIN" in server.commands
    assert not any(AUTH_PASSWORD in line for line in server.commands)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_starttls_wrong_password(smtp_starttls_server: SmtpServer, mechanism: str) -> None:
    with connect(smtp_starttls_server) as client:
        client.starttls(context=smtp_starttls_server.client_context())
        client.ehlo()
        client.user, client.password = AUTH_USER, "wrong"
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            client.auth(mechanism, getattr(client, f"auth_{mechanism.lower()}"))
        assert (info.value.smtp_code, info.value.smtp_error) == (
            535,
            b"5.7.8 Authentication credentials invalid",
        )
        client.password = AUTH_PASSWORD
        assert client.auth(mechanism, getattr(client, f"auth_{mechanism.lower()}"))[0] == 235


def test_implicit_tls_via_ssl_cert_file(
    smtp_tls_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = smtp_tls_server
    assert server.ca_file is not None
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    with pytest.raises(ssl.SSLCertVerificationError):
        smtplib.SMTP_SSL(server.host, server.port, context=ssl.create_default_context())
    monkeypatch.setenv("SSL_CERT_FILE", server.ca_file)
    for host in ("127.0.0.1", "localhost"):
        context = ssl.create_default_context()
        with smtplib.SMTP_SSL(host, server.port, context=context, timeout=5) as client:
            client.sendmail(SENDER, ["ok@example.com"], RAW)
    assert [m.connection for m in server.messages] == [1, 2]
    assert server.connections == 2  # the failed handshake never became a connection


@pytest.mark.parametrize("security", ["none", "tls"])
def test_auth_without_starttls(security: str) -> None:
    with SmtpServer(security, auth=("u", "p")) as server:  # type: ignore[arg-type]
        if security == "tls":
            client = smtplib.SMTP_SSL(
                server.host, server.port, context=server.client_context(), timeout=5
            )
        else:
            client = connect(server)
        with client:
            client.ehlo()
            assert client.has_extn("auth")
            assert client.mail(SENDER) == (530, b"5.7.0 Authentication required")
            client.rset()
            client.login("u", "p")
            client.sendmail(SENDER, ["ok@example.com"], RAW)
        assert server.messages[0].login == "u"
