"""A frame the cursor returned can always be acked, even while its append is still returning."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from otel_audit.wal import WAL, fileio


def test_ack_of_a_frame_whose_append_has_not_returned_waits_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal = WAL.open(tmp_path, durability="never")
    try:
        wal.append(b"first")
        real_write = fileio.write
        entered = threading.Event()

        def slow_write(fd: int, data: bytes | memoryview) -> int:
            written = real_write(fd, data)  # the bytes are in the file...
            entered.set()
            time.sleep(0.3)  # ...but the append has not returned, so last_seq still says 1
            return written

        monkeypatch.setattr(fileio, "write", slow_write)
        appender = threading.Thread(target=wal.append, args=(b"second",))
        appender.start()
        assert entered.wait(5)
        monkeypatch.setattr(fileio, "write", real_write)
        batch = wal.cursor(after=0).next_batch(10, 1 << 20)
        assert [seq for seq, _ in batch] == [1, 2]
        wal.ack(batch[-1][0])  # used to raise "cannot ack seq 2: the last seq written is 1"
        assert wal.acked_seq == 2
        appender.join()
    finally:
        wal.close()
