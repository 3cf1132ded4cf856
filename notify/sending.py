"""The send engine as `send` and `resend` run it: claimed from the ledger, over SMTP.

The two differ only in which recipients are due (`ClaimDue`) and where each message comes
from (`Build`); claiming, pacing, recording and the relay are the same code, so a message
left in doubt by either is settled by the next run of either, to the same address with
the same Message-ID.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import threading
from collections.abc import Callable, Mapping, Sequence

from notify.compose import Outgoing
from notify.delivery import deliver, delivery_options, on_one_cpu
from notify.errors import NotifyError, RenderError, StoppedError
from notify.incident import Incident
from notify.ledger.claims import Claim, Sender
from notify.ledger.journal import Journal
from notify.messages.pool import RenderPool
from notify.models import Outcome, Recipient, RunSummary
from notify.transports.protocol import Transport
from notify.transports.smtp import SmtpTransport

MAX_CLAIM = 20  # recipients reserved at a time: one ledger round trip feeds many messages

ClaimDue = Callable[[Sender, int], list[Claim]]  # reserve up to n due recipients
Build = Callable[[Sequence[Claim]], Mapping[str, Outgoing]]  # their messages, by key


def send_claimed(
    incident: Incident,
    *,
    claim: ClaimDue,
    build: Build,
    count: int,
    on_outcome: Callable[[Outcome], None] | None = None,
    transport: Callable[[], Transport] | None = None,
) -> RunSummary:
    """Deliver up to `count` due messages, each outcome durable before its connection's
    next message goes. Several processes on one incident share the work by their claims."""
    settings = incident.settings
    ledger = incident.open_ledger()
    sender = Sender(ledger, incident.incident_id, rate=settings.rate)
    options = delivery_options(settings, count)
    journal = Journal(ledger, incident.incident_id, holder=sender.id)
    journal.on_accepted = _counting(sender, journal)
    source = ClaimedMessages(
        lambda n: claim(sender, n), build, count=count, connections=options.connections
    )
    with on_one_cpu():  # after any fork: render workers keep every CPU
        sender.start()
        try:
            return deliver(
                source,
                transport or (lambda: SmtpTransport(settings)),
                journal,
                options=options,
                pace=sender.pace,
                on_outcome=on_outcome,
            )
        except RenderError:
            raise  # refused before anything left (a message over the relay's SIZE)
        except NotifyError as exc:
            raise StoppedError(exc, accepted=journal.accepted) from exc
        finally:
            sender.finish()


def _counting(sender: Sender, journal: Journal) -> Callable[[int], None]:
    def accepted(count: int) -> None:
        journal.accepted += count
        sender.count_sent(count)

    return accepted


class ClaimedMessages:
    """Messages for recipients reserved in the ledger as connections ask for them: a few
    per connection at a time, so every connection is busy from the first message."""

    def __init__(
        self,
        claim: Callable[[int], list[Claim]],
        build: Build,
        *,
        count: int,
        connections: int,
    ) -> None:
        self._claim, self._build = claim, build
        self._left = count
        self._connections = max(1, connections)
        self._ready: collections.deque[Outgoing] = collections.deque()
        self._lock = threading.Lock()

    def next_message(self) -> Outgoing | None:
        with self._lock:
            if not self._ready and self._left > 0:
                self._fill()
            return self._ready.popleft() if self._ready else None

    def _fill(self) -> None:
        size = min(MAX_CLAIM, self._left, math.ceil(self._left / self._connections))
        claims = self._claim(size)
        self._left = self._left - len(claims) if claims else 0
        built = self._build(claims)
        self._ready.extend(built[c.key] for c in claims)


def build_for_send(incident: Incident, pool: RenderPool) -> Build:
    """The check's spooled message where it has one for the address in use, else built
    in the render pool."""

    def build(claims: Sequence[Claim]) -> Mapping[str, Outgoing]:
        found: dict[str, Outgoing] = {}
        missing: list[Recipient] = []
        for claimed in claims:
            spooled = None if claimed.sent_to else incident.spooled(claimed.key)
            if spooled is not None:
                found[claimed.key] = spooled
            else:
                missing.append(addressed(incident.recipient(claimed.key), claimed.sent_to))
        found.update((message.key, message) for message in pool.build(missing))
        return found

    return build


def addressed(recipient: Recipient, address: str | None) -> Recipient:
    """The recipient with the address now in use (the alternate after a hard bounce)."""
    return dataclasses.replace(recipient, email=address) if address else recipient
