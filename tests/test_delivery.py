"""Delivery against a real SMTP server: connections, caps, rate, back-off, in doubt."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter

import pytest

from notify.compose import Outgoing
from notify.delivery import DeliveryOptions, ListSource, deliver, on_one_cpu
from notify.errors import SenderRefusedError
from notify.ledger import Ledger
from notify.ledger.claims import Sender
from notify.models import Outcome, State
from notify.settings import Security, Settings
from notify.transports.smtp import SmtpTransport
from tests import smtp_server as server_module


@pytest.fixture(params=["one command at a time", "pipelined"], autouse=True)
def relay_mode(request, monkeypatch):
    """Every test here runs twice: against the relay as it is, and offering PIPELINING."""
    if request.param == "pipelined":
        plain = server_module._Handler.handle_EHLO

        async def with_pipelining(self, server, session, envelope, hostname, responses):
            lines = await plain(self, server, session, envelope, hostname, responses)
            return [lines[0], "250-PIPELINING", *lines[1:]]

        monkeypatch.setattr(server_module._Handler, "handle_EHLO", with_pipelining)
    return request.param


class Recorded:
    """A recorder that keeps every call, in order, like the ledger would see them, and
    checks the engine's promise: no connection hands a message over while its previous
    outcome is unrecorded."""

    def __init__(self) -> None:
        self.handed_over: list[str] = []
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()

    def commit(self, outcome, hand_over):
        with self._lock:
            if outcome is not None:
                self.outcomes.append(outcome)
            if hand_over is not None:
                self.handed_over.append(hand_over)
        return hand_over is not None

    def final(self) -> dict[str, State]:
        return {o.key: o.state for o in self.outcomes}


def messages(addresses: list[str]) -> list[Outgoing]:
    return [
        Outgoing(
            key=address,
            envelope_from="support@acme.example",
            to=address,
            message_id=f"<{n}@acme.example>",
            data=f"Subject: {n}\r\nMessage-ID: <{n}@acme.example>\r\n\r\n.dot\r\nbody\r\n".encode(),
            row=n + 2,
        )
        for n, address in enumerate(addresses)
    ]


def customers(count: int) -> list[str]:
    return [f"customer{n}@example.com" for n in range(count)]


def run(server, addresses, *, max_per_connection=100, pace=None, **options):
    settings = Settings(smtp_host="127.0.0.1", smtp_port=server.port, smtp_security=Security.NONE)
    recorder = Recorded()
    opts = DeliveryOptions(first_retry_delay=0.05, **options)
    summary = deliver(
        ListSource(messages(addresses)),
        lambda: SmtpTransport(settings, max_per_connection=max_per_connection),
        recorder,
        options=opts,
        pace=pace,
    )
    return summary, recorder


def test_one_connection_is_reused_and_renewed_after_the_cap(smtp_server):
    summary, _ = run(smtp_server, customers(250), connections=1, max_per_connection=100)
    assert summary.accepted == 250
    assert smtp_server.connections == 3
    per_connection = Counter(m.connection for m in smtp_server.messages)
    assert sorted(per_connection.values()) == [50, 100, 100]


def test_dot_stuffing_keeps_the_body_exact(smtp_server):
    run(smtp_server, customers(1), connections=1)
    assert smtp_server.messages[0].data.endswith(b"\r\n.dot\r\nbody\r\n")


def test_parallel_connections_share_the_work(smtp_server):
    smtp_server.delay = 0.002
    summary, recorder = run(smtp_server, customers(200), connections=4)
    assert summary.accepted == 200
    assert smtp_server.connections == 4
    assert len({m.connection for m in smtp_server.messages}) == 4
    assert Counter(m.rcpt_tos[0] for m in smtp_server.messages) == Counter(customers(200))
    assert len(recorder.outcomes) == 200 and sorted(recorder.handed_over) == sorted(customers(200))


def test_the_rate_cap_holds_across_connections(smtp_server, tmp_path):
    """The pacer a send uses (one slot row per incident in the ledger) caps all connections."""
    rate = 40.0
    ledger = Ledger.open(tmp_path / "ledger.sqlite3")
    sender = Sender(ledger, "42", rate=rate)
    sender.start()
    try:
        summary, _ = run(smtp_server, customers(60), connections=3, pace=sender.pace)
    finally:
        sender.finish()
    assert summary.accepted == 60
    arrivals = sorted(m.at for m in smtp_server.messages)
    window = 1.0
    busiest = max(sum(1 for t in arrivals if start <= t < start + window) for start in arrivals)
    assert busiest <= rate * window * 1.1 + 1
    assert arrivals[-1] - arrivals[0] >= (60 - 1) / rate * 0.9


def test_421_mid_run_delivers_everyone_exactly_once(smtp_server):
    smtp_server.fail_next(3, "421 4.7.0 Shutting down, try again later")
    summary, recorder = run(smtp_server, customers(60), connections=2)
    assert summary.accepted == 60 and summary.deferred == 0 and summary.refused == 0
    assert Counter(m.rcpt_tos[0] for m in smtp_server.messages) == Counter(customers(60))
    assert set(recorder.final().values()) == {State.ACCEPTED}
    assert smtp_server.connections >= 3  # each 421 closed a connection


def test_dropped_connections_before_data_are_retried_not_failed(smtp_server):
    smtp_server.drop_next(4, at="rcpt")
    summary, recorder = run(smtp_server, customers(40), connections=2)
    assert summary.accepted == 40
    assert Counter(m.rcpt_tos[0] for m in smtp_server.messages) == Counter(customers(40))
    assert set(recorder.final().values()) == {State.ACCEPTED}


def test_a_rate_limit_reply_backs_off_and_honours_retry_after(smtp_server):
    addresses = ["rate-451@example.com"] + customers(5)
    started = time.monotonic()
    summary, recorder = run(smtp_server, addresses, connections=1, retries=1)
    elapsed = time.monotonic() - started
    assert elapsed >= 1.0  # "retry in 1 seconds"
    assert summary.accepted == 5
    assert recorder.final()["rate-451@example.com"] is State.DEFERRED


def test_a_permanent_refusal_is_recorded_per_recipient(smtp_server):
    addresses = ["fail-550@example.com", "data-554@example.com"] + customers(3)
    summary, recorder = run(smtp_server, addresses, connections=1)
    final = recorder.final()
    assert final["fail-550@example.com"] is State.REFUSED
    assert final["data-554@example.com"] is State.REFUSED
    assert summary.refused == 2 and summary.accepted == 3
    refused = [o for o in recorder.outcomes if o.state is State.REFUSED]
    assert [o.code for o in refused] == [550, 554]
    assert refused[0].reply.startswith("5.1.1 ")


def test_a_temporary_failure_is_retried_then_left_deferred(smtp_server):
    summary, recorder = run(smtp_server, ["fail-451@example.com"], connections=1, retries=2)
    tries = [o for o in recorder.outcomes if o.key == "fail-451@example.com"]
    assert len(tries) == 3
    assert summary.deferred == 1 and recorder.final()["fail-451@example.com"] is State.DEFERRED


def test_sender_refusal_stops_the_run(smtp_server):
    smtp_server.refuse_sender = "*"
    with pytest.raises(SenderRefusedError) as raised:
        run(smtp_server, customers(50), connections=2)
    assert "refused the sender support@acme.example (553 5.7.1" in str(raised.value)
    assert smtp_server.messages == []


def test_connection_lost_after_data_leaves_the_recipient_in_doubt(smtp_server):
    smtp_server.drop_next(1, at="data")
    summary, recorder = run(smtp_server, customers(3), connections=1)
    final = recorder.final()
    assert final["customer0@example.com"] is State.SENDING
    assert summary.in_doubt == 1 and summary.accepted == 2
    assert [m.rcpt_tos[0] for m in smtp_server.messages] == customers(3)[1:]


def test_the_transport_pipelines_only_when_the_relay_offers_it(smtp_server, relay_mode):
    settings = Settings(
        smtp_host="127.0.0.1", smtp_port=smtp_server.port, smtp_security=Security.NONE
    )
    transport = SmtpTransport(settings)
    transport.open()
    outcome = transport.send(messages(["customer0@example.com"])[0])
    transport.close()
    assert transport.pipelining is (relay_mode == "pipelined")
    assert outcome.state is State.ACCEPTED
    assert [c.split()[0] for c in smtp_server.commands[-4:]] == ["MAIL", "RCPT", "DATA", "QUIT"]


def test_every_switchboard_reply_is_judged_per_recipient(smtp_server):
    addresses = [
        "fail-550@example.com",
        "customer1@example.com",
        "fail-552@example.com",
        "data-554@example.com",
        "fail-451@example.com",
        "customer2@example.com",
        "fail-421@example.com",
        "customer3@example.com",
    ]
    summary, recorder = run(smtp_server, addresses, connections=1, retries=0)
    found = {o.key: (o.state, o.code) for o in recorder.outcomes}
    assert found == {
        "fail-550@example.com": (State.REFUSED, 550),
        "customer1@example.com": (State.ACCEPTED, 250),
        "fail-552@example.com": (State.REFUSED, 552),
        "data-554@example.com": (State.REFUSED, 554),
        "fail-451@example.com": (State.DEFERRED, 451),
        "customer2@example.com": (State.ACCEPTED, 250),
        "fail-421@example.com": (State.DEFERRED, 421),
        "customer3@example.com": (State.ACCEPTED, 250),
    }
    assert [m.rcpt_tos[0] for m in smtp_server.messages] == [
        "customer1@example.com",
        "customer2@example.com",
        "customer3@example.com",
    ]
    assert smtp_server.connections == 2  # the 421 closed the first one


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs two CPUs this process may run on",
)
def test_sending_threads_share_one_cpu_and_the_process_gets_its_cpus_back() -> None:
    before = os.sched_getaffinity(0)
    seen: list[set[int]] = []
    with on_one_cpu():
        inside = os.sched_getaffinity(0)
        thread = threading.Thread(target=lambda: seen.append(os.sched_getaffinity(0)))
        thread.start()
        thread.join()
    assert len(inside) == 1 and inside <= before
    assert seen == [inside]  # a thread started meanwhile stays there too
    assert os.sched_getaffinity(0) == before
