"""Each connection's outcome made durable before its next message goes: a group commit.

A connection that got a reply asks the journal to record it and to hand over its next
message, and waits until both are committed. Whichever waiting connection finds no
commit under way writes everything queued so far in one transaction (the leader); the
others wait for it (followers). So the relay never has two messages of one connection
whose outcome is unrecorded, and the ledger does one transaction per round of replies,
not one per message.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from notify.ledger.store import Ledger
from notify.models import Outcome, State


@dataclass
class _Entry:
    """One connection's request: an outcome to record, a message to hand over, or both."""

    outcome: Outcome | None
    hand_over: str | None
    done: bool = False
    taken: bool = False  # the hand-over was allowed
    error: BaseException | None = None


@dataclass
class Journal:
    """Records outcomes and hands messages over for one incident and one claim holder."""

    ledger: Ledger
    incident_id: str
    holder: str | None = None
    on_accepted: Callable[[int], None] | None = None  # e.g. the sender's sent counter
    accepted: int = 0  # acceptances recorded so far, for a line about a stopped send
    _queue: list[_Entry] = field(default_factory=list)
    _writing: bool = False
    _turn: threading.Condition = field(default_factory=threading.Condition)

    def commit(self, outcome: Outcome | None, hand_over: str | None) -> bool:
        """Record `outcome` and hand `hand_over` over, durably; False when that message
        may not go (suppressed, or no longer ours)."""
        if outcome is None and hand_over is None:
            return False
        entry = _Entry(outcome, hand_over)
        with self._turn:
            self._queue.append(entry)
            while not entry.done:
                if self._writing:
                    self._turn.wait()
                    continue
                self._lead()
        if entry.error is not None:
            raise entry.error
        return entry.taken

    def _lead(self) -> None:
        """Write everything queued, with the lock released while the database works."""
        group, self._queue = self._queue, []
        self._writing = True
        self._turn.release()
        try:
            self._write(group)
        except BaseException as exc:  # noqa: BLE001 - every waiter of the group raises it
            for entry in group:
                entry.error = exc
        finally:
            self._turn.acquire()
            self._writing = False
            for entry in group:
                entry.done = True
            self._turn.notify_all()

    def _write(self, group: list[_Entry]) -> None:
        outcomes = [entry.outcome for entry in group if entry.outcome is not None]
        wanted = [entry.hand_over for entry in group if entry.hand_over is not None]
        taken = set(self.ledger.settle(self.incident_id, outcomes, wanted, holder=self.holder))
        for entry in group:
            entry.taken = entry.hand_over in taken
        accepted = sum(1 for outcome in outcomes if outcome.state is State.ACCEPTED)
        if accepted and self.on_accepted is not None:
            self.on_accepted(accepted)
