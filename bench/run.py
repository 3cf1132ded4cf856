#!/usr/bin/env python3
"""notify's benchmark: every stage as a real `python -m notify` process, against real sinks.

    python bench/run.py [--recipients N] [--items-per-recipient K] [--million] [--json F]

It generates a workspace (an export of N recipients, ~K rows each, with duplicate
addresses in other case and a few invalid ones), then measures wall seconds and the
child's peak RSS of `check`, `send --dry-run` and `send --yes` to SMTP sinks on
127.0.0.1: Postfix's smtp-sink (with smtp-source as the yardstick), aiosmtpd in its own
process, and a relay that delays every reply. A naive Jinja2 + EmailMessage + smtplib
loop runs against the same sinks as a floor. Every load is bounded in count and time,
targets 127.0.0.1 only, and every server it starts is stopped in a finally block.

Only the standard library, what notify depends on (Jinja2) and aiosmtpd are used. The
script calls itself for its helper processes (`_serve-aiosmtpd`, `_serve-delay`,
`_naive`); those are internal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).resolve()
LOOPBACK = "127.0.0.1"
INCIDENT = "bench"
TITLE = "Duplicate charge on March renewals"
SENDER = "Acme Support <support@acme.example>"
FACTS = {"refund_eta": "5 business days", "support_phone": "+1 555 0100"}
MILLION = 1_000_000
SMTP_SINK = "/usr/sbin/smtp-sink"
SMTP_SOURCE = "/usr/sbin/smtp-source"
ROUND_TRIPS_PER_MESSAGE = 4  # MAIL, RCPT, DATA, end-of-data, on a reused connection

# --------------------------------------------------------------------------------------
# The workspace: an export, a manifest and apology templates
# --------------------------------------------------------------------------------------

_FIRST_NAMES_TEXT = (
    "Ann Anne Anna Bob Robert Carla Carl Dana Daniel Eve Emma Frank Grace Hana Ivan Jack "
    "Jacob Julia Kate Liam Lena Maria Mario Noah Olga Omar Paul Paula Rita Sam Sara Tom "
    "Uma Vera Will Yara Zoe Zoë José Jürgen Chloé Øyvind Siobhán Ngozi Wei Priya Aiko "
    "Mateo"
)
FIRST_NAMES = tuple(_FIRST_NAMES_TEXT.split())
_LAST_NAMES_TEXT = (
    "Lee Stone Smith Jones Brown Garcia Miller Davis Wilson Moore Taylor Clark Lewis "
    "Walker Young King Wright Lopez Hill Scott Green Adams Baker Nelson Carter Mitchell "
    "Perez Roberts Turner Phillips Campbell Parker Evans Edwards Collins O'Brien Müller "
    "Núñez Søren Dubois Rossi Kowalski Nakamura Okafor Singh Haddad Novak Ivanova "
    "Papadopoulos"
)
LAST_NAMES = tuple(_LAST_NAMES_TEXT.split())
_SYLLABLES_TEXT = (
    "ber ton mal ric sen dor ka li vin os ard ell ham wick ford ley gan mor stein berg"
)
SYLLABLES = tuple(_SYLLABLES_TEXT.split())
_DOMAINS_TEXT = (
    "example.com example.org example.net mail.example.com shop.example.org "
    "post.example.net customers.example.com"
)
DOMAINS = tuple(_DOMAINS_TEXT.split())
INVALID_ADDRESSES = ("", "bob@@example.com", "no-at-sign.example.com", "ann@example..com")

MANIFEST = f"""\
title = "{TITLE}"
template = "apology"
from = "{SENDER}"
reply_to = "help@acme.example"

[source]
path = "data/affected.csv"

[columns]
email = "Email Address"
name = "Customer"
phone = "Phone"

[group]
items = ["order_id", "amount"]

[facts]
refund_eta = "{FACTS["refund_eta"]}"
support_phone = "{FACTS["support_phone"]}"
"""

TEMPLATES = {
    "subject.j2": "Sorry, {{ customer.name | default('there') }}: {{ incident.title }}\n",
    "body.txt.j2": """\
Dear {{ customer.name | default("customer") }},

On our March renewals we charged your card twice. That was our mistake, and we are
sorry. These are the charges we took twice:

{% for item in items %}
  - order {{ item.order_id }}: {{ item.amount }} USD
{% endfor %}

We have already refunded the duplicate charge{{ "s" if items | length > 1 else "" }}.
Your bank shows the refund within {{ incident.facts.refund_eta }}; you do not need to
do anything. If it has not arrived by then, reply to this message or call us on
{{ incident.facts.support_phone }} and quote {{ items[0].order_id }}.

Again, we are sorry for the trouble.

The Acme Support team
""",
    "body.html.j2": """\
<p>Dear {{ customer.name | default("customer") }},</p>
<p>On our March renewals we charged your card twice. That was our mistake, and we are
sorry. These are the charges we took twice:</p>
<table>
<tr><th>order</th><th>amount</th></tr>
{% for item in items %}
<tr><td>{{ item.order_id }}</td><td>{{ item.amount }} USD</td></tr>
{% endfor %}
</table>
<p>We have already refunded the duplicate charge{{ "s" if items | length > 1 else "" }}.
Your bank shows the refund within {{ incident.facts.refund_eta }}; you do not need to
do anything. If it has not arrived by then, reply to this message or call us on
{{ incident.facts.support_phone }} and quote {{ items[0].order_id }}.</p>
<p>Again, we are sorry for the trouble.</p>
<p>The Acme Support team</p>
""",
}

HEADER = ["Customer", "Email Address", "Phone", "order_id", "amount"]


@dataclass
class ExportFacts:
    """What the generator put in the export, to compare with what `check` reports."""

    recipients: int
    rows: int
    case_variants: int  # extra rows whose address differs only in case or spacing
    invalid_rows: int


def _ascii(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if c.isascii() and c.isalnum())


def generate_workspace(
    root: Path, *, recipients: int, items_per_recipient: float, seed: int = 42
) -> ExportFacts:
    """A workspace with incidents/bench.toml, templates/apology/ and data/affected.csv."""
    rng = random.Random(seed)
    if root.exists():
        shutil.rmtree(root)
    (root / "incidents").mkdir(parents=True)
    (root / "incidents" / f"{INCIDENT}.toml").write_text(MANIFEST, encoding="utf-8")
    (root / "templates" / "apology").mkdir(parents=True)
    for name, text in TEMPLATES.items():
        (root / "templates" / "apology" / name).write_text(text, encoding="utf-8")
    (root / ".env").write_text(
        "# Written by bench/run.py; each stage overrides these with environment variables.\n"
        f"NOTIFY_SMTP_HOST={LOOPBACK}\nNOTIFY_SMTP_PORT=25\nNOTIFY_SMTP_SECURITY=none\n",
        encoding="utf-8",
    )
    more = (items_per_recipient - 1) / items_per_recipient  # geometric: mean K rows each
    rows: list[list[str]] = []
    case_variants = 0
    for n in range(recipients):
        first = rng.choice(FIRST_NAMES)
        if rng.random() < 0.3:
            last = rng.choice(LAST_NAMES)
        else:
            last = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 3)))).title()
        token = format((n * 2_654_435_761) % 36**6, "x")  # distinct for every n
        address = f"{_ascii(first)}.{_ascii(last)}.{token}@{rng.choice(DOMAINS)}".lower()
        phone = f"+1 555 {rng.randrange(10_000):04d}" if rng.random() < 0.7 else ""
        count = 1
        while count < 50 and rng.random() < more:
            count += 1
        for item in range(count):
            written = address
            if item and rng.random() < 0.4:
                written = rng.choice(
                    (address.upper(), f"  {address.title()} ", address.capitalize())
                )
                case_variants += 1
            amount = f"{rng.randint(5, 499)}.{rng.randrange(100):02d}"
            rows.append([f"{first} {last}", written, phone, f"A-{n}-{item}", amount])
    invalid = max(3, len(rows) // 500)
    for n in range(invalid):
        bad = INVALID_ADDRESSES[n % len(INVALID_ADDRESSES)]
        rows.append(["Broken Row", bad, "", f"X-{n}", "1.00"])
    rng.shuffle(rows)
    (root / "data").mkdir()
    with (root / "data" / "affected.csv").open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(HEADER)
        writer.writerows(rows)
    return ExportFacts(recipients, len(rows), case_variants, invalid)


# --------------------------------------------------------------------------------------
# Measuring one child process: wall seconds and its own peak RSS (wait4)
# --------------------------------------------------------------------------------------


@dataclass
class Measured:
    seconds: float
    cpu_seconds: float  # user + system, this process alone
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False


def pinned(argv: Sequence[str], cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus, *argv] if cpus else list(argv)


def run_measured(
    argv: Sequence[str], *, cpus: str | None, env: dict[str, str], timeout: float, logs: Path
) -> Measured:
    """Run argv, wait4() for exactly that pid: its rusage is this command's alone.

    taskset exec()s the command, so the pid (and the rusage) is the command's own.
    """
    logs.parent.mkdir(parents=True, exist_ok=True)
    out_path, err_path = logs.with_suffix(".out"), logs.with_suffix(".err")
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            pinned(argv, cpus),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            cwd=REPO,
            start_new_session=True,
        )
        expired = threading.Event()

        def kill() -> None:
            expired.set()
            _kill_group(process.pid)

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:  # Ctrl-C: the child is in its own session, so stop it here
            _kill_group(process.pid)
            os.waitpid(process.pid, 0)
            raise
        finally:
            timer.cancel()
        seconds = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait again
    return Measured(
        seconds=seconds,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=usage.ru_maxrss / 1024,  # kilobytes on Linux
        returncode=process.returncode,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
        timed_out=expired.is_set(),
    )


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


# --------------------------------------------------------------------------------------
# Sinks: each prints smtp-sink's running counter ("sess=N quit=N mesg=N\r") on stdout
# --------------------------------------------------------------------------------------

_COUNTER = re.compile(rb"sess=(\d+) quit=(\d+) mesg=(\d+)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


class Sink:
    """A sink process on 127.0.0.1 and a thread timestamping its message counter."""

    def __init__(self, name: str, argv: list[str], port: int, cpus: str | None) -> None:
        self.name, self.port, self.cpus = name, port, cpus
        self.events: list[tuple[float, int]] = []  # (monotonic time, messages so far)
        self.sessions = 0
        self.messages = 0
        self.stats: dict[str, Any] = {}
        self._changed = threading.Condition()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(
            pinned(argv, cpus),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            self._wait_listening()
        except BaseException:
            self.stop()
            raise

    def _read(self) -> None:
        assert self.process.stdout is not None
        tail = b""
        while chunk := self.process.stdout.read1(65536):
            now = time.monotonic()
            time.sleep(0.002)  # one wake-up per 2 ms, not per message: keep off the CPUs
            tail = (tail + chunk)[-65536:]
            counters = _COUNTER.findall(tail[-200:])
            if counters:
                sessions, _quits, messages = (int(v) for v in counters[-1])
                with self._changed:
                    self.sessions = sessions
                    if messages != self.messages:
                        self.messages = messages
                        self.events.append((now, messages))
                    self._changed.notify_all()
            if b"STATS " in tail and tail.rstrip().endswith(b"}"):
                self.stats = json.loads(tail[tail.rindex(b"STATS ") + 6 :])

    def _wait_listening(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._stderr.seek(0)
                err = self._stderr.read().decode(errors="replace").strip()
                raise RuntimeError(f"{self.name} exited at start: {err[-300:]}")
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=1) as probe:
                    probe.recv(512)  # the greeting
                    probe.sendall(b"QUIT\r\n")
                    probe.recv(512)
                time.sleep(0.1)  # let the probe's session show in the counter before a mark
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} is not listening on {LOOPBACK}:{self.port}")

    def mark(self) -> tuple[int, int]:
        with self._changed:
            return self.messages, self.sessions

    def phase(self, mark: tuple[int, int], expected: int) -> tuple[float | None, int, int]:
        """Seconds from the first to the last message after mark, messages and sessions seen."""
        base, sessions = mark
        with self._changed:
            self._changed.wait_for(lambda: self.messages >= base + expected, timeout=2.0)
        time.sleep(0.2)  # the client's last session ends just after its last message
        with self._changed:
            events = [(t, m) for t, m in self.events if m > base]
            seen, sessions_seen = self.messages - base, self.sessions - sessions
        if len(events) < 2:
            return None, seen, sessions_seen
        return events[-1][0] - events[0][0], seen, sessions_seen

    def stop(self) -> dict[str, Any]:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _kill_group(self.process.pid)
                self.process.wait(timeout=5)
        self._reader.join(timeout=2)
        self._stderr.close()
        return self.stats


def start_smtp_sink(cpus: str | None) -> Sink:
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []  # smtp-sink refuses to run as root
    argv = [SMTP_SINK, "-c", *user, f"{LOOPBACK}:{port}", "256"]
    return Sink("smtp-sink", argv, port, cpus)


def start_python_sink(kind: str, cpus: str | None, *extra: str) -> Sink:
    port = free_port()
    argv = [sys.executable, str(SCRIPT), f"_serve-{kind}", str(port), *extra]
    return Sink(kind, argv, port, cpus)


# --- the aiosmtpd sink (its own process) ----------------------------------------------


class _Counters:
    def __init__(self) -> None:
        self.sessions = self.quits = self.messages = self.open = self.max_open = 0
        self.commands: Counter[str] = Counter()
        self.replies = 0

    def show(self) -> None:
        sys.stdout.write(f"sess={self.sessions} quit={self.quits} mesg={self.messages}\r")
        sys.stdout.flush()

    def dump(self) -> None:
        stats = {
            "sessions": self.sessions,
            "messages": self.messages,
            "max_concurrent": self.max_open,
            "commands": dict(self.commands),
            "replies": self.replies,
        }
        sys.stdout.write("\nSTATS " + json.dumps(stats) + "\n")
        sys.stdout.flush()


def serve_aiosmtpd(port: int) -> None:
    """Accept and discard everything; count sessions, concurrency and messages."""
    import logging

    from aiosmtpd.smtp import SMTP

    logging.getLogger("mail.log").setLevel(logging.ERROR)
    counters = _Counters()

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            counters.messages += 1
            counters.show()
            return "250 2.0.0 Ok: queued"

    class CountingSMTP(SMTP):
        def connection_made(self, transport: Any) -> None:
            counters.open += 1
            counters.max_open = max(counters.max_open, counters.open)
            super().connection_made(transport)

        def connection_lost(self, error: Exception | None) -> None:
            counters.open -= 1
            counters.sessions += 1
            counters.show()
            super().connection_lost(error)

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(
        loop.create_server(
            lambda: CountingSMTP(Handler(), hostname="bench-sink", enable_SMTPUTF8=True),
            LOOPBACK,
            port,
        )
    )
    loop.add_signal_handler(signal.SIGTERM, loop.stop)
    loop.run_forever()
    server.close()
    counters.dump()


# --- the delayed relay (its own process) ----------------------------------------------


def serve_delay(port: int, delay: float) -> None:
    """A minimal SMTP server that waits `delay` seconds before every reply it sends."""
    counters = _Counters()

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        counters.open += 1
        counters.max_open = max(counters.max_open, counters.open)

        async def reply(text: bytes) -> None:
            await asyncio.sleep(delay)
            counters.replies += 1
            writer.write(text)
            await writer.drain()

        try:
            await reply(b"220 bench-delay ESMTP\r\n")
            while line := await reader.readline():
                verb = line.split(b" ", 1)[0].strip().upper().decode("ascii", "replace")
                counters.commands[verb] += 1
                if verb == "EHLO":
                    await reply(b"250-bench-delay\r\n250-8BITMIME\r\n250 SIZE 52428800\r\n")
                elif verb in ("HELO", "MAIL", "RCPT", "RSET", "NOOP"):
                    await reply(b"250 2.0.0 Ok\r\n")
                elif verb == "DATA":
                    await reply(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    while await reader.readline() not in (b".\r\n", b".\n", b""):
                        pass
                    counters.commands["."] += 1
                    counters.messages += 1
                    await reply(b"250 2.0.0 Ok: queued\r\n")
                    counters.show()
                elif verb == "QUIT":
                    counters.quits += 1
                    await reply(b"221 2.0.0 Bye\r\n")
                    break
                else:
                    await reply(b"502 5.5.2 Error: command not recognized\r\n")
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            counters.open -= 1
            counters.sessions += 1
            counters.show()
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(session, LOOPBACK, port)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with server:
            await stop.wait()

    asyncio.run(main())
    counters.dump()


# --- the naive sender (its own process) -----------------------------------------------

_NAIVE_VALID = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


def naive_send(workspace: Path, port: int, limit: int) -> None:
    """The floor: Jinja2, EmailMessage and one reused smtplib connection, nothing else."""
    import smtplib
    from email.headerregistry import Address
    from email.message import EmailMessage

    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(workspace / "templates" / "apology"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",)),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    subject, text, html = (
        environment.get_template(n) for n in ("subject.j2", "body.txt.j2", "body.html.j2")
    )
    people: dict[str, dict[str, Any]] = {}
    with (workspace / "data" / "affected.csv").open(newline="", encoding="utf-8") as source:
        for row in csv.DictReader(source):
            address = row["Email Address"].strip()
            if not _NAIVE_VALID.match(address):
                continue
            person = people.setdefault(
                address.lower(),
                {"customer": {"name": row["Customer"], "email": address.lower()}, "items": []},
            )
            person["items"].append({"order_id": row["order_id"], "amount": row["amount"]})
    incident = {**FACTS, "id": INCIDENT, "title": TITLE, "facts": FACTS}
    sent = 0
    with smtplib.SMTP(LOOPBACK, port, timeout=60) as smtp:
        for person in list(people.values())[:limit]:
            context = {**person, "incident": incident}
            message = EmailMessage()
            message["From"] = SENDER
            local, _, domain = person["customer"]["email"].rpartition("@")
            message["To"] = Address(person["customer"]["name"], local, domain)
            message["Subject"] = subject.render(context).strip()
            message.set_content(text.render(context))
            message.add_alternative(html.render(context), subtype="html")
            smtp.send_message(message)
            sent += 1
    print(f"sent {sent}")


# --------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------


@dataclass
class Row:
    stage: str
    sink: str = ""
    connections: int | None = None
    messages: int | None = None
    seconds: float | None = None
    cpu_seconds: float | None = None  # user + system of the measured process
    peak_rss_mb: float | None = None
    rate: float | None = None  # messages (or recipients) per wall second of the process
    sink_seconds: float | None = None  # first to last message, timed at the sink
    sink_rate: float | None = None
    ratio: str = ""
    note: str = ""
    ok: bool = True

    @property
    def best_rate(self) -> float | None:
        return self.sink_rate or self.rate


@dataclass
class Bench:
    args: argparse.Namespace
    out: Path
    sender_cpus: str | None  # the sending stages
    sink_cpus: str | None
    offline_cpus: str | None  # check and dry-run, which have no sink: every usable CPU
    deadline: float
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def budget(self, wanted: float) -> float:
        return max(1.0, min(wanted, self.remaining()))

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        print(f"  {_format_row(row)}", flush=True)
        return row

    def skip(self, stage: str, why: str) -> Row:
        return self.add(Row(stage, note=f"skipped: {why}", ok=False))


def base_env(**settings: str) -> dict[str, str]:
    """This process's environment without NOTIFY_*, plus the given NOTIFY_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFY_")}
    env.update({f"NOTIFY_{k.upper()}": v for k, v in settings.items()})
    env["PYTHONUNBUFFERED"] = "1"
    return env


def notify_argv(workspace: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "notify",
        *args,
        "--incident",
        INCIDENT,
        "--workspace",
        str(workspace),
    ]


def _check_numbers(stdout: str) -> dict[str, int]:
    numbers = {}
    for label in ("rows read", "rejected", "duplicates merged", "look-alikes", "recipients"):
        match = re.search(rf"^\s+{label}\s+(\d+)\s*$", stdout, re.MULTILINE)
        if match:
            numbers[label] = int(match.group(1))
    return numbers


def _failure(measured: Measured) -> str:
    if measured.timed_out:
        return "timed out (killed)"
    lines = (measured.stderr.strip() or measured.stdout.strip()).splitlines()
    return f"exit {measured.returncode}: {lines[-1] if lines else ''}"[:160]


def stage_startup(bench: Bench, workspace: Path) -> None:
    measured = run_measured(
        [sys.executable, "-m", "notify", "--version"],
        cpus=bench.offline_cpus,
        env=base_env(),
        timeout=bench.budget(60),
        logs=bench.out / "logs" / "startup",
    )
    bench.add(
        Row(
            "python -m notify --version",
            seconds=measured.seconds,
            cpu_seconds=measured.cpu_seconds,
            peak_rss_mb=measured.peak_rss_mb,
            note="interpreter + import floor",
            ok=measured.returncode == 0,
        )
    )


def stage_check(bench: Bench, workspace: Path, recipients: int, label: str = "check") -> bool:
    measured = run_measured(
        notify_argv(workspace, "check", "--offline"),
        cpus=bench.offline_cpus,
        env=base_env(),
        timeout=bench.budget(bench.args.stage_timeout),
        logs=bench.out / "logs" / label.replace(" ", "-"),
    )
    numbers = _check_numbers(measured.stdout)
    bench.details[label] = numbers
    ok = measured.returncode == 0
    found = numbers.get("recipients", recipients)
    bench.add(
        Row(
            label,
            messages=found,
            seconds=measured.seconds,
            cpu_seconds=measured.cpu_seconds,
            peak_rss_mb=measured.peak_rss_mb,
            rate=found / measured.seconds,
            note=", ".join(f"{k} {v}" for k, v in numbers.items()) if ok else _failure(measured),
            ok=ok,
        )
    )
    return ok


def measure_grouping(workspace: Path) -> None:
    """Time notify's grouping of the export's rows into recipients, alone (`_grouping`).

    Loading and validating come first, untimed; the collector is paused as `check`
    pauses it. Prints rows, recipients and seconds as JSON."""
    from notify.cleaning import clean as cleaning
    from notify.manifest import load_manifest
    from notify.sources.load import load_sources
    from notify.workspace import Workspace

    opened = Workspace.open(workspace)
    manifest = load_manifest(opened, INCIDENT)
    frame = load_sources(manifest.sources, root=opened.root, incident_id=INCIDENT, environ={})
    keyed, _ = cleaning._keyed_rows(
        frame, columns=manifest.columns, items=manifest.items, where="", allow_typo_domains=False
    )
    with cleaning._collector_paused():
        started = time.perf_counter()
        recipients = cleaning.group_rows(keyed)
        seconds = time.perf_counter() - started
    print(json.dumps({"rows": len(frame), "recipients": len(recipients), "seconds": seconds}))


def stage_grouping(bench: Bench, workspace: Path, label: str) -> None:
    """Grouping rows per recipient, on one CPU; the target is ≤ 3 s per million rows."""
    measured = run_measured(
        [sys.executable, str(SCRIPT), "_grouping", str(workspace)],
        cpus=bench.sender_cpus,
        env=base_env(),
        timeout=bench.budget(bench.args.stage_timeout),
        logs=bench.out / "logs" / label.replace(" ", "-"),
    )
    if measured.returncode != 0:
        bench.add(Row(label, note=_failure(measured), ok=False))
        return
    found = json.loads(measured.stdout.strip().splitlines()[-1])
    per_million = found["seconds"] / found["rows"] * 1e6
    bench.add(
        Row(
            label,
            messages=found["rows"],
            seconds=found["seconds"],
            rate=found["rows"] / found["seconds"],
            note=f"{per_million:.2f} s per million rows, into {found['recipients']:,} "
            "recipients; target ≤ 3",
        )
    )


def previews_folder(bench: Bench) -> Path:
    """Where --dry-run writes: tmpfs by default, so the figure is notify's, not the disk's."""
    shm = Path("/dev/shm")
    if bench.args.previews == "tmpfs" and shm.is_dir() and os.access(shm, os.W_OK):
        return shm / f"notify-bench-{os.getpid()}" / "previews"
    return bench.out / "previews"


def stage_dry_run(bench: Bench, workspace: Path, recipients: int, label: str) -> Path | None:
    previews = previews_folder(bench)
    if previews.exists():
        shutil.rmtree(previews)
    measured = run_measured(
        notify_argv(workspace, "send", "--dry-run", "--preview-dir", str(previews)),
        cpus=bench.offline_cpus,
        env=base_env(),
        timeout=bench.budget(bench.args.stage_timeout),
        logs=bench.out / "logs" / label.replace(" ", "-"),
    )
    ok = measured.returncode == 0
    written = len(list(previews.glob("*.eml"))) if ok else 0
    bench.add(
        Row(
            label,
            messages=written,
            seconds=measured.seconds,
            cpu_seconds=measured.cpu_seconds,
            peak_rss_mb=measured.peak_rss_mb,
            rate=written / measured.seconds,
            note=f"{written} .eml + index.html + summary.csv in {previews.parent}"
            if ok
            else _failure(measured),
            ok=ok,
        )
    )
    return previews if ok else None


def sample_message(previews: Path | None, out: Path) -> tuple[Path | None, int]:
    """A real notify message (LF line ends, for smtp-source -F) and the mean .eml size."""
    if previews is None:
        return None, 2000
    files = sorted(previews.glob("*.eml"))[:500]
    if not files:
        return None, 2000
    mean = sum(f.stat().st_size for f in files) // len(files)
    closest = min(files, key=lambda f: abs(f.stat().st_size - mean))
    sample = out / "sample-message.txt"
    sample.write_bytes(closest.read_bytes().replace(b"\r\n", b"\n"))
    return sample, mean


def stage_smtp_source(
    bench: Bench, sink: Sink, sessions: int, sample: Path | None, size: int
) -> Row:
    count = bench.args.source_messages
    payload = ["-F", str(sample)] if sample else ["-l", str(size)]
    argv = [
        SMTP_SOURCE,
        "-d",
        "-s",
        str(sessions),
        "-m",
        str(count),
        *payload,
        "-f",
        "support@acme.example",
        "-t",
        "customer@example.com",
        f"{LOOPBACK}:{sink.port}",
    ]
    mark = sink.mark()
    measured = run_measured(
        argv,
        cpus=bench.sender_cpus,
        env=base_env(),
        timeout=bench.budget(120),
        logs=bench.out / "logs" / f"smtp-source-s{sessions}",
    )
    return bench.add(
        _send_row(f"smtp-source -d -s {sessions}", sink, sessions, count, mark, measured)
    )


def stage_naive(bench: Bench, sink: Sink, workspace: Path, limit: int) -> Row:
    mark = sink.mark()
    measured = run_measured(
        [sys.executable, str(SCRIPT), "_naive", str(workspace), str(sink.port), str(limit)],
        cpus=bench.sender_cpus,
        env=base_env(),
        timeout=bench.budget(bench.args.stage_timeout),
        logs=bench.out / "logs" / f"naive-{sink.name}",
    )
    match = re.search(r"sent (\d+)", measured.stdout)
    sent = int(match.group(1)) if match else 0
    return bench.add(_send_row("naive smtplib loop", sink, 1, sent, mark, measured))


def stage_notify_send(
    bench: Bench, sink: Sink, workspace: Path, connections: int, recipients: int, name: str
) -> Row:
    ledger = bench.out / "ledgers" / f"{name}.sqlite3"
    ledger.parent.mkdir(parents=True, exist_ok=True)
    for stale in ledger.parent.glob(f"{name}.sqlite3*"):
        stale.unlink()
    env = base_env(
        smtp_host=LOOPBACK,
        smtp_port=str(sink.port),
        smtp_security="none",
        connections=str(connections),
        ledger=str(ledger),
    )
    mark = sink.mark()
    measured = run_measured(
        notify_argv(workspace, "send", "--yes"),
        cpus=bench.sender_cpus,
        env=env,
        timeout=bench.budget(bench.args.stage_timeout),
        logs=bench.out / "logs" / name,
    )
    match = re.search(r"Sent: (\d+) accepted", measured.stdout)
    accepted = int(match.group(1)) if match else 0
    row = _send_row(
        f"notify send --yes C={connections}", sink, connections, accepted, mark, measured
    )
    if measured.returncode == 0 and accepted != recipients:
        row.note += f"; accepted {accepted} of {recipients}"
    return bench.add(row)


def _send_row(
    stage: str,
    sink: Sink,
    connections: int,
    expected: int,
    mark: tuple[int, int],
    measured: Measured,
) -> Row:
    span, seen, sessions = sink.phase(mark, expected)
    ok = measured.returncode == 0 and seen >= expected > 0
    note = f"{sessions} session(s) at the sink" if ok else _failure(measured)
    if measured.returncode == 0 and seen < expected:
        note = f"the sink saw {seen} of {expected} messages"
    return Row(
        stage,
        sink=sink.name,
        connections=connections,
        messages=seen,
        seconds=measured.seconds,
        cpu_seconds=measured.cpu_seconds,
        peak_rss_mb=measured.peak_rss_mb,
        rate=seen / measured.seconds if seen else None,
        sink_seconds=span,
        sink_rate=(seen - 1) / span if span else None,
        note=note,
        ok=ok,
    )


def _ratio(row: Row, reference: Row | None, label: str) -> str:
    if not (row.ok and reference and reference.ok and row.best_rate and reference.best_rate):
        return ""
    return f"{row.best_rate / reference.best_rate:.2f}x {label}"


def sink_suite(
    bench: Bench, sink: Sink, workspace: Path, recipients: int, sample: Path | None, size: int
) -> None:
    """On one sink: smtp-source (when it is smtp-sink), the naive floor, notify at C=1 and C=4."""
    sources: dict[int, Row] = {}
    if sink.name == "smtp-sink":
        for sessions in (1, 4):
            sources[sessions] = stage_smtp_source(bench, sink, sessions, sample, size)
    naive = stage_naive(bench, sink, workspace, recipients)
    for connections in bench.args.connections:
        if bench.remaining() < 15:
            bench.skip(f"notify send --yes C={connections} ({sink.name})", "time budget")
            continue
        name = f"send-{sink.name}-c{connections}"
        row = stage_notify_send(bench, sink, workspace, connections, recipients, name)
        ratios = [_ratio(row, naive, "naive")]
        if sink.name == "smtp-sink":
            source = sources.get(connections) or sources.get(4 if connections > 1 else 1)
            ratios.insert(0, _ratio(row, source, f"smtp-source -s {source and source.connections}"))
        row.ratio = "; ".join(r for r in ratios if r)
        print(f"    ratio: {row.ratio}", flush=True)
    naive.ratio = _ratio(naive, sources.get(1), "smtp-source -s 1")


def delay_suite(bench: Bench, workspace: Path, messages: int) -> None:
    """Against a relay that waits before every reply: how close to the ceiling notify gets."""
    delay = bench.args.delay_ms / 1000
    for connections in bench.args.connections:
        wanted = messages * ROUND_TRIPS_PER_MESSAGE * delay / connections * 2 + 30
        if bench.remaining() < wanted / 2:
            bench.skip(f"notify send --yes C={connections} (delay relay)", "time budget")
            continue
        try:
            sink = start_python_sink("delay", bench.sink_cpus, str(delay))
        except (RuntimeError, OSError) as exc:
            bench.skip(f"notify send --yes C={connections} (delay relay)", str(exc))
            continue
        try:
            name = f"send-delay-c{connections}"
            row = stage_notify_send(bench, sink, workspace, connections, messages, name)
        finally:
            stats = sink.stop()
        used = int(stats.get("max_concurrent", connections)) or connections
        ceiling = used / (ROUND_TRIPS_PER_MESSAGE * delay)
        commands = stats.get("commands", {})
        per_message = sum(commands.get(v, 0) for v in ("MAIL", "RCPT", "DATA", ".", "RSET"))
        observed = stats.get("replies", 0) / max(1, stats.get("messages", 1))
        row.connections = used
        row.ratio = (
            f"{row.best_rate / ceiling:.2f} of ceiling {ceiling:.1f}/s" if row.best_rate else ""
        )
        row.note = (
            f"{used} connection(s) seen (asked {connections}); "
            f"{per_message / max(1, stats.get('messages', 1)):.2f} round trips/msg in the "
            f"transaction, {observed:.2f} with greeting/EHLO/QUIT; RSET {commands.get('RSET', 0)}"
            f"; sessions {stats.get('sessions')}"
        )
        bench.details[name] = stats
        print(f"    ratio: {row.ratio}; {row.note}", flush=True)


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------

COLUMNS = (
    "stage",
    "sink",
    "conn",
    "msgs",
    "seconds",
    "CPU s",
    "msg/s",
    "msg/s@sink",
    "RSS MB",
    "ratio",
)


def _cells(row: Row) -> list[str]:
    def num(value: float | None, digits: int = 0) -> str:
        return "" if value is None else f"{value:,.{digits}f}"

    return [
        row.stage,
        row.sink,
        "" if row.connections is None else str(row.connections),
        "" if row.messages is None else f"{row.messages:,}",
        num(row.seconds, 2),
        num(row.cpu_seconds, 2),
        num(row.rate),
        num(row.sink_rate),
        num(row.peak_rss_mb, 0),
        row.ratio,
    ]


def _format_row(row: Row) -> str:
    cells = _cells(row)
    text = " | ".join(c for c in cells if c)
    return f"{text}  ({row.note})" if row.note else text


def print_table(rows: list[Row]) -> None:
    table = [list(COLUMNS)] + [_cells(r) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    for index, line in enumerate(table):
        print(" | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())
        if index == 0:
            print("-+-".join("-" * w for w in widths))
    notes = [(r.stage, r.sink, r.note) for r in rows if r.note]
    if notes:
        print("\nnotes:")
        for stage, sink, note in notes:
            print(f"  {stage}{f' ({sink})' if sink else ''}: {note}")


def _notify_version() -> str:
    """The commit measured, and whether notify/ had uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "notify"], cwd=REPO, capture_output=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    return f"{head or 'unknown'}{' + uncommitted changes in notify/' if dirty else ''}"


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": date.today().isoformat(),
        "notify": _notify_version(),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def placement(args: argparse.Namespace) -> tuple[str | None, str | None, str | None, str]:
    """CPUs for the sender, the sink, and the stages without a sink; the same all run long.

    check and --dry-run get every usable CPU (notify may render in several processes).
    This script itself (mostly asleep, reading the sink's counter) moves to the last CPU,
    away from the sender, so it never takes the sender's CPU.
    """
    if args.placement == "none" or not shutil.which("taskset"):
        return None, None, None, "unpinned"
    cpus = sorted(os.sched_getaffinity(0))
    every = ",".join(map(str, cpus))
    os.sched_setaffinity(0, {cpus[-1]})
    offline = f"; check and dry-run on CPUs {every}"
    if args.placement == "same" or len(cpus) < 2:
        return str(cpus[0]), str(cpus[0]), every, f"sender and sink on CPU {cpus[0]}{offline}"
    where = f"sender on CPU {cpus[0]}, sink on CPU {cpus[1]}{offline}"
    return str(cpus[0]), str(cpus[1]), every, where


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=10_000, help="default 10,000")
    parser.add_argument(
        "--items-per-recipient",
        type=float,
        default=1.5,
        help="mean export rows per recipient (default 1.5)",
    )
    parser.add_argument(
        "--million",
        action="store_true",
        help="also check 1,000,000 (and dry-run them if the time budget allows)",
    )
    parser.add_argument(
        "--million-send",
        action="store_true",
        help="also send 1,000,000 to smtp-sink with 4 connections, after their check",
    )
    parser.add_argument("--no-send", action="store_true", help="check and dry-run only")
    parser.add_argument(
        "--connections",
        type=int,
        nargs="+",
        default=[1, 4],
        help="NOTIFY_CONNECTIONS values to send with (default 1 4)",
    )
    parser.add_argument(
        "--source-messages",
        type=int,
        default=20_000,
        help="messages per smtp-source run (default 20,000)",
    )
    parser.add_argument(
        "--delay-ms",
        type=float,
        default=25.0,
        help="the delayed relay's wait before each reply (default 25)",
    )
    parser.add_argument(
        "--delay-messages",
        type=int,
        default=300,
        help="messages sent to the delayed relay (default 300)",
    )
    parser.add_argument(
        "--placement",
        choices=("split", "same", "none"),
        default="split",
        help="split: sender on one CPU, sink on another (default); "
        "same: both on one CPU; none: no taskset",
    )
    parser.add_argument(
        "--previews",
        choices=("tmpfs", "disk"),
        default="tmpfs",
        help="where --dry-run writes: /dev/shm (default; this VM's disk swings 0.3-6 s "
        "per 10,000 new files) or bench/out/previews",
    )
    parser.add_argument(
        "--stage-timeout",
        type=float,
        default=300.0,
        help="seconds before a stage is killed (default 300)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=570.0,
        help="the whole run's time budget; later stages are skipped",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "bench" / "out",
        help="work folder (default bench/out, git-ignored)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.recipients < 1 or args.items_per_recipient < 1:
        parser.error("--recipients must be >= 1 and --items-per-recipient >= 1")
    return args


def run(args: argparse.Namespace) -> Bench:
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    info = machine()
    sender_cpus, sink_cpus, offline_cpus, where = placement(args)
    deadline = time.monotonic() + args.max_seconds
    bench = Bench(args, out, sender_cpus, sink_cpus, offline_cpus, deadline)
    bench.details["machine"] = {**info, "placement": where}
    print(
        f"notify benchmark, {info['date']}: {info['cores']} cores ({info['cpu']}), "
        f"Python {info['python']}; notify {info['notify']}; {where}",
        flush=True,
    )

    n = args.recipients
    workspace = out / f"ws-{n}"
    started = time.perf_counter()
    facts = generate_workspace(
        workspace, recipients=n, items_per_recipient=args.items_per_recipient
    )
    bench.details["export"] = asdict(facts)
    bench.add(
        Row(
            f"generate export ({n:,} recipients)",
            messages=facts.rows,
            seconds=time.perf_counter() - started,
            note=f"{facts.rows:,} rows, {facts.case_variants:,} case/space variants, "
            f"{facts.invalid_rows} invalid",
        )
    )
    stage_startup(bench, workspace)
    checked = stage_check(bench, workspace, n, f"check ({n:,})")
    stage_grouping(bench, workspace, f"group rows per recipient ({n:,})")
    previews = stage_dry_run(bench, workspace, n, f"send --dry-run ({n:,})") if checked else None
    sample, size = sample_message(previews, out)
    if previews is not None and previews.is_relative_to("/dev/shm"):
        shutil.rmtree(previews.parent)  # give the memory back before anything else runs
    bench.details["mean_message_bytes"] = size
    recipients = bench.details.get(f"check ({n:,})", {}).get("recipients", n)

    if not args.no_send and checked:
        sinks: list[tuple[str, Callable[[], Sink]]] = [
            ("aiosmtpd", lambda: start_python_sink("aiosmtpd", sink_cpus))
        ]
        if Path(SMTP_SINK).exists() and Path(SMTP_SOURCE).exists():
            sinks.insert(0, ("smtp-sink", lambda: start_smtp_sink(sink_cpus)))
        else:
            print(
                "postfix's smtp-sink/smtp-source are missing (apt-get install postfix); "
                "falling back to the aiosmtpd sink, no smtp-source yardstick",
                flush=True,
            )
            bench.skip("smtp-sink + smtp-source", "postfix not installed")
        for name, start in sinks:
            try:
                sink = start()
            except (RuntimeError, OSError) as exc:
                bench.skip(f"sends to {name}", f"the sink did not start: {exc}")
                continue
            try:
                sink_suite(bench, sink, workspace, recipients, sample, size)
            finally:
                sink.stop()
        small = out / f"ws-delay-{args.delay_messages}"
        generate_workspace(small, recipients=args.delay_messages, items_per_recipient=1.0)
        delay_suite(bench, small, args.delay_messages)

    if args.million or args.million_send:
        million_suite(bench, out / f"ws-{MILLION}", sink_cpus)
    return bench


def million_suite(bench: Bench, big: Path, sink_cpus: str | None) -> None:
    """check a million recipients; with --million-send, send them all to smtp-sink (the
    check included, as an operator runs it); then --dry-run them if the budget allows."""
    args = bench.args
    if bench.remaining() < 120:
        bench.skip(f"check ({MILLION:,})", "time budget")
        return
    started = time.perf_counter()
    facts = generate_workspace(
        big, recipients=MILLION, items_per_recipient=args.items_per_recipient
    )
    bench.add(
        Row(
            f"generate export ({MILLION:,} recipients)",
            messages=facts.rows,
            seconds=time.perf_counter() - started,
        )
    )
    if not stage_check(bench, big, MILLION, f"check ({MILLION:,})"):
        return
    stage_grouping(bench, big, f"group rows per recipient ({MILLION:,})")
    if args.million_send:
        if not (Path(SMTP_SINK).exists() and bench.remaining() > 120):
            bench.skip(f"send ({MILLION:,})", "no smtp-sink, or no time left")
        else:
            sink = start_smtp_sink(sink_cpus)
            try:
                stage_notify_send(bench, sink, big, 4, MILLION, "million-c4")
            finally:
                sink.stop()
    estimate = _dry_run_estimate(bench, MILLION)
    label = f"send --dry-run ({MILLION:,})"
    if estimate and bench.remaining() > estimate * 1.3:
        written = stage_dry_run(bench, big, MILLION, label)
        if written is not None and written.is_relative_to("/dev/shm"):
            shutil.rmtree(written.parent)
    else:
        bench.skip(
            label,
            f"needs ~{estimate or 0:,.0f} s, "
            f"{max(0, bench.remaining()):,.0f} s left in --max-seconds",
        )


def _dry_run_estimate(bench: Bench, recipients: int) -> float | None:
    """This run's check time at that size plus the per-preview cost seen at --recipients."""
    by_stage = {row.stage.split(" (")[0] + f" {row.messages}": row for row in bench.rows}
    n = bench.details.get(f"check ({bench.args.recipients:,})", {}).get("recipients")
    small_check = by_stage.get(f"check {n}")
    small_dry = by_stage.get(f"send --dry-run {n}")
    big_check = by_stage.get(f"check {recipients}")
    if not (n and small_check and small_dry and big_check):
        return None
    per_preview = max(0.0, (small_dry.seconds or 0) - (small_check.seconds or 0)) / n
    return (big_check.seconds or 0) + per_preview * recipients


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        bench = run(args)
    finally:  # previews on tmpfs hold memory: never leave them behind
        shutil.rmtree(Path("/dev/shm") / f"notify-bench-{os.getpid()}", ignore_errors=True)
    print()
    print_table(bench.rows)
    print(f"\nmachine: {json.dumps(bench.details['machine'])}")
    print(f"mean message size: {bench.details.get('mean_message_bytes')} bytes")
    if args.json:
        payload = {"rows": [asdict(r) for r in bench.rows], **bench.details}
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0 if all(r.ok for r in bench.rows if not r.note.startswith("skipped")) else 1


INTERNAL: dict[str, Callable[[list[str]], None]] = {
    "_serve-aiosmtpd": lambda a: serve_aiosmtpd(int(a[0])),
    "_serve-delay": lambda a: serve_delay(int(a[0]), float(a[1])),
    "_naive": lambda a: naive_send(Path(a[0]), int(a[1]), int(a[2])),
    "_grouping": lambda a: measure_grouping(Path(a[0])),
}

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in INTERNAL:
        INTERNAL[sys.argv[1]](sys.argv[2:])
        sys.exit(0)
    sys.exit(main())
