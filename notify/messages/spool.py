"""Messages built by a send's check, kept on disk until the send takes them.

A send checks every message before anything leaves (Promise 1), which means building
them all; keeping the bytes lets the send build each one once instead of twice. A million
messages do not fit in memory, so they go to an unlinked temporary file: nothing else
sees it, and it disappears with the process, however the process ends. When the disk
refuses (full, read-only), the spool gives up and the send builds what it lacks again.
"""

from __future__ import annotations

import os
import tempfile
import threading
from array import array
from collections.abc import Iterable
from pathlib import Path
from typing import IO

_MISSING = -1


class Spool:
    """Message bytes by the recipient's position in the incident."""

    def __init__(self, count: int, folder: Path | None = None) -> None:
        self._offsets = array("q", [_MISSING]) * count
        self._lengths = array("l", [0]) * count
        self._file: IO[bytes] | None = None
        self._folder = folder
        self._end = 0
        self._failed = False
        self._lock = threading.Lock()

    def put(self, built: Iterable[tuple[int, bytes]]) -> None:
        """Append (position, bytes) pairs; a disk error turns the whole spool off."""
        if self._failed:
            return
        with self._lock:
            try:
                file = self._open()
                for position, data in built:
                    file.write(data)
                    self._offsets[position] = self._end
                    self._lengths[position] = len(data)
                    self._end += len(data)
            except OSError:
                self._fail()

    def ready(self) -> None:
        """Flush what was put, before the first get: reads go straight to the file."""
        with self._lock:
            if self._file is not None and not self._failed:
                try:
                    self._file.flush()
                except OSError:
                    self._fail()

    def get(self, position: int) -> bytes | None:
        """The bytes put for this position, or None (never put, or the disk failed)."""
        offset = self._offsets[position]
        if offset == _MISSING or self._failed or self._file is None:
            return None
        length = self._lengths[position]
        try:
            data = os.pread(self._file.fileno(), length, offset)
        except OSError:
            return None
        return data if len(data) == length else None

    def length(self, position: int) -> int | None:
        """The size of the bytes put for this position, or None (never put, or the disk failed)."""
        if self._failed or self._offsets[position] == _MISSING:
            return None
        return self._lengths[position]

    @property
    def complete(self) -> bool:
        """Whether every position has its bytes: a send then needs no render workers."""
        return not self._failed and _MISSING not in self._offsets

    @property
    def size(self) -> int:
        return 0 if self._failed else self._end

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def _open(self) -> IO[bytes]:
        if self._file is None:
            if self._folder is not None:
                self._folder.mkdir(parents=True, exist_ok=True)
            # Kept open until close(): closing it is what deletes it.
            self._file = tempfile.TemporaryFile(dir=self._folder, prefix="notify-spool-")  # noqa: SIM115
        assert self._file is not None
        return self._file

    def _fail(self) -> None:
        self._failed = True
        self._offsets = array("q", [_MISSING]) * len(self._offsets)
        if self._file is not None:
            self._file.close()
            self._file = None
