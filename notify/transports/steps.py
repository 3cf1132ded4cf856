"""smtplib with one deadline per step of the SMTP conversation, not only one per read.

A read times out only when no byte comes; a relay that trickles a byte now and then
never trips it. Here every read and write gets what is left of its step (the greeting,
the hello, one message), so a stuck relay costs one step's deadline at most.
"""

from __future__ import annotations

import io
import math
import smtplib
import socket
import time
from typing import Any

TIMEOUT_SECONDS = 60  # the longest wait for any one read or write


class SteppedSMTP(smtplib.SMTP):
    """smtplib with one deadline for each step of the conversation: every read and write
    gets what is left of it (or TIMEOUT_SECONDS, if less)."""

    step = "greeting"
    step_seconds = 0.0
    deadline = math.inf
    _timeout_set = float(TIMEOUT_SECONDS)

    def start_step(self, step: str, seconds: float) -> None:
        """Give the next step of the conversation its own deadline."""
        self.step, self.step_seconds = step, seconds
        self.deadline = time.monotonic() + seconds
        wait = min(seconds, TIMEOUT_SECONDS)
        if self.sock is not None and self._timeout_set < wait - 1.0:  # cut short before
            self.sock.settimeout(wait)
            self._timeout_set = wait

    def overdue(self) -> bool:
        """Whether the step ran past its deadline: the relay, not the network, is stuck."""
        return time.monotonic() >= self.deadline

    def overdue_text(self) -> str:
        """What an outcome or error says when the step ran past its deadline."""
        return f"no reply within the {self.step_seconds:g} s given to the {self.step}"

    def fitted_socket(self) -> socket.socket:
        """The socket, its timeout cut to what is left of the step when that is less."""
        sock = self.sock
        if sock is None:
            raise smtplib.SMTPServerDisconnected("not connected")
        left = self.deadline - time.monotonic()
        if left < self._timeout_set:  # rare: setting a timeout is a system call
            if left <= 0:
                raise TimeoutError(self.overdue_text())
            sock.settimeout(left)
            self._timeout_set = left
        return sock

    def connect(self, host: str = "localhost", port: int = 0, source_address: Any = None) -> Any:
        # smtplib takes the name TLS verifies from the constructor's host, and we connect
        # later, once the greeting's deadline starts.
        self._host = host
        return super().connect(host, port, source_address)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        wanted = min(self.deadline - time.monotonic(), timeout)
        if wanted <= 0:
            raise TimeoutError(self.overdue_text())
        self._timeout_set = wanted
        return super()._get_socket(host, port, wanted)  # type: ignore[misc, no-any-return]

    def send(self, s: Any) -> None:
        self.fitted_socket()
        super().send(s)

    def getreply(self) -> tuple[int, bytes]:
        if self.file is None and self.sock is not None:  # new, or new after STARTTLS
            self.file = io.BufferedReader(_StepReader(self))  # type: ignore[assignment]
        return super().getreply()


class SteppedSMTPSSL(SteppedSMTP, smtplib.SMTP_SSL):
    """Implicit TLS, its handshake within the greeting's deadline."""


class _StepReader(io.RawIOBase):
    """What smtplib reads replies from: the socket, within the step's deadline."""

    def __init__(self, connection: SteppedSMTP) -> None:
        self.connection = connection

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self.connection.fitted_socket().recv_into(buffer)
