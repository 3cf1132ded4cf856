"""The one send engine: messages through parallel transports, each outcome recorded as
its reply arrives.

Every worker thread owns one transport (one reused connection) and takes one message at a
time from a shared source, so every connection is busy from the first message. Before a
message goes, the recorder makes the connection's previous outcome durable and hands the
message over (SENDING) in one commit shared with the other connections: a crash leaves at
most one message per connection in doubt. Temporary trouble is retried later in the
same run; trouble that means "slow down" (421, x.7.x, a dropped connection) also shrinks
the number of connections and pauses everyone, honouring any "retry in N seconds".

Send, resend, test send and preview are configurations of it: which source (claimed from
the ledger, or a list), which transport (SMTP, a redirect, the preview folder) and which
recorder (the ledger's journal, or none).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from notify.compose import Outgoing
from notify.errors import DeliveryError
from notify.models import Outcome, RunSummary, State
from notify.replies import Verdict, retry_after, verdict
from notify.settings import Settings
from notify.transports.protocol import Transport

CALM_SENDS = 200  # accepted messages in a row before a lost connection slot comes back


class Recorder(Protocol):
    """Makes an outcome durable and hands the next message over, before that one goes."""

    def commit(self, outcome: Outcome | None, hand_over: str | None) -> bool:
        """Record `outcome`, hand `hand_over` over; False when that message may not go."""


class NoRecord:
    """For previews and test sends: nobody is marked as anything."""

    def commit(self, outcome: Outcome | None, hand_over: str | None) -> bool:
        return hand_over is not None


class Source(Protocol):
    """Hands out the next message to whichever worker asks; None when there is no more."""

    def next_message(self) -> Outgoing | None: ...


class ListSource:
    """Messages from an iterable, for previews, test sends and in-run retries."""

    def __init__(self, messages: Iterable[Outgoing]) -> None:
        self._messages = iter(messages)
        self._lock = threading.Lock()

    def next_message(self) -> Outgoing | None:
        with self._lock:
            return next(self._messages, None)


@dataclass(frozen=True)
class DeliveryOptions:
    """How hard to push the relay."""

    connections: int = 1
    retries: int = 3  # extra tries in this run for a recipient's temporary failure
    first_retry_delay: float = 1.0  # seconds; doubles with each round
    max_pause: float = 60.0  # the longest back-off pause, whatever the relay asks


class Throttle:
    """Shared back-off: how many connections may send at once, and until when all wait."""

    def __init__(self, connections: int, max_pause: float) -> None:
        self.allowed = connections
        self.max_pause = max_pause
        self._active = 0
        self._pause_until = 0.0
        self._calm_sends = 0
        self._ceiling = connections
        self._turn = threading.Condition()

    def enter(self, on_wait: Callable[[], None]) -> None:
        """Wait for a sending slot; `on_wait` runs first if we must wait (close the idle
        connection, so the relay really sees fewer)."""
        with self._turn:
            if self._active >= self.allowed:
                on_wait()
            while self._active >= self.allowed:
                self._turn.wait()
            self._active += 1

    def leave(self) -> None:
        with self._turn:
            self._active -= 1
            self._turn.notify()

    def slow_down(self, seconds: float) -> None:
        """The relay pushed back: one connection fewer, and a pause for everyone."""
        with self._turn:
            self.allowed = max(1, self.allowed - 1)
            self._calm_sends = 0
            until = time.monotonic() + min(seconds, self.max_pause)
            self._pause_until = max(self._pause_until, until)

    def went_well(self) -> None:
        """After a calm stretch, allow one more connection again."""
        with self._turn:
            self._calm_sends += 1
            if self._calm_sends >= CALM_SENDS and self.allowed < self._ceiling:
                self.allowed += 1
                self._calm_sends = 0
                self._turn.notify()

    def wait(self) -> None:
        delay = self._pause_until - time.monotonic()
        if delay > 0:
            time.sleep(delay)


@dataclass
class _Run:
    """State shared by the workers of one delivery run."""

    recorder: Recorder
    options: DeliveryOptions
    on_outcome: Callable[[Outcome], None] | None
    pace: Callable[[], None]
    throttle: Throttle
    final: dict[str, Outcome] = field(default_factory=dict)
    retry: list[tuple[Outgoing, int]] = field(default_factory=list)  # message, tries so far
    tries: dict[str, int] = field(default_factory=dict)
    error: BaseException | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


def deliver(
    source: Source,
    make_transport: Callable[[], Transport],
    recorder: Recorder,
    *,
    options: DeliveryOptions | None = None,
    pace: Callable[[], None] | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> RunSummary:
    """Send everything; a DeliveryError stops the run with the unsent ones still pending.

    `pace` waits for the next send slot (NOTIFY_RATE, shared by every sender)."""
    options = options or DeliveryOptions()
    run = _Run(
        recorder,
        options,
        on_outcome,
        pace or (lambda: None),
        Throttle(options.connections, options.max_pause),
    )
    first = make_transport()
    first.open()  # a wrong host or password stops the run here, before anything is sent
    transports = [first] + [make_transport() for _ in range(options.connections - 1)]
    try:
        _deliver_round(run, source, transports)
        for round_number in range(options.retries):
            if not run.retry or run.error or run.stop.is_set():
                break
            waiting, run.retry = run.retry, []
            time.sleep(min(options.first_retry_delay * 2**round_number, options.max_pause))
            _deliver_round(run, ListSource(m for m, _ in waiting), transports)
    finally:
        for transport in transports:
            transport.close()
    if run.error:
        raise run.error
    return _summary(run.final)


def delivery_options(settings: Settings, messages: int) -> DeliveryOptions:
    """The settings' connections (no more than messages) and retries."""
    return DeliveryOptions(
        connections=max(1, min(settings.connections, messages)),
        retries=settings.retries,
        first_retry_delay=settings.retry_delay,
    )


@contextlib.contextmanager
def on_one_cpu() -> Iterator[None]:
    """Keep this thread, and the threads it starts meanwhile, on the CPU it runs on.

    The sending threads take turns holding one lock (Python's GIL), handing it over at
    every reply. Spread over CPUs, each hand-over wakes a thread on another CPU: a
    million-message send ran at 4,500 messages/s so, against 7,200-7,500 on one CPU.
    A no-op where the CPU cannot be read (not Linux) or only one is allowed anyway."""
    try:
        allowed = os.sched_getaffinity(0)
        stat = Path("/proc/thread-self/stat").read_text()
        # Field 39 is the CPU; split after the command name, which may hold spaces.
        current = int(stat.rpartition(")")[2].split()[36])
    except (AttributeError, OSError, ValueError, IndexError):
        allowed, current = set(), -1
    if len(allowed) < 2 or current not in allowed:
        yield
        return
    os.sched_setaffinity(0, {current})
    try:
        yield
    finally:
        os.sched_setaffinity(0, allowed)


def _deliver_round(run: _Run, source: Source, transports: list[Transport]) -> None:
    """One worker thread per transport, each taking messages until the source is dry."""
    workers = [
        threading.Thread(target=_work, args=(run, source, transport), daemon=True)
        for transport in transports
    ]
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            while worker.is_alive():
                worker.join(0.2)  # a timed join lets Ctrl-C through
    except BaseException:
        run.stop.set()  # workers finish their current message and record it
        for worker in workers:
            worker.join()
        raise


def _work(run: _Run, source: Source, transport: Transport) -> None:
    unrecorded: list[Outcome] = []  # this connection's last outcome, until it is durable

    def record_now() -> None:
        if unrecorded:
            run.recorder.commit(unrecorded.pop(), None)

    def before_waiting() -> None:  # the relay will see fewer of us: record, then hang up
        record_now()
        transport.close()

    try:
        while not run.stop.is_set():
            run.throttle.enter(on_wait=before_waiting)
            try:
                message = source.next_message()
                if message is None:
                    return
                previous = unrecorded.pop() if unrecorded else None
                if not run.recorder.commit(previous, message.key):
                    continue  # suppressed, or taken by another sender: not ours to send
                try:
                    unrecorded.append(_send_one(run, message, transport))
                except DeliveryError as exc:  # nothing of it went: owed, not in doubt
                    unrecorded.append(Outcome(message.key, State.DEFERRED, None, str(exc)))
                    raise
            finally:
                run.throttle.leave()
    except BaseException as exc:  # noqa: BLE001 - handed to the main thread
        with run.lock:
            run.error = run.error or exc
        run.stop.set()
    finally:
        try:
            record_now()
        except BaseException as exc:  # noqa: BLE001 - the ledger failed: say so
            with run.lock:
                run.error = run.error or exc


def _send_one(run: _Run, message: Outgoing, transport: Transport) -> Outcome:
    """Hand one message to the transport and judge what the relay said."""
    run.throttle.wait()
    run.pace()
    outcome = transport.send(message)
    with run.lock:
        run.final[outcome.key] = outcome
        if run.on_outcome:
            run.on_outcome(outcome)
    _judge(run, message, outcome)
    return outcome


def _judge(run: _Run, message: Outgoing, outcome: Outcome) -> None:
    """Decide what a reply means for this run: done, retry later, or slow everyone down."""
    judged = verdict(outcome)
    if judged is Verdict.DONE:
        run.throttle.went_well()
        return
    if judged is Verdict.SLOW_DOWN:
        run.throttle.slow_down(retry_after(outcome.reply) or run.options.first_retry_delay)
    if judged in (Verdict.SLOW_DOWN, Verdict.RETRY):
        with run.lock:
            tries = run.tries.get(message.key, 0) + 1
            run.tries[message.key] = tries
            if tries <= run.options.retries:
                run.retry.append((message, tries))


def _summary(final: dict[str, Outcome]) -> RunSummary:
    summary = RunSummary()
    for outcome in final.values():
        summary.attempted += 1
        if outcome.state is State.ACCEPTED:
            summary.accepted += 1
            continue
        if outcome.state is State.REFUSED:
            summary.refused += 1
        elif outcome.state is State.DEFERRED:
            summary.deferred += 1
        elif outcome.state is State.SENDING:
            summary.in_doubt += 1
        else:
            continue
        summary.undelivered.append(outcome)
    return summary
