"""A real SMTP server on loopback for the test suite (aiosmtpd in a background thread).

Nothing here mocks smtplib: the code under test talks to a genuine SMTP server over TCP,
optionally with STARTTLS or implicit TLS (certificates from a throw-away trustme CA) and
AUTH PLAIN/LOGIN.

Failure switchboard, chosen by the recipient's local part (case-insensitive; a ``+tag``
suffix is ignored, so ``fail-550+7@example.com`` behaves like ``fail-550@example.com``):

=================  ==========================================================================
``fail-550@``      RCPT -> ``550 5.1.1 <addr>: Recipient address rejected: User unknown``
``fail-552@``      RCPT -> ``552 5.2.2 Mailbox full``
``fail-451@``      RCPT -> ``451 4.3.0 Temporary lookup failure``
``fail-421@``      RCPT -> ``421 4.7.0 Try again later, closing connection``, then closes
``rate-451@``      RCPT -> ``451 4.7.1 Rate limit exceeded, retry in 1 seconds``
``data-554@``      RCPT accepted, end of DATA -> ``554 5.6.0 Message rejected``
``slow@``          accepted, but the end-of-DATA reply waits ``slow_seconds``
``drop@``          RCPT accepted; after the DATA content the connection is closed, no reply
``trickle@``       RCPT accepted; the end-of-DATA reply comes one byte per ``trickle_seconds``
``trickle-rcpt@``  the RCPT reply comes one byte per ``trickle_seconds``
anything else      accepted: ``250 2.0.0 Ok: queued as <id>``
=================  ==========================================================================

Any reply starting with ``421`` (switchboard or scripted) closes the connection after it is
sent, like a real MTA does.

A trickled reply takes seconds (a client with a deadline gives up first), every reply
after it is swallowed, and a trickled message is not recorded.

Programmatic switches on :class:`SmtpServer`: ``refuse_sender``, ``fail_next(n, reply)``,
``delay``, ``slow_seconds`` and ``trickle_seconds``; ``reset()`` restores all of them and
clears the records.
``SmtpServer(size_limit=N)`` states and enforces ``SIZE N`` (aiosmtpd's default is 32 MiB).

Used as a pytest plugin (``pytest_plugins = ["tests.smtp_server"]``), it provides the
fixtures ``smtp_server``, ``smtp_starttls_server``, ``smtp_tls_server`` and ``smtp_ca``.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import functools
import re
import shutil
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = [
    "AUTH_PASSWORD",
    "AUTH_USER",
    "DATA_REPLIES",
    "RCPT_REPLIES",
    "Received",
    "Security",
    "SmtpServer",
]

Security = Literal["none", "starttls", "tls"]

AUTH_USER = "notify"
AUTH_PASSWORD = "s3cret"

RCPT_REPLIES: dict[str, str] = {
    "fail-550": "550 5.1.1 <{address}>: Recipient address rejected: User unknown",
    "fail-552": "552 5.2.2 Mailbox full",
    "fail-451": "451 4.3.0 Temporary lookup failure",
    "fail-421": "421 4.7.0 Try again later, closing connection",
    "rate-451": "451 4.7.1 Rate limit exceeded, retry in 1 seconds",
}
DATA_REPLIES: dict[str, str] = {
    "data-554": "554 5.6.0 Message rejected",
}
REFUSED_SENDER_REPLY = "553 5.7.1 Sender address rejected"
AUTH_REQUIRED_REPLY = "530 5.7.0 Authentication required"

DROP = "drop"  # a scripted failure that closes the connection without a reply
_REPLY_RE = re.compile(r"^[2-5]\d\d[ -]")


@dataclass(frozen=True)
class Received:
    """One message the server accepted (answered 250 at the end of DATA)."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes  # exactly the bytes received, dot-unstuffed, CRLF line ends kept
    connection: int  # 1-based sequence number of the TCP connection it arrived on
    queue_id: str = ""
    mail_options: list[str] = field(default_factory=list)  # e.g. ["SMTPUTF8", "BODY=8BITMIME"]
    login: str | None = None  # the AUTH user, if the session authenticated
    at: float = field(default_factory=time.monotonic)  # when the server accepted it

    @property
    def message(self) -> EmailMessage:
        """`data` parsed with the modern email policy."""
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


def _kind(address: str) -> str:
    """Switchboard key of an address: its lower-cased local part without a +tag."""
    local = address.rpartition("@")[0] if "@" in address else address
    return local.split("+", 1)[0].lower()


class _Protocol(SMTP):
    """One SMTP connection: numbers itself, logs commands, honours delay / 421 / drop."""

    def __init__(self, owner: SmtpServer, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.owner = owner
        self.connection_number = 0
        self._dropped = False
        for name, method in list(self._smtp_methods.items()):
            self._smtp_methods[name] = self._logged(name, method)

    def _logged(self, name: str, method: Any) -> Any:
        @functools.wraps(method)
        async def wrapper(arg: str | None) -> None:
            shown = arg.split()[0] if name == "AUTH" and arg else arg  # never log secrets
            self.owner._log_command(name if shown is None else f"{name} {shown}")
            await method(arg)

        return wrapper

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # aiosmtpd calls connection_made again after STARTTLS on the same connection.
        new_connection = self._original_transport is None
        super().connection_made(transport)
        if new_connection:
            self.connection_number = self.owner._connection_opened()

    async def push(self, status: str | bytes) -> None:
        if self._dropped:
            return
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else status
        final_line = text[3:4] != "-"
        if final_line and self.owner.delay > 0:
            await asyncio.sleep(self.owner.delay)
        await super().push(status)
        if final_line and text.startswith("421"):
            self.close_connection()

    def close_connection(self) -> None:
        """Stop handling commands and close the connection (after flushing replies)."""
        if self._handler_coroutine is not None:
            self._handler_coroutine.cancel()
        if self.transport is not None:
            self.transport.close()

    def drop(self) -> None:
        """Close the connection and swallow every further reply."""
        self._dropped = True
        self.close_connection()

    async def trickle(self, reply: str) -> None:
        """Send `reply` one byte per `trickle_seconds`, swallowing every further reply.
        Cancelled (with the handler) when the client gives up and closes."""
        self._dropped = True
        for byte in f"{reply}\r\n".encode():
            if self.transport is None or self.transport.is_closing():
                return
            self.transport.write(bytes([byte]))
            await asyncio.sleep(self.owner.trickle_seconds)


class _Handler:
    """aiosmtpd handler hooks implementing the switchboard."""

    def __init__(self, owner: SmtpServer) -> None:
        self.owner = owner

    async def handle_EHLO(
        self,
        server: _Protocol,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname  # the 5-argument hook must do this itself
        if self.owner.auth is None:
            responses = [line for line in responses if not line[4:].startswith("AUTH")]
        return responses

    async def handle_MAIL(
        self,
        server: _Protocol,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        owner = self.owner
        if owner.auth is not None and not session.authenticated:
            return AUTH_REQUIRED_REPLY
        refuse = owner.refuse_sender
        if refuse is not None:
            if _REPLY_RE.match(refuse):
                return refuse
            if refuse == "*" or refuse.lower() == address.lower():
                return REFUSED_SENDER_REPLY
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(
        self,
        server: _Protocol,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if self.owner._take_rcpt_drop():
            server.drop()
            return "250 2.1.5 never sent"  # swallowed by _Protocol.push
        if _kind(address) == "trickle-rcpt":
            await server.trickle("250 2.1.5 Ok")
            return "250 2.1.5 never sent"  # swallowed by _Protocol.push
        reply = RCPT_REPLIES.get(_kind(address))
        if reply is not None:
            return reply.format(address=address)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: _Protocol, session: Session, envelope: Envelope) -> str:
        owner = self.owner
        scripted = owner._take_scripted_failure()
        if scripted == DROP:
            server.drop()
            return "250 2.0.0 Ok: never sent"  # swallowed by _Protocol.push
        if scripted is not None:
            return scripted
        kinds = {_kind(address) for address in envelope.rcpt_tos}
        if "drop" in kinds:
            server.drop()
            return "250 2.0.0 Ok: never sent"  # swallowed by _Protocol.push
        for kind, reply in DATA_REPLIES.items():
            if kind in kinds:
                return reply
        if "trickle" in kinds:
            await server.trickle("250 2.0.0 Ok: queued")
            return "250 2.0.0 Ok: never sent"  # swallowed by _Protocol.push
        if "slow" in kinds:
            # If the client gives up meanwhile, this task is cancelled: nothing is recorded.
            await asyncio.sleep(owner.slow_seconds)
        queue_id = uuid.uuid4().hex[:12].upper()
        login = session.login_data
        owner._record(
            Received(
                mail_from=envelope.mail_from or "",
                rcpt_tos=list(envelope.rcpt_tos),
                data=bytes(envelope.original_content or b""),
                connection=server.connection_number,
                queue_id=queue_id,
                mail_options=list(envelope.mail_options),
                login=login.decode("utf-8", "replace") if isinstance(login, bytes) else login,
            )
        )
        return f"250 2.0.0 Ok: queued as {queue_id}"


class _Controller(Controller):
    """aiosmtpd Controller bound to a free port chosen by the kernel (no bind/release race)."""

    def __init__(self, owner: SmtpServer, handler: Any, **kwargs: Any) -> None:
        self._owner = owner
        super().__init__(handler, hostname="127.0.0.1", port=0, **kwargs)

    def factory(self) -> _Protocol:
        return _Protocol(self._owner, self.handler, **self.SMTP_kwargs)

    def _create_server(self) -> Any:
        async def bind() -> asyncio.AbstractServer:
            server = await self.loop.create_server(
                self._factory_invoker, host=self.hostname, port=self.port, ssl=self.ssl_context
            )
            self.port = server.sockets[0].getsockname()[1]
            return server

        return bind()


class SmtpServer:
    """A real SMTP server on 127.0.0.1 with a free port, recording what it accepts."""

    def __init__(
        self,
        security: Security = "none",
        auth: tuple[str, str] | None = None,
        *,
        ca: trustme.CA | None = None,
        ca_file: str | Path | None = None,
        slow_seconds: float = 0.5,
        delay: float = 0.0,
        size_limit: int | None = None,
        trickle_seconds: float = 0.5,
    ) -> None:
        if security not in ("none", "starttls", "tls"):
            raise ValueError(f"unknown security mode {security!r}")
        self.security: Security = security
        self.auth = auth
        self.host = "127.0.0.1"
        self.port = 0
        self._default_slow_seconds = slow_seconds
        self._default_delay = delay
        self.slow_seconds = slow_seconds
        self.delay = delay
        self._default_trickle_seconds = trickle_seconds
        self.trickle_seconds = trickle_seconds
        self.refuse_sender: str | None = None
        self.size_limit = size_limit  # the SIZE it states and enforces; None: aiosmtpd's own
        self._lock = threading.Condition()
        self._messages: list[Received] = []
        self._commands: list[str] = []
        self._connections = 0
        self._scripted: list[str] = []
        self._rcpt_drops = 0
        self._controller: _Controller | None = None
        self._tmpdir: str | None = None
        self.ca: trustme.CA | None = None
        self.ca_file: str | None = None
        self._ssl_context: ssl.SSLContext | None = None
        if security != "none":
            self.ca = ca or trustme.CA()
            if ca_file is None:
                self._tmpdir = tempfile.mkdtemp(prefix="smtp-ca-")
                ca_file = Path(self._tmpdir) / "ca.pem"
                self.ca.cert_pem.write_to_path(str(ca_file))
            self.ca_file = str(ca_file)
            cert = self.ca.issue_cert("localhost", "127.0.0.1")
            self._ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            cert.configure_cert(self._ssl_context)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> SmtpServer:
        if self._controller is not None:
            raise RuntimeError("SMTP server already running")
        smtp_kwargs: dict[str, Any] = {
            "server_hostname": "localhost",  # else aiosmtpd calls socket.getfqdn() per connection
            "decode_data": False,  # bytes in, and 8BITMIME advertised
            "enable_SMTPUTF8": True,
            # aiosmtpd only counts STARTTLS as TLS: implicit TLS must not require it either.
            "auth_require_tls": self.security == "starttls",
            "authenticator": self._authenticate,
        }
        if self.size_limit is not None:
            smtp_kwargs["data_size_limit"] = self.size_limit
        if self.security == "starttls":
            smtp_kwargs.update(tls_context=self._ssl_context, require_starttls=True)
        elif self.security == "tls":
            smtp_kwargs.update(ssl_context=self._ssl_context)
        controller = _Controller(self, _Handler(self), **smtp_kwargs)
        controller.start()
        self._controller = controller
        self.port = controller.port
        # Controller.start() opened one probe connection of its own: forget it.
        self.reset()
        return self

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def close(self) -> None:
        """Stop the server and delete the CA file it created."""
        self.stop()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- switches --------------------------------------------------------------------------

    def fail_next(self, n: int, reply: str) -> None:
        """Answer the next `n` ends of DATA with `reply` (a 421 also closes the connection)."""
        if not _REPLY_RE.match(reply):
            raise ValueError(f"not an SMTP reply: {reply!r}")
        with self._lock:
            self._scripted.extend([reply] * n)

    def drop_next(self, n: int, *, at: Literal["rcpt", "data"]) -> None:
        """Close the connection without a reply at the next `n` RCPTs, or ends of DATA
        (the client then cannot know whether the message was accepted)."""
        with self._lock:
            if at == "rcpt":
                self._rcpt_drops += n
            else:
                self._scripted.extend([DROP] * n)

    def reset(self) -> None:
        """Forget messages, commands and connections; restore every switch to its default."""
        with self._lock:
            self._messages.clear()
            self._commands.clear()
            self._connections = 0
            self._scripted.clear()
            self._rcpt_drops = 0
            self.refuse_sender = None
            self.delay = self._default_delay
            self.slow_seconds = self._default_slow_seconds
            self.trickle_seconds = self._default_trickle_seconds

    # -- records ---------------------------------------------------------------------------

    @property
    def messages(self) -> list[Received]:
        with self._lock:
            return list(self._messages)

    @property
    def connections(self) -> int:
        with self._lock:
            return self._connections

    @property
    def commands(self) -> list[str]:
        """Commands received, e.g. "EHLO x", "MAIL FROM:<a>", "AUTH PLAIN" (no secrets)."""
        with self._lock:
            return list(self._commands)

    def wait_for_messages(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Block until at least `count` messages were accepted; return them all."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(self._messages)} of {count} messages arrived")
                self._lock.wait(remaining)
            return list(self._messages)

    def client_context(self) -> ssl.SSLContext:
        """A client SSL context trusting this server's CA (as SSL_CERT_FILE would)."""
        return ssl.create_default_context(cafile=self.ca_file)

    def client_env(self) -> dict[str, str]:
        """Environment for a client process using ssl.create_default_context()."""
        return {"SSL_CERT_FILE": self.ca_file} if self.ca_file else {}

    def __repr__(self) -> str:
        return f"<SmtpServer {self.security} {self.host}:{self.port} auth={bool(self.auth)}>"

    # -- called from the server thread ------------------------------------------------------

    def _connection_opened(self) -> int:
        with self._lock:
            self._connections += 1
            return self._connections

    def _log_command(self, line: str) -> None:
        with self._lock:
            self._commands.append(line)

    def _record(self, message: Received) -> None:
        with self._lock:
            self._messages.append(message)
            self._lock.notify_all()

    def _take_rcpt_drop(self) -> bool:
        with self._lock:
            if self._rcpt_drops:
                self._rcpt_drops -= 1
                return True
            return False

    def _take_scripted_failure(self) -> str | None:
        with self._lock:
            return self._scripted.pop(0) if self._scripted else None

    def _authenticate(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        if self.auth is None or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = self.auth
        ok = auth_data.login == user.encode() and auth_data.password == password.encode()
        # handled=False + no message -> "535 5.7.8 Authentication credentials invalid"
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


# -- pytest fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def smtp_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, str]:
    """A session-wide trustme CA and the path of its PEM (for SSL_CERT_FILE)."""
    ca = trustme.CA()
    path = tmp_path_factory.mktemp("smtp-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ca, str(path)


@pytest.fixture(scope="session")
def _smtp_plain_session() -> Iterator[SmtpServer]:
    with SmtpServer("none") as server:
        yield server


@pytest.fixture(scope="session")
def _smtp_starttls_session(smtp_ca: tuple[trustme.CA, str]) -> Iterator[SmtpServer]:
    ca, ca_file = smtp_ca
    with SmtpServer("starttls", auth=(AUTH_USER, AUTH_PASSWORD), ca=ca, ca_file=ca_file) as server:
        yield server


@pytest.fixture(scope="session")
def _smtp_tls_session(smtp_ca: tuple[trustme.CA, str]) -> Iterator[SmtpServer]:
    ca, ca_file = smtp_ca
    with SmtpServer("tls", ca=ca, ca_file=ca_file) as server:
        yield server


@pytest.fixture
def smtp_server(_smtp_plain_session: SmtpServer) -> SmtpServer:
    """Plain SMTP, no AUTH; reset for this test."""
    _smtp_plain_session.reset()
    return _smtp_plain_session


@pytest.fixture
def smtp_starttls_server(_smtp_starttls_session: SmtpServer) -> SmtpServer:
    """STARTTLS required, AUTH PLAIN/LOGIN as notify / s3cret; reset for this test."""
    _smtp_starttls_session.reset()
    return _smtp_starttls_session


@pytest.fixture
def smtp_tls_server(_smtp_tls_session: SmtpServer) -> SmtpServer:
    """Implicit TLS (SMTPS), no AUTH; reset for this test."""
    _smtp_tls_session.reset()
    return _smtp_tls_session
