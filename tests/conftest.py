"""Shared fixtures: workspace factories over tmp_path, and the real SMTP server plugin."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from notify.cli import cli

pytest_plugins = ["tests.smtp_server"]

REPO_ROOT = Path(__file__).resolve().parent.parent

DEFAULT_MANIFEST = """\
title = "Duplicate charge on March renewals"
template = "apology"
from = "Acme Support <support@acme.example>"
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
refund_eta = "5 business days"
"""

DEFAULT_TEMPLATES = {
    "subject.j2": "Sorry, {{ customer.name | default('there') }}: {{ incident.title }}\n",
    "body.txt.j2": textwrap.dedent(
        """\
        Dear {{ customer.name | default("customer") }},

        We charged you twice for:
        {% for item in items %}
        - order {{ item.order_id }}: {{ item.amount }}
        {% endfor %}

        Your refund arrives within {{ incident.facts.refund_eta }}.
        """
    ),
    "body.html.j2": textwrap.dedent(
        """\
        <p>Dear {{ customer.name | default("customer") }},</p>
        <ul>
        {% for item in items %}
        <li>order {{ item.order_id }}: {{ item.amount }}</li>
        {% endfor %}
        </ul>
        """
    ),
}

HEADER = ["Customer", "Email Address", "Phone", "order_id", "amount"]


@dataclass
class WorkspaceFactory:
    """A workspace in tmp_path, built from parts a test can override."""

    root: Path

    def write(self, relative: str, content: str | bytes) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    def rows(self, rows: Sequence[Sequence[Any]], header: Sequence[str] = HEADER) -> None:
        """Write the export the default manifest reads."""
        path = self.root / "data" / "affected.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(header)
            writer.writerows(rows)

    def env(self, **settings: Any) -> None:
        """Write .env with the given NOTIFY_* settings (keys without the prefix)."""
        lines = [f"NOTIFY_{key.upper()}={value}" for key, value in settings.items()]
        self.write(".env", "\n".join(lines) + "\n")

    def smtp(self, server: Any, **extra: Any) -> None:
        """Point .env at a test SMTP server."""
        extra.setdefault("retry_delay", "0.05")
        self.env(smtp_host="127.0.0.1", smtp_port=server.port, smtp_security="none", **extra)


def make_rows(count: int, *, start: int = 0, items_each: int = 1) -> list[list[str]]:
    """`count` distinct customers, each with `items_each` rows."""
    rows = []
    for n in range(start, start + count):
        for item in range(items_each):
            rows.append(
                [
                    f"Customer {n}",
                    f"customer{n}@example.com",
                    f"+1 555 {n:04d}",
                    f"A-{n}-{item}",
                    f"{10 + item}.00",
                ]
            )
    return rows


@pytest.fixture
def workspace(tmp_path: Path) -> WorkspaceFactory:
    """The default incident 42 workspace with three customers, one with two orders."""
    factory = WorkspaceFactory(tmp_path / "ws")
    factory.write("incidents/42.toml", DEFAULT_MANIFEST)
    for name, text in DEFAULT_TEMPLATES.items():
        factory.write(f"templates/apology/{name}", text)
    factory.rows(
        [
            ["Ann Lee", "ann@example.com", "+1 555 0001", "A-1", "49.00"],
            ["Bob Stone", "bob@example.com", "", "A-2", "19.00"],
            ["Ann Lee", " ANN@Example.com ", "+1 555 0001", "A-3", "5.00"],
            ["Zoë O'Brien", "zoe@example.org", "", "A-4", "7.50"],
        ]
    )
    return factory


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No NOTIFY_* variable from the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("NOTIFY_"):
            monkeypatch.delenv(name)


@pytest.fixture
def run_cli(clean_environ: None) -> Callable[..., Result]:
    """Invoke the CLI in-process the way a user would, exit code and all."""

    def run(workspace: WorkspaceFactory, *args: str, input: str | None = None) -> Result:
        runner = CliRunner()
        return runner.invoke(
            cli, [*args, "--workspace", str(workspace.root)], input=input, catch_exceptions=True
        )

    return run


@pytest.fixture
def run_notify(clean_environ: None) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run `python -m notify` as a real process: real exit codes, real stdin, no terminal."""

    def run(
        workspace: WorkspaceFactory, *args: str, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "notify", *args, "--workspace", str(workspace.root)],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            cwd=REPO_ROOT,
            env=notify_env(),
        )

    return run


def notify_env(**extra: str) -> dict[str, str]:
    """The test process environment without NOTIFY_* settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFY_")}
    env.update(extra)
    return env


@pytest.fixture
def chdir_tmp(tmp_path: Path) -> Iterator[Path]:
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(old)


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def unavailable_service(what: str) -> None:
    """A workstation may lack a server: skip. CI must have it: fail loudly."""
    if os.environ.get("CI"):
        pytest.fail(f"{what}, and CI is set", pytrace=False)
    pytest.skip(f"{what}; start it (with CI set this fails instead)")


@pytest.fixture
def pg_ledger_url() -> Iterator[str]:
    """A fresh PostgreSQL database on the local server for one test's ledger."""
    import uuid

    import psycopg

    name = f"notify_ledger_{uuid.uuid4().hex[:12]}"
    admin = "host=127.0.0.1 port=5432 user=postgres dbname=test"
    try:
        with psycopg.connect(admin, connect_timeout=3, autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
    except psycopg.OperationalError as exc:
        unavailable_service(f"PostgreSQL is not reachable on 127.0.0.1:5432 ({exc})")
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_settings(request: pytest.FixtureRequest) -> dict[str, str]:
    """Extra .env settings that put the ledger in SQLite (the default) or PostgreSQL."""
    if request.param == "sqlite":
        return {}
    return {"ledger": request.getfixturevalue("pg_ledger_url")}


@pytest.fixture(scope="session")
def imap_server(smtp_ca: tuple[Any, str]) -> Iterator[Any]:
    """A private Dovecot on 127.0.0.1 (IMAPS and STARTTLS ports), certified by the test CA."""
    from tests.imap_server import DovecotServer, find_dovecot

    binary = find_dovecot()
    if binary is None:
        unavailable_service("Dovecot is not installed (Debian: apt-get install dovecot-imapd)")
        return
    ca, ca_file = smtp_ca
    with DovecotServer(binary, ca=ca, ca_file=ca_file) as server:
        yield server


@pytest.fixture
def imap_account(imap_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fresh account with an empty INBOX; SSL_CERT_FILE makes the client trust the server."""
    monkeypatch.setenv("SSL_CERT_FILE", imap_server.ca_file)
    return imap_server.new_account()
