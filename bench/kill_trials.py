#!/usr/bin/env python3
"""Kill trials: what SIGKILL at a random moment does to "once means once" (Promise 2).

    python bench/kill_trials.py [--trials 35] [--seed 1] [--max-seconds 1200]
                                [--scenarios send-c1,...] [--notify-root DIR] [--json F]

Each trial makes a fresh workspace, starts a recording relay on 127.0.0.1 (every message
it accepts is appended to a file with its RCPT address and Message-ID, one line flushed
per message), runs `python -m notify send --yes` (or `resend`) as a subprocess, kills it
with SIGKILL at a random moment (during the check, during registration, or early, mid or
late in the send, by the relay's count), then runs the same command again until it exits
0 (at most --reruns times). The relay's records then say, per trial: recipients never
accepted (missing), messages accepted again (duplicates), re-sends with another
Message-ID, and for `resend` any suppressed address mailed after the first send. The run
exits 1 when a trial breaks the promise: anyone missing, a suppressed address mailed, a
Message-ID changed, the ledger still owing a message at the end, or more duplicates
than connections (one in-flight message per connection may be in doubt).

The notify that runs is the package under --notify-root (default: this repository),
put first on the children's PYTHONPATH. Bounded in count and time, loopback only; every
process it starts is stopped, and the PostgreSQL databases it creates are dropped.
`_relay` is the script calling itself for the relay process; it is internal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import itertools
import json
import os
import random
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench_run  # noqa: E402  (the benchmark's workspace generator)

REPO = bench_run.REPO
SCRIPT = Path(__file__).resolve()
LOOPBACK = bench_run.LOOPBACK
INCIDENT = bench_run.INCIDENT
PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=test"
REFUSAL = "550 5.1.1 user unknown"
MOMENTS = ("check", "registration", "early", "mid", "late")
FRACTIONS = {"early": (0.02, 0.2), "mid": (0.3, 0.7), "late": (0.75, 0.97)}
DEFAULT_READY_SECONDS = 2.0  # from the start to the first message, until a trial measured it
DEFAULT_GAP_SECONDS = 0.2  # from the end of the check to the first message, likewise
POLL_SECONDS = 0.002
LONGEST_WAIT_SECONDS = 300.0  # for a kill moment that never comes: kill anyway

# --------------------------------------------------------------------------------------
# The recording relay (its own process)
# --------------------------------------------------------------------------------------

_MESSAGE_ID = re.compile(rb"(?im)^message-id:\s*(<[^>\s]+>)")


def message_id(data: bytes) -> str:
    """The Message-ID header of a message's bytes, or '' when it has none."""
    head = data.split(b"\r\n\r\n", 1)[0]
    match = _MESSAGE_ID.search(head)
    return match.group(1).decode("ascii", "replace") if match else ""


def serve_relay(argv: list[str]) -> None:
    """Accept mail on a free loopback port (printed as 'PORT n'); record each acceptance.

    An accepted message is written to the records file (and flushed) when its content is
    complete, before the reply: a client killed while the 250 travels has a message in
    doubt, as with a real relay. Addresses in the refuse file get 550 at RCPT; addresses
    in the drop file, the first time only, have their message recorded and then the
    connection closed without a reply."""
    import logging

    from aiosmtpd.smtp import SMTP

    parser = argparse.ArgumentParser(prog="kill_trials.py _relay")
    parser.add_argument("records", type=Path)
    parser.add_argument("--phase", default="send")
    parser.add_argument("--delay-ms", type=float, default=10.0)
    parser.add_argument("--refuse", type=Path)
    parser.add_argument("--drop", type=Path)
    args = parser.parse_args(argv)
    logging.getLogger("mail.log").setLevel(logging.CRITICAL)
    refuse = _address_set(args.refuse)
    drop = _address_set(args.drop)
    delay = args.delay_ms / 1000
    out = args.records.open("a", encoding="utf-8")
    numbers = itertools.count(1)

    def write(event: str, number: int, rcpt: list[str], mid: str = "") -> None:
        line = {"event": event, "phase": args.phase, "at": time.time(), "conn": number}
        out.write(json.dumps({**line, "rcpt": rcpt, "message_id": mid}) + "\n")
        out.flush()

    class RecordingSMTP(SMTP):
        def __init__(self) -> None:
            super().__init__(Handler(), hostname="kill-relay", decode_data=False)
            self.number = next(numbers)
            self.dropped = False

        async def push(self, status: Any) -> None:
            if not self.dropped:
                await super().push(status)

    class Handler:
        async def handle_RCPT(
            self, server: RecordingSMTP, session: Any, envelope: Any, address: str, options: Any
        ) -> str:
            if address.lower() in refuse:
                write("refuse", server.number, [address.lower()])
                return REFUSAL
            envelope.rcpt_tos.append(address)
            return "250 2.1.5 Ok"

        async def handle_DATA(self, server: RecordingSMTP, session: Any, envelope: Any) -> str:
            rcpt = [a.lower() for a in envelope.rcpt_tos]
            write("accept", server.number, rcpt, message_id(envelope.original_content or b""))
            if any(a in drop for a in rcpt):
                drop.difference_update(rcpt)
                server.dropped = True
                if server.transport is not None:
                    server.transport.close()
                return "250 2.0.0 never sent"
            if delay:
                await asyncio.sleep(delay)
            return "250 2.0.0 Ok: queued"

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(loop.create_server(RecordingSMTP, LOOPBACK, 0))
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.run_forever()
    server.close()
    out.close()


def _address_set(path: Path | None) -> set[str]:
    if path is None:
        return set()
    return {line.strip().lower() for line in path.read_text().splitlines() if line.strip()}


class Relay:
    """The relay process, seen from the harness: its port and a running count."""

    def __init__(
        self,
        records: Path,
        *,
        phase: str,
        delay_ms: float,
        refuse: Sequence[str] = (),
        drop: Sequence[str] = (),
    ) -> None:
        self.records = records
        self._offset = 0
        self._accepted = 0
        argv = [sys.executable, str(SCRIPT), "_relay", str(records), "--phase", phase]
        argv += ["--delay-ms", str(delay_ms)]
        for option, addresses in (("--refuse", refuse), ("--drop", drop)):
            if addresses:
                listed = records.with_name(f"{records.stem}{option[1:]}.txt")
                listed.write_text("\n".join(addresses) + "\n")
                argv += [option, str(listed)]
        self._log = records.with_suffix(".log").open("wb")
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,
        )
        try:
            self.port = self._read_port(timeout=15)
        except BaseException:
            self.stop()
            raise

    def _read_port(self, timeout: float) -> int:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline().decode() if ready else ""
        if not line.startswith("PORT "):
            raise RuntimeError(f"the relay did not start; see {self._log.name}")
        return int(line.split()[1])

    def accepted(self) -> int:
        """Messages accepted so far (read incrementally from the records file)."""
        with contextlib.suppress(FileNotFoundError), self.records.open("rb") as f:
            f.seek(self._offset)
            chunk = f.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]
            self._offset += len(complete)
            self._accepted += complete.count(b'"event": "accept"')
        return self._accepted

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                kill_group(self.process)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()


@dataclass(frozen=True)
class Record:
    """One line of a relay's records file."""

    event: str  # "accept" or "refuse"
    phase: str
    at: float
    conn: int
    rcpt: list[str]
    message_id: str


def read_records(*paths: Path) -> list[Record]:
    """Every complete line of the given records files (a missing file has none)."""
    found = []
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                found.append(Record(**json.loads(line)))
    return found


# --------------------------------------------------------------------------------------
# Workspaces and notify processes
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class People:
    """Who the export holds: each recipient's main address, and its alternate if any."""

    main: list[str]
    alternate: dict[str, str] = field(default_factory=dict)  # main -> alternate


def make_workspace(root: Path, *, recipients: int, seed: int, alternates: bool) -> People:
    """bench/run.py's workspace (one row each), optionally with an "Alt Email" column."""
    bench_run.generate_workspace(root, recipients=recipients, items_per_recipient=1.0, seed=seed)
    export = root / "data" / "affected.csv"
    with export.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    email = header.index("Email Address")
    main = sorted({r[email].strip().lower() for r in body if r[0] != "Broken Row"})
    if not alternates:
        return People(main)
    alternate = {m: f"alt.{m.replace('@', '.at.')}@alt.example.net" for m in main}
    with export.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([*header, "Alt Email"])
        for r in body:
            writer.writerow([*r, alternate.get(r[email].strip().lower(), "")])
    manifest = root / "incidents" / f"{INCIDENT}.toml"
    text = manifest.read_text(encoding="utf-8")
    manifest.write_text(text.replace("[columns]\n", '[columns]\nalt_email = "Alt Email"\n'))
    return People(main, alternate)


def write_env(root: Path, *, port: int, connections: int, ledger: str | None) -> None:
    """The workspace's .env: the relay on loopback, C connections, the ledger."""
    lines = [
        f"NOTIFY_SMTP_HOST={LOOPBACK}",
        f"NOTIFY_SMTP_PORT={port}",
        "NOTIFY_SMTP_SECURITY=none",
        f"NOTIFY_CONNECTIONS={connections}",
    ]
    if ledger:
        lines.append(f"NOTIFY_LEDGER={ledger}")
    (root / ".env").write_text("\n".join(lines) + "\n", encoding="utf-8")


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database on 127.0.0.1:5432 for one trial's ledger, dropped after."""
    import psycopg

    name = f"notify_kill_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, connect_timeout=3, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process and its children (its own session), and reap it at once: a
    zombie would still look alive to a sender looking for dead senders."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@dataclass(frozen=True)
class Finished:
    """One notify command that ran to its end (or was stopped by the timeout)."""

    command: str
    code: int
    seconds: float
    last_line: str


@dataclass
class Running:
    """A notify process and the files its output goes to."""

    process: subprocess.Popen[bytes]
    command: str
    log: Path  # without suffix: .out and .err

    def output(self) -> str:
        return self.log.with_suffix(".out").read_text(errors="replace")


class Notify:
    """Runs `python -m notify` from one checkout; every process it starts is tracked."""

    def __init__(self, root: Path, logs: Path) -> None:
        self.root = root.resolve()
        self.logs = logs
        self.started: list[Running] = []
        self._count = itertools.count(1)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFY_")}
        self.env.update(PYTHONPATH=str(self.root), PYTHONUNBUFFERED="1")

    def start(self, workspace: Path, command: str, *args: str) -> Running:
        argv = [sys.executable, "-m", "notify", command, "--incident", INCIDENT, *args]
        log = self.logs / f"{next(self._count):02d}-{command}"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.with_suffix(".out").open("wb") as out, log.with_suffix(".err").open("wb") as err:
            process = subprocess.Popen(
                [*argv, "--workspace", str(workspace)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.env,
                cwd=workspace,
                start_new_session=True,
            )
        running = Running(process, command, log)
        self.started.append(running)
        return running

    def wait(self, running: Running, timeout: float) -> Finished:
        started = time.monotonic()
        try:
            code = running.process.wait(timeout=max(timeout, 1.0))
        except subprocess.TimeoutExpired:
            kill_group(running.process)
            code = -9
        lines = running.output().strip().splitlines()
        last = lines[-1] if lines else ""
        return Finished(running.command, code, time.monotonic() - started, last)

    def run(self, workspace: Path, command: str, *args: str, timeout: float) -> Finished:
        return self.wait(self.start(workspace, command, *args), timeout)

    def status(self, workspace: Path, timeout: float) -> dict[str, Any] | None:
        """`notify status --json`, or None when it fails or prints something else."""
        running = self.start(workspace, "status", "--json")
        self.wait(running, timeout)
        with contextlib.suppress(ValueError):
            found = json.loads(running.output())
            return found if isinstance(found, dict) else None
        return None

    def imported_from(self) -> Path:
        """Where the children's `import notify` finds it (an editable install elsewhere
        must not win over PYTHONPATH). Run from the logs folder, as the commands run from a
        workspace: the current folder comes first on sys.path."""
        self.logs.mkdir(parents=True, exist_ok=True)
        found = subprocess.run(
            [sys.executable, "-c", "import notify; print(notify.__file__)"],
            cwd=self.logs,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return Path(found.stdout.strip()).resolve().parent.parent

    def stop_all(self) -> None:
        for running in self.started:
            if running.process.poll() is None:
                kill_group(running.process)


def unsettled(status: dict[str, Any] | None) -> int | None:
    """Recipients the ledger still owes a message (pending, in doubt, deferred, alternate)."""
    if status is None or not isinstance(status.get("counts"), dict):
        return None
    counts = status["counts"]
    owed = ("pending", "sending", "deferred", "alternate")
    return sum(int(counts.get(state, 0)) for state in owed)


# --------------------------------------------------------------------------------------
# Trials
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """What a trial sends, through how many connections and processes, into which ledger."""

    name: str
    command: str  # "send" or "resend"
    connections: int
    ledger: str = "sqlite"  # or "postgresql"
    senders: int = 1  # processes started together


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("send-c1", "send", 1),
        Scenario("send-c2", "send", 2),
        Scenario("send-c3", "send", 3),
        Scenario("send-c4", "send", 4),
        Scenario("send-c16", "send", 16),
        Scenario("fleet-pg", "send", 2, ledger="postgresql", senders=3),
        Scenario("resend", "resend", 2),
    )
}


@dataclass(frozen=True)
class Trial:
    """One trial to run: a scenario, a kill moment, and everything drawn at random."""

    number: int
    scenario: Scenario
    moment: str  # one of MOMENTS
    recipients: int
    delay_ms: float
    seed: int
    victims: str = "all"  # for several senders: "one" or "all"


@dataclass(frozen=True)
class Options:
    """What every trial shares."""

    notify_root: Path
    out: Path
    reruns: int = 4
    run_timeout: float = 120.0


@dataclass
class Outcome:
    """What one trial did and what the relay saw."""

    trial: int
    scenario: str
    connections: int
    senders: int
    ledger: str
    moment: str
    killed_at: str = ""  # where the kill landed: check, registration, send@k, or exited
    accepted: int = 0  # messages the relay accepted in the phase under test
    expected: int = 0
    missing: int = 0
    duplicates: int = 0  # acceptances beyond the first, summed over recipients
    new_message_ids: int = 0  # recipients re-sent under another Message-ID
    suppressed_mailed: int = 0  # suppressed addresses mailed after the first send
    unsettled: int | None = None  # what `status --json` says is still owed at the end
    runs: list[str] = field(default_factory=list)  # "command:exit" of every run after the kill
    seconds: float = 0.0
    error: str = ""

    @property
    def bound(self) -> int:
        """At most one message in flight per connection may be sent twice."""
        return self.connections * self.senders

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[str]:
        found = [self.error] if self.error else []
        if self.missing:
            found.append(f"{self.missing} missing")
        if self.duplicates > self.bound:
            found.append(f"{self.duplicates} duplicates > {self.bound}")
        if self.new_message_ids:
            found.append(f"{self.new_message_ids} re-sent with a new Message-ID")
        if self.suppressed_mailed:
            found.append(f"{self.suppressed_mailed} suppressed mailed")
        if self.unsettled:
            found.append(f"{self.unsettled} still owed")
        return found


def tally(outcome: Outcome, records: Sequence[Record], expected: Sequence[str]) -> None:
    """Missing, duplicates and Message-IDs of the accepted records, against `expected`."""
    accepted = [r for r in records if r.event == "accept"]
    by_address: dict[str, list[str]] = defaultdict(list)
    for record in accepted:
        for address in record.rcpt:
            by_address[address].append(record.message_id)
    outcome.accepted = len(accepted)
    outcome.expected = len(expected)
    outcome.missing = sum(1 for a in expected if a not in by_address)
    outcome.duplicates = sum(len(ids) - 1 for ids in by_address.values())
    outcome.new_message_ids = sum(1 for ids in by_address.values() if len(set(ids)) > 1)


class Estimates:
    """How long a command takes to its first accepted message, from its start and from the
    end of its check, per kind of workspace: so that a kill 'during the check' or 'during
    registration' lands before the relay sees anything. Measured by the trials that kill
    later; defaults until one did."""

    def __init__(self) -> None:
        self.seen: dict[str, list[float]] = defaultdict(list)

    def get(self, what: str, default: float) -> float:
        seen = self.seen.get(what)
        return statistics.median(seen) if seen else default

    def add(self, what: str, seconds: float) -> None:
        self.seen[what].append(seconds)


def _registered(workspace: Path) -> bool:
    """The check is over: it wrote its rejects file (before registering anyone)."""
    return any((workspace / ".notify").glob("**/rejects.csv"))


def wait_and_kill(
    trial: Trial,
    processes: Sequence[Running],
    relay: Relay,
    workspace: Path,
    *,
    expected: int,
    estimates: Estimates,
    kind: str,
    rng: random.Random,
) -> str:
    """Wait for the trial's moment, SIGKILL the victims, and say where the kill landed."""
    started = time.monotonic()
    victims = list(processes)
    if trial.victims == "one":
        victims = [rng.choice(victims)]
    deadline: float | None = None
    target: int | None = None
    if trial.moment == "check":
        ready = estimates.get(f"{kind} ready", DEFAULT_READY_SECONDS)
        deadline = started + rng.uniform(0.15, 0.85) * ready
    elif trial.moment in FRACTIONS:
        low, high = FRACTIONS[trial.moment]
        target = max(1, round(rng.uniform(low, high) * expected))
    first_seen: float | None = None
    checked_at: float | None = None
    while True:
        now = time.monotonic()
        count = relay.accepted()
        if count and first_seen is None:
            first_seen = now
            estimates.add(f"{kind} ready", now - started)
            if checked_at is not None:
                estimates.add(f"{kind} gap", now - checked_at)
        if checked_at is None and _registered(workspace):
            checked_at = now
            if trial.moment == "check":  # the estimate was too long: kill at once
                deadline = now
            elif trial.moment == "registration":  # between the check and the first message
                gap = estimates.get(f"{kind} gap", DEFAULT_GAP_SECONDS)
                deadline = now + rng.uniform(0.0, 0.9) * gap
        if all(r.process.poll() is not None for r in victims):
            return "exited"
        if (deadline is not None and now >= deadline) or (target and count >= target):
            break
        if now - started > LONGEST_WAIT_SECONDS:
            break
        time.sleep(POLL_SECONDS)
    for running in victims:
        kill_group(running.process)
    count = relay.accepted()
    if count:
        return f"send@{count}"
    return "registration" if _registered(workspace) else "check"


def run_trial(trial: Trial, options: Options, estimates: Estimates) -> Outcome:
    """One trial from a fresh workspace to the tally; never leaves a process behind."""
    scenario = trial.scenario
    outcome = Outcome(
        trial.number,
        scenario.name,
        scenario.connections,
        scenario.senders,
        scenario.ledger,
        trial.moment if scenario.senders == 1 else f"{trial.moment}/{trial.victims}",
    )
    folder = options.out / f"trial-{trial.number:03d}-{scenario.name}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    started = time.monotonic()
    notify = Notify(options.notify_root, folder / "logs")
    try:
        with contextlib.ExitStack() as stack:
            ledger = None
            if scenario.ledger == "postgresql":
                ledger = stack.enter_context(pg_database())
            if scenario.command == "resend":
                _resend_trial(trial, options, estimates, notify, folder, ledger, outcome)
            else:
                _send_trial(trial, options, estimates, notify, folder, ledger, outcome)
    except Exception as exc:  # noqa: BLE001 - a broken trial is reported, the run goes on
        outcome.error = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        notify.stop_all()
    outcome.seconds = time.monotonic() - started
    return outcome


def _send_trial(
    trial: Trial,
    options: Options,
    estimates: Estimates,
    notify: Notify,
    folder: Path,
    ledger: str | None,
    outcome: Outcome,
) -> None:
    scenario = trial.scenario
    workspace = folder / "ws"
    people = make_workspace(
        workspace, recipients=trial.recipients, seed=trial.seed, alternates=False
    )
    records = folder / "records-send.jsonl"
    relay = Relay(records, phase="send", delay_ms=trial.delay_ms)
    try:
        write_env(workspace, port=relay.port, connections=scenario.connections, ledger=ledger)
        senders = [notify.start(workspace, "send", "--yes") for _ in range(scenario.senders)]
        outcome.killed_at = wait_and_kill(
            trial,
            senders,
            relay,
            workspace,
            expected=len(people.main),
            estimates=estimates,
            kind=f"send-{trial.recipients}",
            rng=random.Random(trial.seed),
        )
        for running in senders:
            notify.wait(running, options.run_timeout)
        outcome.runs = _until_done(notify, workspace, "send", "--yes", options=options)
        outcome.unsettled = unsettled(notify.status(workspace, options.run_timeout))
    finally:
        relay.stop()
    tally(outcome, read_records(records), people.main)


def _resend_trial(
    trial: Trial,
    options: Options,
    estimates: Estimates,
    notify: Notify,
    folder: Path,
    ledger: str | None,
    outcome: Outcome,
) -> None:
    """The first send is refused (550) for every main address, so each is suppressed and
    due at its alternate; then `resend` is killed, re-run, and `send` run once more."""
    scenario = trial.scenario
    workspace = folder / "ws"
    people = make_workspace(
        workspace, recipients=trial.recipients, seed=trial.seed, alternates=True
    )
    first_records, records = folder / "records-send.jsonl", folder / "records-resend.jsonl"
    refusing = Relay(first_records, phase="send", delay_ms=trial.delay_ms, refuse=people.main)
    try:
        write_env(workspace, port=refusing.port, connections=scenario.connections, ledger=ledger)
        first = notify.run(workspace, "send", "--yes", timeout=options.run_timeout)
    finally:
        refusing.stop()
    if first.code not in (0, 1):
        raise RuntimeError(f"the first send exited {first.code}: {first.last_line}")
    relay = Relay(records, phase="resend", delay_ms=trial.delay_ms)
    try:
        write_env(workspace, port=relay.port, connections=scenario.connections, ledger=ledger)
        resender = notify.start(workspace, "resend")
        outcome.killed_at = wait_and_kill(
            trial,
            [resender],
            relay,
            workspace / "no-such-folder",  # resend writes no rejects file: no registration
            expected=len(people.alternate),
            estimates=estimates,
            kind=f"resend-{trial.recipients}",
            rng=random.Random(trial.seed),
        )
        notify.wait(resender, options.run_timeout)
        outcome.runs = _until_done(notify, workspace, "resend", options=options)
        again = notify.run(workspace, "send", "--yes", timeout=options.run_timeout)
        outcome.runs.append(f"send:{again.code}")
        outcome.unsettled = unsettled(notify.status(workspace, options.run_timeout))
    finally:
        relay.stop()
    later = read_records(records)
    tally(outcome, later, list(people.alternate.values()))
    main = set(people.main)
    mailed = {a for r in later for a in r.rcpt if a in main}
    outcome.suppressed_mailed = len(mailed)


def _until_done(notify: Notify, workspace: Path, *args: str, options: Options) -> list[str]:
    """Run the command again until it exits 0 (everything done), at most options.reruns."""
    runs = []
    for _ in range(options.reruns):
        finished = notify.run(workspace, *args, timeout=options.run_timeout)
        runs.append(f"{args[0]}:{finished.code}")
        if finished.code == 0:
            break
    return runs


# --------------------------------------------------------------------------------------
# The in-doubt re-send without a kill: the relay keeps the message and drops the line
# --------------------------------------------------------------------------------------


@dataclass
class InDoubtCheck:
    """An alternate's message accepted but never answered: is it settled, and how?"""

    dropped: str = ""
    resends: list[str] = field(default_factory=list)  # "exit: last line" of each resend
    send: str = ""  # the same for the send run after them
    dropped_accepted: int = 0  # times the relay accepted the dropped alternate in all
    dropped_message_ids: int = 0  # distinct Message-IDs among them (1 when re-sent alike)
    suppressed_mailed: int = 0
    missing: int = 0
    unsettled: int | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[str]:
        found = [self.error] if self.error else []
        if self.dropped_accepted != 2:  # once in doubt, then once more from the next run
            found.append(f"the in-doubt alternate accepted {self.dropped_accepted}x, not 2x")
        if self.dropped_message_ids > 1:
            found.append("the in-doubt alternate re-sent with a new Message-ID")
        if self.suppressed_mailed:
            found.append(f"{self.suppressed_mailed} suppressed mailed")
        if self.missing:
            found.append(f"{self.missing} alternates missing")
        if self.unsettled:
            found.append(f"{self.unsettled} still owed")
        return found


def run_in_doubt_check(options: Options, *, recipients: int = 40, resends: int = 3) -> InDoubtCheck:
    """Send (mains refused), `resend` with one alternate's reply lost, `resend` again
    `resends` - 1 times, then `send` once: what does each say, and who is mailed?"""
    folder = options.out / "in-doubt"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    result = InDoubtCheck()
    notify = Notify(options.notify_root, folder / "logs")
    try:
        workspace = folder / "ws"
        people = make_workspace(workspace, recipients=recipients, seed=7, alternates=True)
        result.dropped = people.alternate[people.main[0]]
        first_records, records = folder / "records-send.jsonl", folder / "records-resend.jsonl"
        refusing = Relay(first_records, phase="send", delay_ms=0, refuse=people.main)
        try:
            write_env(workspace, port=refusing.port, connections=1, ledger=None)
            notify.run(workspace, "send", "--yes", timeout=options.run_timeout)
        finally:
            refusing.stop()
        relay = Relay(records, phase="resend", delay_ms=0, drop=[result.dropped])
        try:
            write_env(workspace, port=relay.port, connections=1, ledger=None)
            for _ in range(resends):
                done = notify.run(workspace, "resend", timeout=options.run_timeout)
                result.resends.append(f"{done.code}: {done.last_line}")
            done = notify.run(workspace, "send", "--yes", timeout=options.run_timeout)
            result.send = f"{done.code}: {done.last_line}"
            result.unsettled = unsettled(notify.status(workspace, options.run_timeout))
        finally:
            relay.stop()
        later = [r for r in read_records(records) if r.event == "accept"]
        accepted = Counter(a for r in later for a in r.rcpt)
        result.dropped_accepted = accepted[result.dropped]
        ids = {r.message_id for r in later if result.dropped in r.rcpt}
        result.dropped_message_ids = len(ids)
        result.suppressed_mailed = sum(1 for a in people.main if accepted[a])
        result.missing = sum(1 for a in people.alternate.values() if not accepted[a])
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        result.error = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        notify.stop_all()
    return result


# --------------------------------------------------------------------------------------
# Planning, output, main
# --------------------------------------------------------------------------------------


def plan_trials(
    count: int,
    scenarios: Sequence[Scenario],
    rng: random.Random,
    *,
    recipients: int,
    delay_ms: float,
    moments: Sequence[str] = MOMENTS,
) -> list[Trial]:
    """`count` trials, round robin over the scenarios; each scenario walks its kill moments
    in a shuffled cycle (resend has no registration), never starting with a check kill so
    that the first trial measures how long the check takes."""
    cycles: dict[str, Iterator[str]] = {}
    for scenario in scenarios:
        walk = [m for m in moments if scenario.command == "send" or m != "registration"]
        walk = walk or ["mid"]
        rng.shuffle(walk)
        if walk[0] == "check":
            walk.append(walk.pop(0))
        cycles[scenario.name] = itertools.cycle(walk)
    trials = []
    for number in range(count):
        scenario = scenarios[number % len(scenarios)]
        size = recipients
        if scenario.connections * 20 > size:  # notify uses no more than one connection per 20
            size = scenario.connections * 20 + recipients // 4
        trials.append(
            Trial(
                number + 1,
                scenario,
                next(cycles[scenario.name]),
                size,
                delay_ms,
                rng.randrange(1_000_000),
                rng.choice(("one", "all")) if scenario.senders > 1 else "all",
            )
        )
    return trials


def format_outcome(o: Outcome) -> str:
    unsettled_text = "?" if o.unsettled is None else str(o.unsettled)
    verdict = "ok" if o.ok else "FAIL " + "; ".join(o.failures)
    return (
        f"{o.trial:>3} {o.scenario:<9} C={o.connections:<2} x{o.senders} {o.ledger:<10} "
        f"kill {o.moment:<17} at {o.killed_at:<13} accepted {o.accepted:>4}/{o.expected:<4} "
        f"missing {o.missing:>3} dup {o.duplicates:>3} (≤{o.bound:<2}) new-id {o.new_message_ids} "
        f"suppressed-mailed {o.suppressed_mailed:>3} owed {unsettled_text:>3} "
        f"runs {','.join(o.runs)} {o.seconds:5.1f}s {verdict}"
    )


def format_in_doubt(result: InDoubtCheck) -> str:
    lines = [f"in-doubt re-send (the relay keeps {result.dropped} and drops the line):"]
    lines += [f"  resend #{n}: exit {line}" for n, line in enumerate(result.resends, 1)]
    lines.append(f"  send after them: exit {result.send}")
    lines.append(
        f"  the in-doubt alternate accepted {result.dropped_accepted}x under "
        f"{result.dropped_message_ids} Message-ID(s); suppressed mailed "
        f"{result.suppressed_mailed}; alternates missing {result.missing}; owed "
        f"{result.unsettled}: " + ("ok" if result.ok else "FAIL " + "; ".join(result.failures))
    )
    return "\n".join(lines)


def summary_table(outcomes: Sequence[Outcome]) -> str:
    """Per scenario: trials, failures, duplicates (mean, max, per connection), missing..."""
    lines = [
        "| scenario | C | senders | ledger | trials | failed | dup mean | dup max | dup max/C "
        "| missing | new ids | suppressed mailed | owed |",
        "| --- | --: | --: | --- | --: | --: | --: | --: | --: | --: | --: | --: | --: |",
    ]
    grouped: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        grouped[o.scenario].append(o)
    for name, group in grouped.items():
        first = group[0]
        dups = [o.duplicates for o in group]
        per_connection = max(dups) / first.bound
        owed = sum(o.unsettled or 0 for o in group)
        lines.append(
            f"| {name} | {first.connections} | {first.senders} | {first.ledger} | {len(group)} "
            f"| {sum(not o.ok for o in group)} | {statistics.mean(dups):.1f} | {max(dups)} "
            f"| {per_connection:.1f} | {sum(o.missing for o in group)} "
            f"| {sum(o.new_message_ids for o in group)} "
            f"| {sum(o.suppressed_mailed for o in group)} | {owed} |"
        )
    return "\n".join(lines)


def _postgres_ready() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except Exception:  # noqa: BLE001 - any failure means: skip those trials
        return False


def _describe_root(root: Path) -> str:
    found = subprocess.run(
        ["git", "-C", str(root), "log", "-1", "--format=%h %s"],
        capture_output=True,
        text=True,
        check=False,
    )
    return f"{root} ({found.stdout.strip() or 'not a git checkout'})"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=35, help="in total, across scenarios")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-seconds", type=float, default=1200.0, help="overall budget")
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help=f"from {', '.join(SCENARIOS)}"
    )
    parser.add_argument(
        "--moments", default=",".join(MOMENTS), help=f"kill moments, from {', '.join(MOMENTS)}"
    )
    parser.add_argument("--recipients", type=int, default=300, help="per trial")
    parser.add_argument("--delay-ms", type=float, default=10.0, help="relay delay per message")
    parser.add_argument("--reruns", type=int, default=4, help="runs after the kill, at most")
    parser.add_argument("--run-timeout", type=float, default=120.0, help="per notify command")
    parser.add_argument("--notify-root", type=Path, default=REPO, help="the checkout to run")
    parser.add_argument("--no-in-doubt-check", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "kill-trials")
    parser.add_argument("--json", type=Path, help="also write every trial as JSON")
    args = parser.parse_args(argv)
    unknown = [s for s in args.scenarios.split(",") if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    strange = [m for m in args.moments.split(",") if m not in MOMENTS]
    if strange:
        parser.error(f"unknown moment(s): {', '.join(strange)}")
    if not (args.notify_root / "notify" / "__main__.py").is_file():
        parser.error(f"{args.notify_root} holds no notify package")
    if args.trials < 1 or args.recipients < 20:
        parser.error("--trials must be at least 1 and --recipients at least 20")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    deadline = time.monotonic() + args.max_seconds
    scenarios = [SCENARIOS[name] for name in args.scenarios.split(",")]
    if any(s.ledger == "postgresql" for s in scenarios) and not _postgres_ready():
        print("PostgreSQL is not reachable on 127.0.0.1:5432: its scenarios are skipped")
        scenarios = [s for s in scenarios if s.ledger != "postgresql"]
    rng = random.Random(args.seed)
    trials = plan_trials(
        args.trials,
        scenarios,
        rng,
        recipients=args.recipients,
        delay_ms=args.delay_ms,
        moments=args.moments.split(","),
    )
    options = Options(args.notify_root, args.out, args.reruns, args.run_timeout)
    args.out.mkdir(parents=True, exist_ok=True)
    imported = Notify(args.notify_root, args.out).imported_from()
    if imported != args.notify_root.resolve():
        print(f"python -m notify runs {imported}, not {args.notify_root}: stopping")
        return 2
    print(f"notify: {_describe_root(args.notify_root)}")
    print(f"{len(trials)} trials, seed {args.seed}, relay delay {args.delay_ms:g} ms/message")
    estimates = Estimates()
    outcomes: list[Outcome] = []
    for trial in trials:
        if time.monotonic() > deadline:
            print(f"budget of {args.max_seconds:g} s spent: {len(trials) - len(outcomes)} skipped")
            break
        timeout = min(args.run_timeout, max(5.0, deadline - time.monotonic() + 30))
        outcome = run_trial(trial, replace(options, run_timeout=timeout), estimates)
        outcomes.append(outcome)
        print(format_outcome(outcome), flush=True)
    in_doubt = None
    if not args.no_in_doubt_check and time.monotonic() < deadline:
        in_doubt = run_in_doubt_check(options)
        print()
        print(format_in_doubt(in_doubt))
    print()
    print(summary_table(outcomes))
    failed = [o for o in outcomes if not o.ok]
    print(f"\n{len(outcomes)} trials, {len(failed)} broke a promise")
    if args.json:
        payload = {
            "notify": _describe_root(args.notify_root),
            "trials": [{**asdict(o), "ok": o.ok} for o in outcomes],
            "in_doubt": asdict(in_doubt) if in_doubt else None,
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 1 if failed or (in_doubt is not None and not in_doubt.ok) else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_relay":
        serve_relay(sys.argv[2:])
        sys.exit(0)
    sys.exit(main())
