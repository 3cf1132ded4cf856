"""When a re-send is due, and the cron line and systemd units that run `notify resend`.

Pure: times in, times out. Step i of the schedule is the wait between the last failure
(a soft bounce, a temporary refusal) and re-send i+1; once every step is used, the
recipient is given up on and listed for a personal follow-up.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from notify.models import State

if TYPE_CHECKING:
    from notify.ledger.store import LedgerRecipient

TIMER_MINUTES = 10  # how often cron or the timer runs `notify resend`: well under any step


def due_at(last_failure: datetime, resends: int, schedule: Sequence[float]) -> datetime | None:
    """When the next re-send is due, or None when the schedule has run out."""
    if resends >= len(schedule):
        return None
    return as_utc(last_failure) + timedelta(seconds=schedule[resends])


def as_utc(moment: datetime) -> datetime:
    """SQLite hands timestamps back without their zone; the ledger writes them in UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def describe_schedule(schedule: Sequence[float]) -> str:
    """'1h, 4h, 12h (3 re-sends over 17h)' for status lines and the generated units."""
    steps = ", ".join(_duration(step) for step in schedule)
    return f"{steps} ({len(schedule)} re-sends over {_duration(sum(schedule))})"


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def resend_command(workspace: Path, incident_id: str) -> str:
    """The exact command cron or systemd runs, with absolute paths (cron has no PATH)."""
    notify = Path(sys.executable).with_name("notify")
    program = str(notify) if notify.exists() else f"{sys.executable} -m notify"
    return (
        f"{program} resend --incident {shlex.quote(incident_id)} "
        f"--workspace {shlex.quote(str(workspace.resolve()))}"
    )


def crontab_line(workspace: Path, incident_id: str) -> str:
    """A crontab entry that runs the re-sends every few minutes, logging to the workspace."""
    log = shlex.quote(str(workspace.resolve() / ".notify" / f"resend-{incident_id}.log"))
    return f"*/{TIMER_MINUTES} * * * * {resend_command(workspace, incident_id)} >> {log} 2>&1"


def systemd_units(workspace: Path, incident_id: str) -> dict[str, str]:
    """A oneshot service and a timer, keyed by file name, for /etc/systemd/system."""
    name = f"notify-resend-{incident_id}"
    service = (
        "[Unit]\n"
        f"Description=notify: re-send what is due for incident {incident_id}\n\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"WorkingDirectory={workspace.resolve()}\n"
        f"ExecStart={resend_command(workspace, incident_id)}\n"
        "# Exit 1 says someone is not delivered yet: expected while re-sends are due.\n"
        "SuccessExitStatus=1\n"
    )
    timer = (
        "[Unit]\n"
        f"Description=notify: re-send what is due for incident {incident_id}, every "
        f"{TIMER_MINUTES} minutes\n\n"
        "[Timer]\n"
        "OnBootSec=5min\n"
        f"OnUnitActiveSec={TIMER_MINUTES}min\n"
        "Persistent=true\n\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )
    return {f"{name}.service": service, f"{name}.timer": timer}


def due(
    candidates: Sequence[LedgerRecipient],
    schedule: Sequence[float],
    now: datetime,
    *,
    blocked: bool = False,
) -> tuple[list[LedgerRecipient], list[LedgerRecipient]]:
    """(due now, given up): soft bounces and deferrals by the schedule, alternates and
    messages left in doubt at once, blocked ones only when the operator says the cause
    is fixed."""
    ready: list[LedgerRecipient] = []
    exhausted: list[LedgerRecipient] = []
    at_once = (State.ALTERNATE, State.SENDING)
    for recipient in candidates:
        if recipient.state in at_once or (blocked and recipient.state is State.BLOCKED):
            ready.append(recipient)
        elif recipient.state in (State.DEFERRED, State.SOFT_BOUNCED):
            when = due_at(recipient.updated_at, recipient.resends, schedule)
            if when is None:
                exhausted.append(recipient)
            elif when <= now:
                ready.append(recipient)
    return ready, exhausted


def next_due(candidates: Sequence[LedgerRecipient], schedule: Sequence[float]) -> datetime | None:
    """The earliest moment a scheduled re-send falls due, for `notify status`."""
    times = [
        due_at(r.updated_at, r.resends, schedule)
        for r in candidates
        if r.state in (State.DEFERRED, State.SOFT_BOUNCED)
    ]
    return min((t for t in times if t is not None), default=None)


def utc_now() -> datetime:
    return datetime.now(UTC)
