"""Amazon SES bounce notifications, which arrive as JSON in an email (through SNS).

SES documents the shape: ``{"notificationType": "Bounce", "bounce": {"bounceType":
"Permanent", "bouncedRecipients": [{"emailAddress", "action", "status",
"diagnosticCode"}]}}``. Deliveries and complaints are not bounces.
"""

from __future__ import annotations

import json
import re
from typing import Any

from notify.bounces.dsn import Report, one_line

_START = re.compile(r'\{\s*"notificationType"\s*:')
_MAX_JSON = 1_000_000  # a notification is a few KB; a hostile one is not decoded past this


def notification(text: str) -> dict[str, Any] | None:
    """The SES notification a text holds, or None."""
    start = _START.search(text, 0, _MAX_JSON)
    if start is None:
        return None
    try:
        found, _ = json.JSONDecoder(strict=False).raw_decode(text[start.start() : _MAX_JSON])
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def reports(found: dict[str, Any]) -> list[Report] | None:
    """One report per bounced recipient; None when the notification is not a bounce."""
    bounce = found.get("bounce")
    if found.get("notificationType") != "Bounce" or not isinstance(bounce, dict):
        return None
    transient = str(bounce.get("bounceType", "")).lower() == "transient"
    listed = bounce.get("bouncedRecipients")
    return [_report(r, transient) for r in listed if isinstance(r, dict)] if listed else []


def _report(recipient: dict[str, Any], transient: bool) -> Report:
    """One bounced recipient; a transient bounce without a status is a 4xx one."""
    status = str(recipient.get("status") or "") or ("4.0.0" if transient else "")
    diagnostic = str(recipient.get("diagnosticCode") or "")
    kind, _, rest = diagnostic.partition(";")
    return Report(
        address=str(recipient.get("emailAddress") or "") or None,
        action=str(recipient.get("action") or "failed").lower(),
        status=status or None,
        diagnostic=one_line(rest if rest and " " not in kind.strip() else diagnostic),
    )
