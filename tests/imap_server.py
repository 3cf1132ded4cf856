"""A private Dovecot IMAP server on loopback for the test suite.

The real thing, not a mock: ``dovecot -F`` with its own configuration, runtime and state
folders, log file and mail under a temporary folder, listening on 127.0.0.1 only, on two
free ports: IMAPS (implicit TLS) and IMAP with STARTTLS. The certificate comes from a
trustme CA; point ``SSL_CERT_FILE`` at ``ca_file`` so ``ssl.create_default_context()``
trusts it. Each user has a passwd-file of its own (``users/%u``), so each test
gets a fresh account (``new_account()``) with an empty Maildir of its own.

Run as root (as in CI) the mail belongs to the ``dovecot`` user, since Dovecot refuses
UID 0; run as anyone else, everything runs as that user.
"""

from __future__ import annotations

import imaplib
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme

from notify.settings import Settings

PASSWORD = "imap-s3cret"
_START_TIMEOUT = 15.0

CONFIG = """\
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
default_internal_user = {internal_user}
default_login_user = {login_user}
first_valid_uid = {uid}
last_valid_uid = {uid}
ssl = yes
ssl_cert = <{root}/cert.pem
ssl_key = <{root}/key.pem
auth_mechanisms = plain login
auth_failure_delay = 0
mail_location = maildir:~/Maildir
{extra}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {root}/users/%u
}}
userdb {{
  driver = passwd-file
  args = {root}/users/%u
}}
service imap-login {{
  {chroot}
  inet_listener imap {{
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = {imaps_port}
    ssl = yes
  }}
}}
"""


def find_dovecot() -> str | None:
    """The dovecot binary, which lives in /usr/sbin (not on a normal user's PATH)."""
    return shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/usr/local/sbin")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _quoted(folder: str) -> str:
    """An ASCII folder name (non-ASCII already in IMAP's UTF-7) as an IMAP quoted string."""
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Account:
    """One mail user on the server, with an empty INBOX at first."""

    server: DovecotServer
    user: str
    password: str = PASSWORD

    def settings(self, security: str = "tls", **overrides: Any) -> Settings:
        """Settings that point open_imap at this account (tls, starttls or none)."""
        port = self.server.imaps_port if security == "tls" else self.server.imap_port
        values: dict[str, Any] = {
            "imap_host": self.server.host,
            "imap_port": port,
            "imap_security": security,
            "imap_user": self.user,
            "imap_password": self.password,
        }
        values.update(overrides)
        return Settings(**values)

    def client(self) -> imaplib.IMAP4_SSL:
        """A logged-in imaplib connection, for putting mail in and looking at it."""
        context = ssl.create_default_context(cafile=self.server.ca_file)
        connection = imaplib.IMAP4_SSL(
            self.server.host, self.server.imaps_port, ssl_context=context, timeout=10
        )
        connection.login(self.user, self.password)
        return connection

    def append(self, raw: bytes, folder: str = "INBOX") -> None:
        """Deliver a message with IMAP APPEND, creating the folder if needed."""
        connection = self.client()
        try:
            connection.create(_quoted(folder))  # NO when it exists: fine
            typ, data = connection.append(_quoted(folder), "", None, raw)
            assert typ == "OK", data
        finally:
            connection.logout()

    def flag(self, uid: int, flag: str, folder: str = "INBOX") -> None:
        """Add a flag to one message, as another mail client would."""
        connection = self.client()
        try:
            typ, data = connection.select(_quoted(folder))
            assert typ == "OK", data
            typ, data = connection.uid("STORE", str(uid), "+FLAGS.SILENT", f"({flag})")
            assert typ == "OK", data
        finally:
            connection.logout()

    def flags(self, folder: str = "INBOX") -> dict[int, set[str]]:
        """UID -> flags of every message in `folder`, read without changing them."""
        connection = self.client()
        try:
            typ, data = connection.select(_quoted(folder), readonly=True)
            assert typ == "OK", data
            typ, data = connection.uid("FETCH", "1:*", "(FLAGS)")
            result = {}
            for line in data:
                if isinstance(line, bytes):
                    uid = re.search(rb"UID (\d+)", line)
                    flags = re.search(rb"FLAGS \(([^)]*)\)", line)
                    if uid and flags:
                        result[int(uid.group(1))] = set(flags.group(1).decode().split())
            return result
        finally:
            connection.logout()

    def bodies(self, folder: str = "INBOX") -> list[bytes]:
        """Every message of `folder` in UID order (with PEEK: marks nothing)."""
        connection = self.client()
        try:
            typ, data = connection.select(_quoted(folder), readonly=True)
            assert typ == "OK", data
            typ, data = connection.uid("FETCH", "1:*", "(BODY.PEEK[])")
            return [part[1] for part in data if isinstance(part, tuple)]
        finally:
            connection.logout()

    @property
    def maildir(self) -> Path:
        return self.server.root / "home" / self.user / "Maildir"


class DovecotServer:
    """A private Dovecot on 127.0.0.1, started by start() and stopped by stop()."""

    def __init__(
        self,
        binary: str,
        *,
        ca: trustme.CA | None = None,
        ca_file: str | None = None,
        extra_config: str = "",
    ) -> None:
        self.binary = binary
        self.extra_config = extra_config
        self.host = "127.0.0.1"
        self.imap_port = 0
        self.imaps_port = 0
        self.root = Path(tempfile.mkdtemp(prefix="notify-dovecot-"))
        self.ca = ca or trustme.CA()
        if ca_file is None:
            ca_file = str(self.root / "ca.pem")
            self.ca.cert_pem.write_to_path(ca_file)
        self.ca_file = ca_file
        self._process: subprocess.Popen[bytes] | None = None
        self._numbers = itertools.count(1)
        self._mail_owner = self._choose_users()

    def _choose_users(self) -> tuple[int, int]:
        if os.getuid() == 0:
            mail = pwd.getpwnam("dovecot")
            self._internal_user, self._login_user = "dovecot", "dovenull"
            return mail.pw_uid, mail.pw_gid
        me = pwd.getpwuid(os.getuid())
        self._internal_user = self._login_user = me.pw_name
        return me.pw_uid, me.pw_gid

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> DovecotServer:
        """Write the configuration and start Dovecot; retries if a port was taken meanwhile."""
        self.root.chmod(0o755)  # Dovecot's unprivileged processes read the passwd-files
        for part in ("run", "state", "home"):
            (self.root / part).mkdir(exist_ok=True)
        os.chown(self.root / "home", *self._mail_owner)
        cert = self.ca.issue_cert("localhost", "127.0.0.1")
        cert.private_key_pem.write_to_path(str(self.root / "key.pem"))
        cert.cert_chain_pems[0].write_to_path(str(self.root / "cert.pem"))
        (self.root / "users").mkdir(exist_ok=True)
        for _attempt in range(3):
            if self._start_once():
                return self
        raise RuntimeError(f"Dovecot did not start:\n{self.log()}")

    def _start_once(self) -> bool:
        self.imap_port, self.imaps_port = _free_port(), _free_port()
        config = self.root / "dovecot.conf"
        config.write_text(
            CONFIG.format(
                root=self.root,
                internal_user=self._internal_user,
                login_user=self._login_user,
                uid=self._mail_owner[0],
                chroot="" if os.getuid() == 0 else "chroot =",
                imap_port=self.imap_port,
                imaps_port=self.imaps_port,
                extra=self.extra_config,
            )
        )
        with (self.root / "stderr.log").open("ab") as stderr:
            self._process = subprocess.Popen(
                [self.binary, "-F", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=stderr
            )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                return False
            if self._listening(self.imaps_port) and self._listening(self.imap_port):
                return True
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"Dovecot did not listen within {_START_TIMEOUT}s:\n{self.log()}")

    def _listening(self, port: int) -> bool:
        try:
            with socket.create_connection((self.host, port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the master (it stops its children), then kill it if it lingers."""
        process, self._process = self._process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        """Stop the server and delete its folder (configuration, mail and logs)."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> DovecotServer:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- accounts and logs -----------------------------------------------------------------

    def new_account(self) -> Account:
        """A new user with an empty Maildir, in a passwd-file of its own (none is cached)."""
        user = f"bounces{next(self._numbers)}"
        home = self.root / "home" / user
        home.mkdir()
        os.chown(home, *self._mail_owner)
        uid, gid = self._mail_owner
        line = f"{user}:{{PLAIN}}{PASSWORD}:{uid}:{gid}::{home}::\n"
        (self.root / "users" / user).write_text(line)
        return Account(self, user)

    def log(self) -> str:
        """Dovecot's log and stderr, to explain a failure."""
        parts = []
        for name in ("dovecot.log", "stderr.log"):
            path = self.root / name
            if path.exists():
                parts.append(path.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    def __repr__(self) -> str:
        return f"<DovecotServer {self.host} imaps:{self.imaps_port} imap:{self.imap_port}>"
