"""The SMTP transport gives each step of the conversation one deadline, not only each read:
a relay that trickles its replies a byte at a time is given up on, not waited for forever."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from notify.compose import Outgoing
from notify.delivery import DeliveryOptions, ListSource, NoRecord, deliver
from notify.errors import ConnectError
from notify.models import State
from notify.settings import Settings
from notify.transports import smtp
from notify.transports.smtp import SmtpTransport
from tests.smtp_server import SmtpServer

DEADLINE = 1.0


class TricklingRelay:
    """A relay on 127.0.0.1 that answers its first `prompt` replies at once, then sends
    the next one a byte every `pause` seconds (each read gets a byte, never a reply)."""

    REPLIES = (b"220 trickle.test ESMTP\r\n", b"250 trickle.test\r\n")

    def __init__(self, prompt: int, pause: float = 0.2) -> None:
        self.prompt, self.pause = prompt, pause
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # the listener closed: the test is over
            while True:
                connection, _ = self.listener.accept()
                threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection, contextlib.suppress(OSError), connection.makefile("rb") as commands:
            for number, reply in enumerate(self.REPLIES):
                if number:
                    commands.readline()
                if number < self.prompt:
                    connection.sendall(reply)
                    continue
                for byte in reply:
                    connection.sendall(bytes([byte]))
                    time.sleep(self.pause)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def short_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GREETING_SECONDS", "HELLO_SECONDS", "MESSAGE_SECONDS"):
        monkeypatch.setattr(smtp, name, DEADLINE)


@pytest.fixture(params=[0, 1], ids=["greeting", "hello"])
def trickling_relay(request: pytest.FixtureRequest) -> Iterator[TricklingRelay]:
    relay = TricklingRelay(prompt=request.param)
    yield relay
    relay.close()


def settings(port: int) -> Settings:
    return Settings(smtp_host="127.0.0.1", smtp_port=port, smtp_security="none")


def message(address: str, n: int = 0) -> Outgoing:
    data = f"Subject: {n}\r\nMessage-ID: <{n}@acme.example>\r\n\r\nbody\r\n".encode()
    return Outgoing(address, "support@acme.example", address, f"<{n}@acme.example>", data, n + 2)


def test_a_relay_trickling_its_greeting_or_hello_is_given_up_after_the_deadline(
    trickling_relay: TricklingRelay, short_deadlines: None
) -> None:
    step = "greeting" if trickling_relay.prompt == 0 else "hello (EHLO, STARTTLS, AUTH)"
    transport = SmtpTransport(settings(trickling_relay.port))
    started = time.monotonic()
    with pytest.raises(ConnectError) as caught:
        transport.open()
    assert DEADLINE <= time.monotonic() - started < DEADLINE + 2
    assert str(caught.value) == (
        f"the relay at 127.0.0.1:{trickling_relay.port} sent no reply within the 1 s given "
        f"to the {step} (it is stuck or overloaded); try again later, or check "
        "NOTIFY_SMTP_HOST and NOTIFY_SMTP_PORT in .env"
    )


def test_a_trickling_reply_after_the_data_leaves_that_message_in_doubt(
    smtp_server: SmtpServer, short_deadlines: None
) -> None:
    smtp_server.trickle_seconds = 0.2
    transport = SmtpTransport(settings(smtp_server.port))
    transport.open()
    started = time.monotonic()
    first, trickled, last = (
        transport.send(message(address, n))
        for n, address in enumerate(["ann@example.com", "trickle@example.com", "bob@example.com"])
    )
    transport.close()
    assert time.monotonic() - started < DEADLINE + 2
    assert (first.state, last.state) == (State.ACCEPTED, State.ACCEPTED)
    assert trickled.state is State.SENDING
    assert trickled.reply == (
        "connection lost after the message was sent, outcome unknown: no reply within the "
        "1 s given to the message"
    )
    assert [m.rcpt_tos for m in smtp_server.messages] == [["ann@example.com"], ["bob@example.com"]]
    assert transport.connections_opened == 2  # the trickling connection was given up


def test_a_trickling_reply_before_the_data_leaves_that_message_deferred(
    smtp_server: SmtpServer, short_deadlines: None
) -> None:
    smtp_server.trickle_seconds = 0.2
    transport = SmtpTransport(settings(smtp_server.port))
    outcome = transport.send(message("trickle-rcpt@example.com"))
    transport.close()
    assert outcome.state is State.DEFERRED
    assert outcome.reply == "connection lost: no reply within the 1 s given to the message"


def test_the_deadline_is_per_message_not_per_connection(
    smtp_server: SmtpServer, short_deadlines: None
) -> None:
    smtp_server.slow_seconds = 0.4
    addresses = [f"slow+{n}@example.com" for n in range(5)]
    summary = deliver(
        ListSource(message(address, n) for n, address in enumerate(addresses)),
        lambda: SmtpTransport(settings(smtp_server.port)),
        NoRecord(),
        options=DeliveryOptions(connections=1, retries=0),
    )
    assert summary.accepted == 5  # two seconds on one connection, each message within 1 s
    assert smtp_server.connections == 1
