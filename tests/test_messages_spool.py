"""The spool: message bytes kept on disk between a send's check and the send."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from notify.messages.spool import Spool


def test_bytes_come_back_by_position_in_any_order(tmp_path: Path) -> None:
    spool = Spool(4, tmp_path)
    spool.put([(2, b"two"), (0, b"zero")])
    spool.put([(3, b"three" * 1000)])
    spool.ready()
    assert [spool.get(n) for n in (3, 0, 2)] == [b"three" * 1000, b"zero", b"two"]
    assert spool.get(1) is None  # never put: the send builds it
    assert not spool.complete
    spool.put([(1, b"one")])
    spool.ready()
    assert spool.complete and spool.get(1) == b"one"
    spool.close()


def test_the_file_is_invisible_and_gone_when_closed(tmp_path: Path) -> None:
    spool = Spool(1, tmp_path)
    spool.put([(0, b"x" * 10_000)])
    spool.ready()
    assert list(tmp_path.iterdir()) == []  # unlinked from the start
    assert spool.size == 10_000
    spool.close()
    assert spool.get(0) is None


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_disk_that_refuses_turns_the_spool_off(tmp_path: Path) -> None:
    spool = Spool(2, tmp_path)
    spool.put([(0, b"zero")])
    spool.ready()
    assert spool._file is not None
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, spool._file.fileno())  # every later write fails as on a full disk
    os.close(full)
    spool.put([(1, b"a" * 100_000)])
    spool.ready()
    assert spool.get(0) is None and spool.get(1) is None  # nothing half-kept
    assert not spool.complete and spool.size == 0
    spool.close()
