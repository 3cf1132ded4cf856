"""The send's progress: the rate measured over the last seconds of sending, and its ETA.

An ETA from the time since the bar appeared counts the check, the confirmation and the
first connection as sending, and promised half an hour for a thirty-second send.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

WINDOW_SECONDS = 10.0  # the rate is measured over this much of the latest sending
MIN_SPAN_SECONDS = 0.5  # a shorter span says nothing yet: no rate, no ETA


class SendRate:
    """Messages per second over the last WINDOW_SECONDS, counted from the first outcome on."""

    def __init__(
        self, *, window: float = WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window = window
        self.clock = clock
        self.done = 0
        self._samples: deque[tuple[float, int]] = deque()

    def tick(self, count: int = 1) -> None:
        """Record `count` more messages done now."""
        now = self.clock()
        self.done += count
        self._samples.append((now, self.done))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()

    @property
    def rate(self) -> float | None:
        """Messages per second lately; None until there is enough to measure."""
        if len(self._samples) < 2:
            return None
        (start, done_then), (end, done_now) = self._samples[0], self._samples[-1]
        if end - start < MIN_SPAN_SECONDS:
            return None
        return (done_now - done_then) / (end - start)

    def eta(self, remaining: int) -> float | None:
        """Seconds until `remaining` more are done at the recent rate."""
        rate = self.rate
        if remaining <= 0:
            return 0.0
        return remaining / rate if rate else None


def clock_text(seconds: float | None) -> str:
    """'--:--' while unknown, 'MM:SS' under an hour, 'H:MM:SS' beyond."""
    if seconds is None:
        return "--:--"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def progress_text(
    *,
    accepted: int,
    deferred: int,
    refused: int,
    in_doubt: int,
    rate: float | None,
    eta: float | None,
) -> str:
    """What the progress bar shows beside itself: outcomes, the rate and the time left."""
    doubt = f" in doubt {in_doubt}" if in_doubt else ""
    speed = "--" if rate is None else f"{rate:,.1f}"
    return (
        f"accepted {accepted} deferred {deferred} refused {refused}{doubt}  "
        f"{speed} messages/s  ETA {clock_text(eta)}"
    )


def summary_text(outcomes: str, *, attempted: int, elapsed: float) -> str:
    """The send's last line: what happened to how many, in how long, how fast."""
    rate = attempted / elapsed if elapsed > 0 else 0.0
    return f"Sent: {outcomes} in {clock_text(elapsed)} ({rate:,.1f} messages/s)."
