"""Read one IMAP folder without changing it: EXAMINE, UID FETCH BODY.PEEK[], in chunks.

Certificates are always verified (``ssl.create_default_context()``); the password goes
only to the server, never into a message, repr or log. ``move`` (opt-in) uses UID MOVE, or
COPY + \\Deleted + UID EXPUNGE of exactly those UIDs where MOVE is missing.
"""

from __future__ import annotations

import contextlib
import imaplib
import re
import ssl
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from notify.errors import BounceError, SettingsError
from notify.mailboxes.mail import Mail, MailboxBase, modified_utf7
from notify.settings import Security, Settings, is_loopback

IMAP_TIMEOUT = 30.0  # seconds for connecting and for each reply
FETCH_CHUNK = 100  # messages per UID FETCH
FETCH_BYTES = 16 * 1024 * 1024  # and at most this much mail per UID FETCH
_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")


class ImapMailbox(MailboxBase):
    """One IMAP folder on a logged-in connection; ids are "UIDVALIDITY:UID"."""

    def __init__(
        self, connection: imaplib.IMAP4, settings: Settings, *, where: str, chunk: int
    ) -> None:
        self._connection = connection
        self._settings = settings
        self.where = where
        self.folder = settings.imap_folder
        self.chunk = chunk
        self._capabilities = _capabilities(connection)
        self._writable = False
        self.uidvalidity = self._select(writable=False)

    def messages(self) -> Iterator[Mail]:
        """Every undeleted message, fetched with BODY.PEEK[] in chunks: none is marked \\Seen."""
        uids = self._search()
        for batch in self._batches(uids):
            bodies = self._fetch(batch, "BODY.PEEK[]")
            for uid in batch:
                if uid in bodies:  # absent: expunged by another client meanwhile
                    yield Mail(f"{self.uidvalidity}:{uid}", bodies[uid])

    def move(self, ids: Sequence[str], folder: str) -> None:
        """Move exactly these messages to `folder` (created if missing); nothing else changes."""
        uids = self._uids(ids)
        if not uids:
            return
        if self._select(writable=True) != self.uidvalidity:
            raise BounceError(
                f"{self.where} changed its UIDVALIDITY while open; read the folder again"
            )
        target = _imap_quote(folder)
        self._create(folder, target)
        for start in range(0, len(uids), self.chunk):
            uid_set = ",".join(str(uid) for uid in uids[start : start + self.chunk])
            if "MOVE" in self._capabilities:
                self._command(f"move mail to {folder!r}", "MOVE", uid_set, target)
            else:
                self._copy_and_expunge(uid_set, folder, target)

    def close(self) -> None:
        """Log out; LOGOUT never expunges, so nothing flagged by others is lost."""
        _logout(self._connection)

    # -- steps ------------------------------------------------------------------------------

    def _select(self, *, writable: bool) -> str:
        """EXAMINE (read-only) or SELECT the folder; returns its UIDVALIDITY."""
        if writable and self._writable:
            return self.uidvalidity
        connection = self._connection
        typ, data = self._call(connection.select, _imap_quote(self.folder), readonly=not writable)
        if typ != "OK":
            raise BounceError(
                f"IMAP folder {self.folder!r} does not exist on {self._server()} "
                f"({_text(data)}); set NOTIFY_IMAP_FOLDER to one of: {self._folder_names()}"
            )
        self._writable = writable
        _, validity = connection.response("UIDVALIDITY")
        return _text(validity) or "0"

    def _search(self) -> list[int]:
        data = self._command("search the folder", "SEARCH", "UNDELETED")
        return sorted(
            int(uid) for uid in b" ".join(d for d in data if isinstance(d, bytes)).split()
        )

    def _batches(self, uids: list[int]) -> Iterator[list[int]]:
        """Groups of at most `chunk` messages and about FETCH_BYTES, sized by RFC822.SIZE."""
        for start in range(0, len(uids), self.chunk):
            chunk = uids[start : start + self.chunk]
            sizes = self._fetch_sizes(chunk)
            batch: list[int] = []
            total = 0
            for uid in chunk:
                if batch and total + sizes.get(uid, 0) > FETCH_BYTES:
                    yield batch
                    batch, total = [], 0
                batch.append(uid)
                total += sizes.get(uid, 0)
            if batch:
                yield batch

    def _fetch_sizes(self, uids: list[int]) -> dict[int, int]:
        data = self._command("fetch mail sizes", "FETCH", _uid_set(uids), "(RFC822.SIZE)")
        sizes = {}
        for item in data:
            line = item[0] if isinstance(item, tuple) else item
            uid, size = _UID.search(line or b""), _SIZE.search(line or b"")
            if uid and size:
                sizes[int(uid.group(1))] = int(size.group(1))
        return sizes

    def _fetch(self, uids: list[int], item: str) -> dict[int, bytes]:
        data = self._command("fetch mail", "FETCH", _uid_set(uids), f"(UID {item})")
        bodies: dict[int, bytes] = {}
        for index, part in enumerate(data):
            if not isinstance(part, tuple):
                continue
            # the UID may come before the literal, or after it in the closing line
            after = data[index + 1] if index + 1 < len(data) else b""
            uid = _UID.search(part[0]) or _UID.search(after if isinstance(after, bytes) else b"")
            if uid:
                bodies[int(uid.group(1))] = part[1]
        return bodies

    def _create(self, folder: str, target: str) -> None:
        typ, data = self._call(self._connection.list, '""', target)
        if typ == "OK" and any(data):
            return
        typ, data = self._call(self._connection.create, target)
        if typ != "OK":
            raise BounceError(
                f"cannot create IMAP folder {folder!r} on {self._server()} ({_text(data)}); "
                "create it in your mail client or choose another --move-to"
            )

    def _copy_and_expunge(self, uid_set: str, folder: str, target: str) -> None:
        """Without MOVE: COPY, flag \\Deleted, and expunge those UIDs only (UIDPLUS)."""
        self._command(f"copy mail to {folder!r}", "COPY", uid_set, target)
        self._command("flag moved mail", "STORE", uid_set, "+FLAGS.SILENT", r"(\Deleted)")
        if "UIDPLUS" in self._capabilities:
            self._command("expunge moved mail", "EXPUNGE", uid_set)
        # else they stay flagged \Deleted (hidden from messages()); a plain EXPUNGE would
        # also remove whatever another client flagged.

    def _uids(self, ids: Sequence[str]) -> list[int]:
        uids = []
        for mail_id in ids:
            validity, _, uid = mail_id.partition(":")
            if validity != self.uidvalidity or not uid.isdigit():
                raise BounceError(
                    f"mail id {mail_id!r} is not from {self.where} as it is now "
                    f"(UIDVALIDITY {self.uidvalidity}); read the folder again"
                )
            uids.append(int(uid))
        return sorted(set(uids))

    def _command(self, what: str, command: str, *args: str) -> list[bytes | tuple[bytes, bytes]]:
        """A UID command that must succeed; a refusal becomes one BounceError line."""
        typ, data = self._call(self._connection.uid, command, *args)
        if typ != "OK":
            raise BounceError(
                f"IMAP server {self._server()} refused to {what} in {self.folder!r} "
                f"({_text(data)}); check the folder in your mail client, then run again"
            )
        return list(data)

    def _call(
        self, method: Callable[..., Any], *args: str, **kwargs: bool
    ) -> tuple[str, list[Any]]:
        try:
            typ, data = method(*args, **kwargs)
        except (imaplib.IMAP4.abort, OSError) as exc:
            raise BounceError(
                f"lost the connection to IMAP server {self._server()} ({_reason(exc)}); run again"
            ) from exc
        except imaplib.IMAP4.error as exc:
            return "NO", [str(exc).encode()]
        return typ, list(data)

    def _folder_names(self) -> str:
        typ, data = self._call(self._connection.list)
        names = sorted({_folder_name(line) for line in data if isinstance(line, bytes)} - {""})
        return ", ".join(names) or "INBOX"

    def _server(self) -> str:
        return _server(self._settings)


def open_imap(settings: Settings, *, chunk: int | None = None) -> ImapMailbox:
    """Log in and EXAMINE NOTIFY_IMAP_FOLDER; certificates are always verified."""
    host, user, password = _imap_credentials(settings)
    connection = _connect(settings, host)
    try:
        _login(connection, settings, user, password)
        scheme = "imaps" if settings.imap_security is Security.TLS else "imap"
        where = f"{scheme}://{user}@{host}:{settings.imap_port}/{settings.imap_folder}"
        return ImapMailbox(connection, settings, where=where, chunk=chunk or FETCH_CHUNK)
    except BaseException:
        _logout(connection)
        raise


def _logout(connection: imaplib.IMAP4) -> None:
    with contextlib.suppress(imaplib.IMAP4.error, OSError):
        connection.logout()


def _imap_credentials(settings: Settings) -> tuple[str, str, str]:
    host = _required(settings.imap_host, "NOTIFY_IMAP_HOST")
    user = _required(settings.imap_user, "NOTIFY_IMAP_USER")
    password = _required(settings.imap_password, "NOTIFY_IMAP_PASSWORD")
    if settings.imap_security is Security.NONE and not is_loopback(host):
        raise SettingsError(
            f"refusing to send the IMAP password unencrypted to {host}; "
            "set NOTIFY_IMAP_SECURITY=tls or starttls"
        )
    return host, user, password


def _required(value: str | None, name: str) -> str:
    if not value:
        raise SettingsError(f"{name} is not set; put it in .env to read bounces over IMAP")
    return value


def _connect(settings: Settings, host: str) -> imaplib.IMAP4:
    """Open the connection: TLS from the start, STARTTLS, or (loopback only) none."""
    port = settings.imap_port
    context = ssl.create_default_context()
    try:
        if settings.imap_security is Security.TLS:
            return imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=IMAP_TIMEOUT)
        connection = imaplib.IMAP4(host, port, timeout=IMAP_TIMEOUT)
        if settings.imap_security is Security.STARTTLS:
            _starttls(connection, context, f"{host}:{port}")
        return connection
    except ssl.SSLError as exc:
        raise BounceError(
            f"TLS with IMAP server {host}:{port} failed ({_reason(exc)}); check "
            "NOTIFY_IMAP_PORT and NOTIFY_IMAP_SECURITY (tls: 993, starttls: 143) and the "
            "server's certificate"
        ) from exc
    except (OSError, imaplib.IMAP4.error) as exc:
        raise BounceError(
            f"cannot reach IMAP server {host}:{port} ({_reason(exc)}); "
            "check NOTIFY_IMAP_HOST, NOTIFY_IMAP_PORT and NOTIFY_IMAP_SECURITY"
        ) from exc


def _starttls(connection: imaplib.IMAP4, context: ssl.SSLContext, where: str) -> None:
    try:
        connection.starttls(context)
    except imaplib.IMAP4.abort:
        raise
    except imaplib.IMAP4.error as exc:
        connection.shutdown()
        raise BounceError(
            f"IMAP server {where} does not offer STARTTLS ({_reason(exc)}); "
            "set NOTIFY_IMAP_SECURITY=tls and NOTIFY_IMAP_PORT=993"
        ) from exc


def _login(connection: imaplib.IMAP4, settings: Settings, user: str, password: str) -> None:
    """AUTHENTICATE PLAIN when offered (UTF-8 safe), else LOGIN; a refusal names the user."""
    where = f"{settings.imap_host}:{settings.imap_port}"
    try:
        if "AUTH=PLAIN" in _capabilities(connection):
            credentials = f"\0{user}\0{password}".encode()
            connection.authenticate("PLAIN", lambda _challenge: credentials)
        else:
            connection.login(user, password)
    except (imaplib.IMAP4.abort, OSError) as exc:
        raise BounceError(
            f"IMAP server {where} closed the connection during login ({_reason(exc)}); run again"
        ) from exc
    except (imaplib.IMAP4.error, UnicodeError) as exc:
        raise BounceError(
            f"IMAP server {where} refused the login for user {user!r} ({_reason(exc)}); "
            "check NOTIFY_IMAP_USER / NOTIFY_IMAP_PASSWORD"
        ) from exc


def _capabilities(connection: imaplib.IMAP4) -> set[str]:
    """Ask again: servers announce more (MOVE, UIDPLUS) once logged in."""
    try:
        typ, data = connection.capability()
    except (imaplib.IMAP4.error, OSError):
        return set(connection.capabilities)
    return set(_text(data).upper().split()) if typ == "OK" else set(connection.capabilities)


def _imap_quote(name: str) -> str:
    """A folder name as an IMAP quoted string, non-ASCII in modified UTF-7 (RFC 3501 5.1.3)."""
    return '"' + modified_utf7(name).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _folder_name(line: bytes) -> str:
    """The name from a LIST reply line: (\\HasNoChildren) "." "Name"."""
    match = re.match(rb'\([^)]*\) (?:"(?:[^"\\]|\\.)*"|NIL) (.*)$', line)
    return match.group(1).decode("utf-8", "replace").strip('"') if match else ""


def _uid_set(uids: Iterable[int]) -> str:
    return ",".join(str(uid) for uid in uids)


def _server(settings: Settings) -> str:
    return f"{settings.imap_host}:{settings.imap_port} as {settings.imap_user!r}"


def _text(data: object) -> str:
    """Server reply data as one line of text."""
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace").strip()
    if isinstance(data, list | tuple):
        return " ".join(_text(item) for item in data if item is not None)
    return str(data).strip()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return f"TLS error {exc.reason}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
