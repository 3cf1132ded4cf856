"""Walk the messages in batches through a transport, recording each batch's outcomes.

The recorder is the ledger for a real send and a no-op for previews and test sends,
so this loop is the same whatever the transport is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from typing import Protocol

from notify.compose import Outgoing
from notify.models import Outcome, RunSummary, State
from notify.transports import Transport

DEFAULT_BATCH_SIZE = 20


class Recorder(Protocol):
    """What delivery tells about each batch: before it goes, and what became of it."""

    def begin(self, keys: Sequence[str]) -> None: ...

    def release(self, keys: Sequence[str]) -> None: ...

    def record(self, outcomes: Sequence[Outcome]) -> None: ...


class NoRecord:
    """For previews and test sends: nobody is marked as anything."""

    def begin(self, keys: Sequence[str]) -> None:
        pass

    def release(self, keys: Sequence[str]) -> None:
        pass

    def record(self, outcomes: Sequence[Outcome]) -> None:
        pass


def deliver(
    messages: Iterable[Outgoing],
    transport: Transport,
    recorder: Recorder,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> RunSummary:
    """Send everything, batch by batch; a DeliveryError stops the run with the rest pending."""
    summary = RunSummary()
    transport.open()
    try:
        for batch in _batches(messages, batch_size):
            recorder.begin([m.key for m in batch])
            outcomes: list[Outcome] = []
            try:
                for message in batch:
                    outcome = transport.send(message)
                    outcomes.append(outcome)
                    _count(summary, outcome)
                    if on_outcome:
                        on_outcome(outcome)
            finally:
                recorder.record(outcomes)
                recorder.release([m.key for m in batch[len(outcomes) :]])
    finally:
        transport.close()
    return summary


def _count(summary: RunSummary, outcome: Outcome) -> None:
    summary.attempted += 1
    if outcome.state is State.ACCEPTED:
        summary.accepted += 1
        return
    if outcome.state is State.REFUSED:
        summary.refused += 1
    elif outcome.state is State.DEFERRED:
        summary.deferred += 1
    else:
        return
    summary.undelivered.append(outcome)


def _batches(messages: Iterable[Outgoing], size: int) -> Iterator[list[Outgoing]]:
    iterator = iter(messages)
    while batch := list(islice(iterator, size)):
        yield batch
