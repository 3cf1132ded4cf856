"""What every way out has in common, so delivery never asks which one it holds."""

from __future__ import annotations

from typing import Protocol

from notify.compose import Outgoing
from notify.models import Outcome


class Transport(Protocol):
    """Something that takes messages one at a time and says what became of each."""

    def open(self) -> None:
        """Check the way out works (connect, log in) before the first message."""

    def send(self, message: Outgoing) -> Outcome:
        """Hand over one message; raise DeliveryError only when no message can go."""

    def close(self) -> None:
        """Let go of connections and files."""
