"""A test send: a customer's message delivered to the operator instead."""

from __future__ import annotations

from dataclasses import replace

from notify.compose import Outgoing
from notify.models import Outcome
from notify.transports.protocol import Transport


class RedirectTransport:
    """A test send: the customer's exact message, delivered to the operator's address."""

    def __init__(self, inner: Transport, address: str) -> None:
        self.inner = inner
        self.address = address

    def open(self) -> None:
        self.inner.open()

    def send(self, message: Outgoing) -> Outcome:
        marker = f"X-Notify-Test-Send: for {message.to}; no customer is marked as sent\r\n"
        redirected = replace(message, to=self.address, data=marker.encode() + message.data)
        return self.inner.send(redirected)

    def close(self) -> None:
        self.inner.close()
