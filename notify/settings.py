"""One validated, immutable Settings object, built at the edge from .env and the environment."""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dotenv import dotenv_values

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
    """The workspace's .env with the real environment on top: the environment wins."""
    merged: dict[str, str] = {}
    if workspace.env_file.is_file():
        merged.update({k: v for k, v in dotenv_values(workspace.env_file).items() if v is not None})
    merged.update(environ)
    return merged


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
