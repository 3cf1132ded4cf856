"""The relay over SMTP: one reused connection per transport.

SMTP errors are translated here, once, into Outcomes or DeliveryErrors. Each step of the
conversation has its own deadline (steps.py), besides the timeout of each read: a relay
that sends a byte now and then would otherwise hold a connection forever.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import socket
import ssl
import time
from dataclasses import dataclass

from notify.compose import Outgoing
from notify.errors import AuthError, ConnectError, SenderRefusedError, SettingsError
from notify.models import Outcome, State
from notify.settings import Security, Settings, is_loopback
from notify.transports.steps import TIMEOUT_SECONDS, SteppedSMTP, SteppedSMTPSSL

GREETING_SECONDS = 60.0  # connecting, TLS for implicit TLS, and the relay's 220 greeting
HELLO_SECONDS = 60.0  # EHLO, STARTTLS, EHLO again and AUTH, together; and QUIT
MESSAGE_SECONDS = 120.0  # one message: MAIL, RCPT, DATA, the content, and the reply
RECONNECT_PAUSES = (1.0, 2.0, 0.0)  # seconds before the 2nd and 3rd try; the 3rd failure stops
_LEADING_DOT = re.compile(rb"(?m)^\.")
_DATA = b"DATA\r\n"

_Reply = tuple[int, bytes]


class _Envelope:
    """One message's MAIL and RCPT commands, and which command failed, if any."""

    __slots__ = ("mail", "rcpt", "pipelined", "failed")

    def __init__(self, mail: bytes, rcpt: bytes, pipelined: bool) -> None:
        self.mail, self.rcpt, self.pipelined = mail, rcpt, pipelined
        self.failed = ""  # "mail", "rcpt" or "data"


@dataclass(frozen=True)
class RelayOffer:
    """What the relay offers once connected, secured and logged in."""

    where: str
    security: str
    logged_in: bool
    pipelining: bool
    smtputf8: bool
    size_limit: int | None  # bytes; None when the relay names no limit


def probe(settings: Settings) -> RelayOffer:
    """Open one connection (EHLO, STARTTLS or TLS, AUTH), send nothing, close it, and say
    what the relay offers; a relay that cannot be used raises its DeliveryError line."""
    transport = SmtpTransport(settings)
    connection = transport._connect()
    try:
        size = connection.esmtp_features.get("size", "").strip()
        return RelayOffer(
            where=f"{transport.host}:{transport.port}",
            security=settings.smtp_security.value,
            logged_in=bool(settings.smtp_user),
            pipelining=connection.has_extn("pipelining"),
            smtputf8=connection.has_extn("smtputf8"),
            size_limit=int(size) if size.isdigit() and int(size) > 0 else None,
        )
    finally:
        transport.close()


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
        self._connection: SteppedSMTP | None = None
        self._pipelining = False
        if (
            settings.smtp_password
            and settings.smtp_security is Security.NONE
            and not is_loopback(self.host)
        ):
            raise SettingsError(
                f"refusing to send the SMTP password unencrypted to {self.host}; "
                "set NOTIFY_SMTP_SECURITY=starttls or tls"
            )

    @property
    def pipelining(self) -> bool:
        """Whether the open connection sends MAIL, RCPT and DATA in one write."""
        return self._pipelining

    @property
    def size_limit(self) -> int | None:
        """The largest message the open connection takes (RFC 1870 SIZE); None: unstated."""
        stated = self._connection.esmtp_features.get("size", "") if self._connection else ""
        return int(stated) if stated.isdigit() and int(stated) > 0 else None

    def open(self) -> None:
        if self._connection is None:
            self._connect()

    def send(self, message: Outgoing) -> Outcome:
        """MAIL, RCPT, DATA; a connection lost after the data went out leaves it in doubt.

        When the relay offers PIPELINING (RFC 2920) the three commands go in one write and
        their replies are read together: two round trips per message instead of four."""
        connection = self._ready_connection()
        connection.start_step("message", MESSAGE_SECONDS)
        try:
            envelope = self._envelope(connection, message)
        except smtplib.SMTPNotSupportedError:
            return Outcome(
                message.key,
                State.REFUSED,
                None,
                "5.6.7 the relay does not offer SMTPUTF8, which this address (non-ASCII "
                "before the @) needs; send it through a relay that does",
            )
        try:
            code, reply = self._open_transaction(connection, envelope)
            if code != 354:
                return self._refused_envelope(message, envelope, code, reply)
            _write(connection, _dot_stuffed(message.data))
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._drop()
            why = _why(connection, exc)
            return Outcome(message.key, State.DEFERRED, None, f"connection lost: {why}")
        try:
            code, reply = connection.getreply()
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._drop()
            return Outcome(
                message.key,
                State.SENDING,
                None,
                "connection lost after the message was sent, outcome unknown: "
                + _why(connection, exc),
            )
        self._sent_on_connection += 1
        return self._outcome(message, code, reply)

    def _envelope(self, connection: SteppedSMTP, message: Outgoing) -> _Envelope:
        """MAIL FROM, RCPT TO and DATA as wire bytes, with the ESMTP options this relay takes."""
        options = ""
        if connection.does_esmtp and "8bitmime" in connection.esmtp_features:
            options = " BODY=8BITMIME"
        encoding = "ascii"
        if not message.to.isascii() or not message.envelope_from.isascii():
            if "smtputf8" not in connection.esmtp_features:  # what smtplib's mail() does
                raise smtplib.SMTPNotSupportedError("SMTPUTF8 not supported by server")
            options += " SMTPUTF8"
            encoding = "utf-8"
        for address in (message.envelope_from, message.to):
            if "\r" in address or "\n" in address:  # never a second command from a field
                raise ValueError("an address holds a line break; it cannot go in a command")
        mail = f"MAIL FROM:<{message.envelope_from}>{options}\r\n".encode(encoding)
        rcpt = f"RCPT TO:<{message.to}>\r\n".encode(encoding)
        return _Envelope(mail, rcpt, self._pipelining)

    def _open_transaction(self, connection: SteppedSMTP, envelope: _Envelope) -> _Reply:
        """Send the envelope and DATA; (354, ...) when the relay waits for the content.

        Otherwise the first reply that was not a success, tagged by which command got it."""
        if envelope.pipelined:
            _write(connection, envelope.mail + envelope.rcpt + _DATA)
            return self._pipelined_replies(connection, envelope)
        for command, wanted in ((envelope.mail, (250,)), (envelope.rcpt, (250, 251))):
            _write(connection, command)
            code, reply = connection.getreply()
            if code not in wanted:
                envelope.failed = "mail" if command is envelope.mail else "rcpt"
                return code, reply
        _write(connection, _DATA)
        code, reply = connection.getreply()
        envelope.failed = "data" if code != 354 else ""
        return code, reply

    def _pipelined_replies(self, connection: SteppedSMTP, envelope: _Envelope) -> _Reply:
        """The replies to a pipelined MAIL, RCPT, DATA, judged as if sent one by one.

        The first failure decides, exactly as without pipelining; the replies after it
        only echo it (503, no valid recipients), and a relay that closes after a 421 sends
        none. A relay that still says 354 to DATA gets an empty message, ended at once
        (RFC 2920, 3.1); it has no recipient to deliver it to."""
        decisive: _Reply | None = None
        for stage, wanted in (("mail", (250,)), ("rcpt", (250, 251)), ("data", (354,))):
            try:
                code, reply = connection.getreply()
            except (smtplib.SMTPServerDisconnected, OSError):
                if decisive is None:
                    raise
                self._drop()
                return decisive
            if decisive is None and code not in wanted:
                envelope.failed, decisive = stage, (code, reply)
            elif decisive is not None and code == 354:
                try:
                    _write(connection, b".\r\n")
                    connection.getreply()
                except (smtplib.SMTPServerDisconnected, OSError):
                    self._drop()
        return decisive or (354, b"")

    def _refused_envelope(
        self, message: Outgoing, envelope: _Envelope, code: int, reply: bytes
    ) -> Outcome:
        if envelope.failed == "mail":
            return self._sender_refused(message, code, reply)
        return self._outcome(message, code, reply)

    def _ready_connection(self) -> SteppedSMTP:
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
            self._connection.start_step("goodbye", HELLO_SECONDS)
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._connection.quit()
            self._drop()

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

    def _connect(self) -> SteppedSMTP:
        """Open, secure and log in, translating every failure into one clear line."""
        where = f"{self.host}:{self.port}"
        connection = self._new_connection()
        try:
            self._open_socket(connection)
            if self.settings.smtp_user and not connection.has_extn("auth"):
                connection.close()
                raise AuthError(
                    f"{where} does not offer AUTH, and NOTIFY_SMTP_USER is set; check "
                    "NOTIFY_SMTP_SECURITY (many relays offer AUTH only after STARTTLS), or unset "
                    "NOTIFY_SMTP_USER",
                    host=self.host,
                    port=self.port,
                )
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
            if connection.overdue():
                raise ConnectError(
                    f"the relay at {where} sent {connection.overdue_text()} "
                    "(it is stuck or overloaded); try again later, or check "
                    "NOTIFY_SMTP_HOST and NOTIFY_SMTP_PORT in .env",
                    host=self.host,
                    port=self.port,
                ) from exc
            raise ConnectError(
                f"cannot talk to the relay at {where} ({exc or type(exc).__name__}); "
                "check NOTIFY_SMTP_HOST, NOTIFY_SMTP_PORT and NOTIFY_SMTP_SECURITY in .env",
                host=self.host,
                port=self.port,
            ) from exc
        self._connection = connection
        self._sent_on_connection = 0
        self._pipelining = connection.has_extn("pipelining")
        self.connections_opened += 1
        return connection

    def _tls_context(self) -> ssl.SSLContext:
        """Built once per transport, and only for TLS: building one costs ~20 ms."""
        if self._context is None:
            self._context = ssl.create_default_context()
        return self._context

    def _new_connection(self) -> SteppedSMTP:
        """Not yet connected: the greeting's deadline starts as it connects."""
        hostname = socket.gethostname()
        if self.settings.smtp_security is Security.TLS:
            return SteppedSMTPSSL(
                local_hostname=hostname, timeout=TIMEOUT_SECONDS, context=self._tls_context()
            )
        return SteppedSMTP(local_hostname=hostname, timeout=TIMEOUT_SECONDS)

    def _open_socket(self, connection: SteppedSMTP) -> None:
        connection.start_step("greeting", GREETING_SECONDS)
        connection.connect(self.host, self.port)
        connection.start_step("hello (EHLO, STARTTLS, AUTH)", HELLO_SECONDS)
        if self.settings.smtp_security is Security.STARTTLS:
            connection.ehlo()
            if not connection.has_extn("starttls"):
                connection.close()
                raise smtplib.SMTPNotSupportedError("STARTTLS")
            connection.starttls(context=self._tls_context())
            connection.ehlo()
        else:
            connection.ehlo_or_helo_if_needed()


def _write(connection: SteppedSMTP, data: bytes) -> None:
    connection.fitted_socket().sendall(data)


def _why(connection: SteppedSMTP, exc: BaseException) -> str:
    """Why a connection was lost: a step past its deadline, or what the socket said."""
    return connection.overdue_text() if connection.overdue() else str(exc)


def _dot_stuffed(data: bytes) -> bytes:
    """DATA content as RFC 5321 wants it: leading dots doubled, ending CRLF . CRLF."""
    stuffed = _LEADING_DOT.sub(b"..", data)
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
