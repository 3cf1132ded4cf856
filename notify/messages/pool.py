"""Render and build messages in worker processes, so both cores work on a large incident.

The incident (templates, composer, recipients) is handed to the workers by fork: they
inherit it, so a task names its recipients by position; only a batch of other recipients
is pickled going in, and only problems or message bytes come back.
The pool is made before any thread starts, because forking a threaded process is unsafe.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from multiprocessing.pool import AsyncResult, Pool
from typing import TypeVar

from notify.compose import Outgoing
from notify.errors import RenderError, RunawayError
from notify.incident import Incident
from notify.messages.spool import Spool
from notify.models import Recipient
from notify.rendering import render

CHUNK = 500  # recipients per task: large enough to amortise the pickling round trip
MIN_RECIPIENTS = 4000  # below this a pool costs more than it saves
AHEAD = 8  # chunks of messages built ahead of the caller: a few MB, enough to keep busy
_T = TypeVar("_T")

_incident: Incident | None = None  # set in the parent just before the fork


class RenderPool:
    """Turns recipients into messages (or render problems), in parallel when it pays."""

    def __init__(self, incident: Incident, *, processes: int | None = None) -> None:
        global _incident
        self.incident = incident
        count = processes if processes is not None else _default_processes(incident)
        self._pool: Pool | None = None
        if count > 1:
            _incident = incident
            self._pool = multiprocessing.get_context("fork").Pool(count)

    def problems(self, *, start: int = 0, spool: Spool | None = None) -> list[str]:
        """Every recipient's render or header problem, in source order (from position
        `start`, when the caller rendered the ones before). With a spool, every message
        is also built and its bytes kept there for the send that follows."""
        spans = _spans(len(self.incident.cleaned.recipients), start=start)
        checked: Iterable[tuple[list[str], list[tuple[int, bytes]]]]
        if self._pool is None:
            checked = (_check_span(self.incident, span, build=spool is not None) for span in spans)
        else:
            task = _check_and_build_task if spool is not None else _check_task
            checked = self._pool.imap(task, spans)
        problems = []
        for found, built in checked:
            problems.extend(found)
            if spool is not None:
                spool.put(built)
        if spool is not None:
            spool.ready()
        return problems

    def outgoing_first(self, count: int) -> Iterator[Outgoing]:
        """The first `count` recipients' messages, in order, built ahead by the workers."""
        spans = _spans(min(count, len(self.incident.cleaned.recipients)))
        if self._pool is None:
            for span in spans:
                yield from _build_span(self.incident, span)
            return
        for built in self._ahead(_build_span_task, spans):
            yield from built

    def outgoing(self, recipients: Sequence[Recipient]) -> Iterator[Outgoing]:
        """The messages, in order, built ahead by the workers while the caller consumes."""
        if self._pool is None:
            yield from self.incident.outgoing(list(recipients))
            return
        for built in self._ahead(_build_task, _chunks(recipients)):
            yield from built

    def build(self, recipients: Sequence[Recipient]) -> list[Outgoing]:
        """One batch, e.g. what a sender just claimed; safe to call from many threads."""
        if self._pool is None or not recipients:
            return list(self.incident.outgoing(list(recipients)))
        return self._pool.apply(_build_task, (list(recipients),))

    def _ahead(
        self, task: Callable[[_T], list[Outgoing]], chunks: list[_T]
    ) -> Iterator[list[Outgoing]]:
        """Each chunk's messages, in order, with at most AHEAD chunks in the workers' hands.

        Pool.imap would build everything as fast as the workers go, and the messages the
        caller has not taken yet (a million previews, written slower) would pile up here."""
        assert self._pool is not None
        pending: deque[AsyncResult[list[Outgoing]]] = deque()
        for chunk in chunks:
            pending.append(self._pool.apply_async(task, (chunk,)))
            if len(pending) >= AHEAD:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> RenderPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _default_processes(incident: Incident) -> int:
    if len(incident.cleaned.recipients) < MIN_RECIPIENTS:
        return 1
    return min(len(os.sched_getaffinity(0)), 4)


def _chunks(recipients: Sequence[Recipient]) -> list[list[Recipient]]:
    return [list(recipients[i : i + CHUNK]) for i in range(0, len(recipients), CHUNK)]


def _spans(count: int, *, start: int = 0) -> list[range]:
    """Positions in the incident's recipients, CHUNK at a time: a range pickles in bytes."""
    return [range(first, min(first + CHUNK, count)) for first in range(start, count, CHUNK)]


def _build_span(incident: Incident, span: range) -> list[Outgoing]:
    return list(incident.outgoing(incident.cleaned.recipients[span.start : span.stop]))


def _check_span(
    incident: Incident, span: range, *, build: bool
) -> tuple[list[str], list[tuple[int, bytes]]]:
    """Render and check each recipient's message: its problems, and when `build`, each
    message's bytes by position. Without, only what building would refuse is checked
    (a quarter of the cost saved)."""
    problems, built = [], []
    recipients = incident.cleaned.recipients
    composer = incident.composer
    for position in span:
        try:
            rendered = render(incident.templates, recipients[position], incident.template_context)
            if build:
                built.append((position, composer.compose(rendered).data))
            else:
                composer.validate(rendered)
        except RunawayError:
            raise
        except RenderError as exc:
            problems.append(str(exc))
    return problems, built


def _check_task(span: range) -> tuple[list[str], list[tuple[int, bytes]]]:
    assert _incident is not None
    return _check_span(_incident, span, build=False)


def _check_and_build_task(span: range) -> tuple[list[str], list[tuple[int, bytes]]]:
    assert _incident is not None
    return _check_span(_incident, span, build=True)


def _build_span_task(span: range) -> list[Outgoing]:
    assert _incident is not None
    return _build_span(_incident, span)


def _build_task(recipients: list[Recipient]) -> list[Outgoing]:
    assert _incident is not None
    return list(_incident.outgoing(recipients))
