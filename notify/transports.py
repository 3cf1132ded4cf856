"""Where messages go: a relay over SMTP, a preview folder, or a test address.

Every transport has the same three methods, so delivery never asks which one it holds.
SMTP errors are translated here, once, into Outcomes or DeliveryErrors.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import smtplib
import socket
import ssl
import time
from dataclasses import replace
from typing import Protocol

from notify.compose import Outgoing
from notify.errors import AuthError, ConnectError, SenderRefusedError, SettingsError
from notify.models import Outcome, State
from notify.settings import Settings

TIMEOUT_SECONDS = 60
RECONNECT_PAUSES = (1.0, 2.0, 0.0)  # seconds before the 2nd and 3rd try; the 3rd failure stops
_LEADING_DOT = re.compile(rb"(?m)^\.")


class Transport(Protocol):
    """Something that takes messages one at a time and says what became of each."""

    def open(self) -> None:
        """Check the way out works (connect, log in) before the first message."""

    def send(self, message: Outgoing) -> Outcome:
        """Hand over one message; raise DeliveryError only when no message can go."""

    def close(self) -> None:
        """Let go of connections and files."""


class SmtpTransport:
    """One reused SMTP connection to the relay, re-opened when the relay drops it."""

    def __init__(self, settings: Settings, *, max_per_connection: int = 100) -> None:
        if not settings.smtp_host:
            raise SettingsError(
                "NOTIFY_SMTP_HOST is not set; put NOTIFY_SMTP_HOST=smtp.example.com in .env"
            )
        self.settings = settings
        self.host: str = settings.smtp_host
        self.port = settings.smtp_port
        self.connections_opened = 0
        self.max_per_connection = max_per_connection
        self._sent_on_connection = 0
        self._context: ssl.SSLContext | None = None
        self._connection: smtplib.SMTP | None = None
        if settings.smtp_password and settings.smtp_security == "none" and not _loopback(self.host):
            raise SettingsError(
                f"refusing to send the SMTP password unencrypted to {self.host}; "
                "set NOTIFY_SMTP_SECURITY=starttls or tls"
            )

    def open(self) -> None:
        if self._connection is None:
            self._connect()

    def send(self, message: Outgoing) -> Outcome:
        """MAIL, RCPT, DATA; a connection lost after the data went out leaves it in doubt."""
        connection = self._ready_connection()
        try:
            code, reply = connection.mail(message.envelope_from, self._mail_options(message))
            if code != 250:
                return self._sender_refused(message, code, reply)
            code, reply = connection.rcpt(message.to)
            if code not in (250, 251):
                return self._outcome(message, code, reply)
            code, reply = connection.docmd("data")
            if code != 354:
                return self._outcome(message, code, reply)
            connection.send(_dot_stuffed(message.data))
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._drop()
            return Outcome(message.key, State.DEFERRED, None, f"connection lost: {exc}")
        try:
            code, reply = connection.getreply()
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._drop()
            return Outcome(
                message.key,
                State.SENDING,
                None,
                f"connection lost after the message was sent, outcome unknown: {exc}",
            )
        self._sent_on_connection += 1
        return self._outcome(message, code, reply)

    def _ready_connection(self) -> smtplib.SMTP:
        """The open connection, renewed after the per-connection cap or a drop."""
        if self._connection is not None and self._sent_on_connection >= self.max_per_connection:
            self.close()
        if self._connection is not None:
            return self._connection
        for attempt, pause in enumerate(RECONNECT_PAUSES):
            try:
                return self._connect()
            except ConnectError:
                if attempt == len(RECONNECT_PAUSES) - 1:
                    raise
                time.sleep(pause)
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._connection.quit()
            self._drop()

    def _mail_options(self, message: Outgoing) -> list[str]:
        options = (
            ["BODY=8BITMIME"] if self._connection and self._connection.has_extn("8bitmime") else []
        )
        if not message.to.isascii() or not message.envelope_from.isascii():
            options.append("SMTPUTF8")
        return options

    def _outcome(self, message: Outgoing, code: int, reply: bytes) -> Outcome:
        text = reply.decode("utf-8", "replace")
        if code == 250:
            return Outcome(message.key, State.ACCEPTED, code, text)
        if code == 421 or code < 0:
            self._drop()
        else:
            self._reset()
        state = State.REFUSED if 500 <= code < 600 else State.DEFERRED
        return Outcome(message.key, state, code if code > 0 else None, text)

    def _sender_refused(self, message: Outgoing, code: int, reply: bytes) -> Outcome:
        text = reply.decode("utf-8", "replace")
        if 500 <= code < 600:
            raise SenderRefusedError(
                f"{self.host}:{self.port} refused the sender {message.envelope_from} "
                f"({code} {text}); check from = in the manifest or NOTIFY_RETURN_PATH",
                host=self.host,
                port=self.port,
            )
        return self._outcome(message, code, reply)

    def _reset(self) -> None:
        try:
            if self._connection is not None:
                self._connection.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def _drop(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(OSError):
                self._connection.close()
        self._connection = None

    def _connect(self) -> smtplib.SMTP:
        """Open, secure and log in, translating every failure into one clear line."""
        where = f"{self.host}:{self.port}"
        try:
            connection = self._open_socket()
            if self.settings.smtp_user:
                connection.login(self.settings.smtp_user, self.settings.smtp_password or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise AuthError(
                f"{where} refused the login for {self.settings.smtp_user} "
                f"({exc.smtp_code} {_text(exc.smtp_error)}); "
                "check NOTIFY_SMTP_USER and NOTIFY_SMTP_PASSWORD in .env",
                host=self.host,
                port=self.port,
            ) from exc
        except ssl.SSLError as exc:
            raise ConnectError(
                f"TLS with {where} failed ({exc.reason or exc}); check NOTIFY_SMTP_SECURITY "
                "and that the relay's certificate is valid for NOTIFY_SMTP_HOST",
                host=self.host,
                port=self.port,
            ) from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise ConnectError(
                f"{where} does not offer {exc}; check NOTIFY_SMTP_SECURITY in .env",
                host=self.host,
                port=self.port,
            ) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise ConnectError(
                f"cannot talk to the relay at {where} ({exc or type(exc).__name__}); "
                "check NOTIFY_SMTP_HOST, NOTIFY_SMTP_PORT and NOTIFY_SMTP_SECURITY in .env",
                host=self.host,
                port=self.port,
            ) from exc
        self._connection = connection
        self._sent_on_connection = 0
        self.connections_opened += 1
        return connection

    def _tls_context(self) -> ssl.SSLContext:
        """Built once per transport, and only for TLS: building one costs ~20 ms."""
        if self._context is None:
            self._context = ssl.create_default_context()
        return self._context

    def _open_socket(self) -> smtplib.SMTP:
        hostname = socket.gethostname()
        security = self.settings.smtp_security
        if security == "tls":
            secure = smtplib.SMTP_SSL(
                self.host,
                self.port,
                local_hostname=hostname,
                timeout=TIMEOUT_SECONDS,
                context=self._tls_context(),
            )
            secure.ehlo_or_helo_if_needed()
            return secure
        connection = smtplib.SMTP(
            self.host, self.port, local_hostname=hostname, timeout=TIMEOUT_SECONDS
        )
        if security == "starttls":
            connection.ehlo()
            if not connection.has_extn("starttls"):
                connection.close()
                raise smtplib.SMTPNotSupportedError("STARTTLS")
            connection.starttls(context=self._tls_context())
            connection.ehlo()
        else:
            connection.ehlo_or_helo_if_needed()
        return connection


class RedirectTransport:
    """A test send: the customer's exact message, delivered to the operator's address."""

    def __init__(self, inner: Transport, address: str) -> None:
        self.inner = inner
        self.address = address

    def open(self) -> None:
        self.inner.open()

    def send(self, message: Outgoing) -> Outcome:
        marker = f"X-Notify-Test-Send: for {message.to}; no customer is marked as sent\r\n"
        redirected = replace(message, to=self.address, data=marker.encode() + message.data)
        return self.inner.send(redirected)

    def close(self) -> None:
        self.inner.close()


def _dot_stuffed(data: bytes) -> bytes:
    """DATA content as RFC 5321 wants it: leading dots doubled, ending CRLF . CRLF."""
    stuffed = _LEADING_DOT.sub(b"..", data)
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
