"""One validated, immutable Settings object, built at the edge from .env and the environment."""

from __future__ import annotations

import difflib
import enum
import io
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dotenv import dotenv_values
from dotenv.parser import parse_stream

from notify.errors import SettingsError

if TYPE_CHECKING:
    from notify.workspace import Workspace


class Security(enum.StrEnum):
    """How a connection to the relay or the mailbox is protected."""

    STARTTLS = "starttls"  # plain connect, then STARTTLS (SMTP port 587, IMAP 143)
    TLS = "tls"  # TLS from the first byte (SMTP port 465, IMAP 993)
    NONE = "none"  # no encryption: loopback only when a password is sent


_DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}
_IMAP_PORTS = {"tls": 993, "starttls": 143, "none": 143}
DEFAULT_RESEND_SCHEDULE = "1h,4h,12h,24h,48h,48h"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PREFIX = "NOTIFY_"
_ENV_LINE = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*=\s*(['\"]?)")

# Every NOTIFY_* name notify reads, and what it sets. Any other NOTIFY_* name in .env or
# the environment is a typo (NOTIFY_SMTP_HOTS) that would silently drop a setting.
KNOWN_SETTINGS: dict[str, str] = {
    "NOTIFY_WORKSPACE": "the workspace folder, when --workspace is not given",
    "NOTIFY_SMTP_HOST": "the relay",
    "NOTIFY_SMTP_PORT": "the relay's port (default by security: 587, 465 or 25)",
    "NOTIFY_SMTP_SECURITY": "starttls, tls or none",
    "NOTIFY_SMTP_USER": "the relay login",
    "NOTIFY_SMTP_PASSWORD": "the relay password",
    "NOTIFY_SMTP_AUTH": "xoauth2 to log in with a token instead of the password",
    "NOTIFY_SMTP_TOKEN_COMMAND": "a command that prints an access token (xoauth2)",
    "NOTIFY_FROM": "the sender when the manifest has no from",
    "NOTIFY_LEDGER": "a path or SQLAlchemy URL for the delivery ledger",
    "NOTIFY_RATE": "messages per second, all connections together",
    "NOTIFY_CONNECTIONS": "parallel SMTP connections",
    "NOTIFY_RETRIES": "tries again in the same run after a temporary failure",
    "NOTIFY_RETRY_DELAY": "seconds before the first in-run retry",
    "NOTIFY_RETURN_PATH": "the bounce address",
    "NOTIFY_RESEND_SCHEDULE": "back-off steps for re-sends",
    **{
        f"NOTIFY_{box}IMAP_{part}": f"the {what} mailbox's {part.lower()}"
        for box, what in (("", "bounce"), ("REPLY_", "Reply-To"))
        for part in ("HOST", "PORT", "SECURITY", "USER", "PASSWORD", "FOLDER")
    },
    "NOTIFY_DKIM_SELECTOR": "the DKIM selector to sign with",
    "NOTIFY_DKIM_KEY": "the DKIM private key",
    "NOTIFY_DKIM_DOMAIN": "the DKIM signing domain",
}


@dataclass(frozen=True)
class Settings:
    """Everything the environment decides; the password is kept out of repr()."""

    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_security: Security = Security.STARTTLS
    smtp_user: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    default_from: str | None = None
    ledger: str | None = None  # a SQLAlchemy URL or a file path; None: .notify/ledger.sqlite3
    rate: float | None = None  # messages per second, all connections together
    connections: int = 4
    retries: int = 3  # tries again in the same run after a temporary failure
    retry_delay: float = 1.0  # seconds before the first in-run retry; doubles each round
    return_path: str | None = None
    resend_schedule: tuple[float, ...] = ()
    imap_host: str | None = None
    imap_port: int = 993
    imap_security: Security = Security.TLS
    imap_user: str | None = None
    imap_password: str | None = field(default=None, repr=False)
    imap_folder: str = "INBOX"
    dkim_selector: str | None = None
    dkim_key: str | None = None  # the PEM file's path; signing.py reads the key itself
    dkim_domain: str | None = None  # None: the From domain
    # The Reply-To mailbox when it is not the bounce one; None: the NOTIFY_IMAP_* value.
    reply_imap_host: str | None = None
    reply_imap_port: int | None = None
    reply_imap_security: Security | None = None
    reply_imap_user: str | None = None
    reply_imap_password: str | None = field(default=None, repr=False)
    reply_imap_folder: str | None = None

    def __post_init__(self) -> None:
        # The modes are compared by identity; a caller may pass the plain words.
        object.__setattr__(self, "smtp_security", Security(self.smtp_security))
        object.__setattr__(self, "imap_security", Security(self.imap_security))
        if self.reply_imap_security is not None:
            object.__setattr__(self, "reply_imap_security", Security(self.reply_imap_security))

    def smtp_where(self) -> str:
        return f"{self.smtp_host}:{self.smtp_port}"


def read_environment(workspace: Workspace, environ: Mapping[str, str]) -> dict[str, str]:
    """The workspace's .env with the real environment on top: the environment wins.

    A .env line that does not parse, or a NOTIFY_* name that is no setting, stops here:
    skipped, it would drop a setting without a word."""
    merged: dict[str, str] = {}
    if workspace.env_file.is_file():
        merged.update(_read_env_file(workspace))
    for name in environ:
        if name.startswith(_PREFIX) and name not in KNOWN_SETTINGS:
            raise SettingsError(
                f"{name} in the environment is not a setting{_closest_setting(name)}; "
                "unset it or fix the name"
            )
    merged.update(environ)
    return merged


def _read_env_file(workspace: Workspace) -> dict[str, str]:
    """The .env values, read strictly: every line a NAME=value, a comment or blank."""
    label = workspace.relative(workspace.env_file)
    try:
        text = workspace.env_file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise SettingsError(f"{label} line {line}: not UTF-8 text; save it as UTF-8") from exc
    for binding in parse_stream(io.StringIO(text)):
        # A binding's text starts with the blank lines before it.
        original = binding.original.string.lstrip(" \t\r\n")
        leading = binding.original.string[: len(binding.original.string) - len(original)]
        line = binding.original.line + leading.count("\n")
        where = f"{label} line {line}"
        if binding.error:
            raise SettingsError(f"{where}: {_unparsable(original)}; fix the line")
        name = binding.key or ""
        if name.upper().startswith(_PREFIX) and name not in KNOWN_SETTINGS:
            raise SettingsError(
                f"{where}: {name} is not a setting{_closest_setting(name)}; fix the line"
            )
        if name in KNOWN_SETTINGS and binding.value is None:
            raise SettingsError(f"{where}: {name} has no '='; write {name}=value")
    values = dotenv_values(stream=io.StringIO(text))
    return {name: value for name, value in values.items() if value is not None}


def _unparsable(original: str) -> str:
    """What is wrong with a .env line, without echoing its value (it may be a password)."""
    first_line = original.splitlines()[0] if original else ""
    match = _ENV_LINE.match(first_line)
    if match is None:
        return "not a NAME=value line (nor a # comment)"
    name, quote = match.groups()
    if quote and quote not in first_line[match.end() :]:
        return f"the value of {name} opens a quote ({quote}) that is never closed"
    if quote:
        return f"the value of {name} has text after its closing quote"
    return f"the value of {name} does not parse"


def _closest_setting(name: str) -> str:
    """' (did you mean NOTIFY_SMTP_HOST?)', or where the settings are listed."""
    # Compared without the prefix, or every NOTIFY_ name looks close to every other.
    suffixes = {known.removeprefix(_PREFIX): known for known in KNOWN_SETTINGS}
    close = difflib.get_close_matches(name.upper().removeprefix(_PREFIX), suffixes, n=1)
    if close:
        return f" (did you mean {suffixes[close[0]]}?)"
    return " (the settings are listed in README.md, Settings)"


def load_settings(workspace: Workspace, environ: Mapping[str, str]) -> Settings:
    """Validate every NOTIFY_* setting now, so a typo stops the run before anything is sent."""
    env = read_environment(workspace, environ)

    def text(name: str) -> str | None:
        value = env.get(name, "").strip()
        return value or None

    security = (text("NOTIFY_SMTP_SECURITY") or "starttls").lower()
    if security not in Security.__members__.values():
        raise SettingsError(
            f"NOTIFY_SMTP_SECURITY={security!r} is not one of starttls, tls, none; fix it in .env"
        )
    imap_security = (text("NOTIFY_IMAP_SECURITY") or "tls").lower()
    if imap_security not in Security.__members__.values():
        raise SettingsError(
            f"NOTIFY_IMAP_SECURITY={imap_security!r} is not one of tls, starttls, none; "
            "fix it in .env"
        )
    reply_security = (text("NOTIFY_REPLY_IMAP_SECURITY") or "").lower() or None
    if reply_security is not None and reply_security not in Security.__members__.values():
        raise SettingsError(
            f"NOTIFY_REPLY_IMAP_SECURITY={reply_security!r} is not one of tls, starttls, none; "
            "fix it in .env"
        )
    return Settings(
        smtp_host=text("NOTIFY_SMTP_HOST"),
        smtp_port=_integer(env, "NOTIFY_SMTP_PORT", _DEFAULT_PORTS[security], 1, 65535),
        smtp_security=Security(security),
        smtp_user=text("NOTIFY_SMTP_USER"),
        smtp_password=env.get("NOTIFY_SMTP_PASSWORD") or None,
        default_from=text("NOTIFY_FROM"),
        ledger=text("NOTIFY_LEDGER"),
        rate=_positive(env, "NOTIFY_RATE", "messages per second"),
        connections=_integer(env, "NOTIFY_CONNECTIONS", 4, 1, 64),
        retries=_integer(env, "NOTIFY_RETRIES", 3, 0, 10),
        retry_delay=_positive(env, "NOTIFY_RETRY_DELAY", "seconds") or 1.0,
        return_path=text("NOTIFY_RETURN_PATH"),
        resend_schedule=parse_schedule(
            text("NOTIFY_RESEND_SCHEDULE") or DEFAULT_RESEND_SCHEDULE, "NOTIFY_RESEND_SCHEDULE"
        ),
        imap_host=text("NOTIFY_IMAP_HOST"),
        imap_port=_integer(env, "NOTIFY_IMAP_PORT", _IMAP_PORTS[imap_security], 1, 65535),
        imap_security=Security(imap_security),
        imap_user=text("NOTIFY_IMAP_USER"),
        imap_password=env.get("NOTIFY_IMAP_PASSWORD") or None,
        imap_folder=text("NOTIFY_IMAP_FOLDER") or "INBOX",
        dkim_selector=text("NOTIFY_DKIM_SELECTOR"),
        dkim_key=text("NOTIFY_DKIM_KEY"),
        dkim_domain=text("NOTIFY_DKIM_DOMAIN"),
        reply_imap_host=text("NOTIFY_REPLY_IMAP_HOST"),
        reply_imap_port=_integer(env, "NOTIFY_REPLY_IMAP_PORT", 0, 1, 65535) or None,
        reply_imap_security=Security(reply_security) if reply_security else None,
        reply_imap_user=text("NOTIFY_REPLY_IMAP_USER"),
        reply_imap_password=env.get("NOTIFY_REPLY_IMAP_PASSWORD") or None,
        reply_imap_folder=text("NOTIFY_REPLY_IMAP_FOLDER"),
    )


def parse_schedule(value: str, name: str) -> tuple[float, ...]:
    """'1h,4h,12h' -> seconds; each step is the wait before the next re-send."""
    steps = []
    for part in value.split(","):
        match = _DURATION.match(part)
        if not match:
            raise SettingsError(
                f"{name}: {part.strip()!r} is not a duration like 30m, 4h or 2d; fix it in .env"
            )
        steps.append(float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
    return tuple(steps)


def _integer(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:  # int('²') fails
        raise SettingsError(f"{name}={raw!r} must be a whole number from {low} to {high}; fix .env")
    return int(raw)


def _positive(env: Mapping[str, str], name: str, unit: str) -> float | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise SettingsError(f"{name}={raw!r} must be a positive number of {unit}; fix .env")
    return value


def is_loopback(host: str) -> bool:
    """True for this machine's own addresses: the one place a password may go unencrypted."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
