"""The report's pictures as shapes an SVG template draws: an outcome bar and a timeline
of acceptances and bounces. Pure geometry; no drawing library, no external asset."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

WIDTH = 1000  # the SVG's own units; the page scales it to its width
BINS = 48


@dataclass(frozen=True)
class History:
    """When the relay accepted messages and when bounces came back."""

    accepted: list[datetime] = field(default_factory=list)
    bounced: list[datetime] = field(default_factory=list)


@dataclass(frozen=True)
class Segment:
    """One outcome's share of the bar."""

    outcome: str
    count: int
    x: float
    width: float
    share: int  # percent, rounded

    @property
    def css(self) -> str:
        return self.outcome.replace(" ", "-")


@dataclass(frozen=True)
class Bar:
    """One time bin: acceptances drawn up from the axis, bounces down."""

    x: float
    width: float
    accepted: float  # heights, in SVG units
    bounced: float
    label: str


@dataclass(frozen=True)
class Timeline:
    """The bins, the tallest bin's counts and the times at both ends."""

    bars: list[Bar]
    most_accepted: int
    most_bounced: int
    start: str
    end: str


def outcome_bar(counts: Mapping[str, int]) -> list[Segment]:
    """Stacked proportions of the outcomes, in the order given; empty outcomes left out."""
    total = sum(counts.values())
    segments, x = [], 0.0
    for outcome, count in counts.items():
        if not count:
            continue
        width = WIDTH * count / total
        segments.append(Segment(outcome, count, x, width, round(100 * count / total)))
        x += width
    return segments


def timeline(history: History, *, height: float = 70.0) -> Timeline | None:
    """Acceptances and bounces counted in equal bins between the first and last moment."""
    moments = history.accepted + history.bounced
    if not moments:
        return None
    start, end = min(moments), max(moments)
    span = max((end - start).total_seconds(), 1.0)
    accepted, bounced = [0] * BINS, [0] * BINS
    for series, moments_of in ((accepted, history.accepted), (bounced, history.bounced)):
        for moment in moments_of:
            series[min(int((moment - start).total_seconds() / span * BINS), BINS - 1)] += 1
    top_a, top_b = max(accepted), max(bounced)
    width = WIDTH / BINS
    bars = [
        Bar(
            n * width,
            width * 0.85,
            height * a / top_a if top_a else 0.0,
            height * b / top_b if top_b else 0.0,
            f"{a} accepted, {b} bounced",
        )
        for n, (a, b) in enumerate(zip(accepted, bounced, strict=True))
    ]
    return Timeline(bars, top_a, top_b, f"{start:%Y-%m-%d %H:%M} UTC", f"{end:%Y-%m-%d %H:%M} UTC")
