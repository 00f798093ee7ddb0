"""Cursors and the lock-free WALReader, including beside a live writer."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from otel_audit.exceptions import WALCorruptionError
from otel_audit.wal import WAL, WALReader, frame

from .conftest import payload_for

REPO = Path(__file__).resolve().parents[2]


def test_next_batch_respects_max_records_and_max_bytes(wal: WAL) -> None:
    """Batches stop at either limit, but always carry at least one frame."""
    wal.append_many([payload_for(i, 100) for i in range(1, 11)])
    wal.append(payload_for(11, 3000))
    with wal.cursor(0) as cur:
        assert [s for s, _ in cur.next_batch(3, 1 << 20)] == [1, 2, 3]
        assert [s for s, _ in cur.next_batch(100, 250)] == [4, 5]
        assert [s for s, _ in cur.next_batch(100, 100)] == [6]
        assert [s for s, _ in cur.next_batch(100, 1 << 20)] == [7, 8, 9, 10, 11]
        assert cur.next_batch(100, 1 << 20) == []


def test_cursor_continues_after_more_appends_and_roll_over(wal: WAL) -> None:
    """At the end a cursor returns []; after new appends (even in a new segment) it goes on."""
    wal.append(payload_for(1))
    with wal.cursor(0) as cur:
        assert cur.next_batch(10, 1 << 20) == [(1, payload_for(1))]
        assert cur.next_batch(10, 1 << 20) == []
        for i in range(2, 200):
            wal.append(payload_for(i, 100))
        assert wal.stats()["segments"] > 3
        got = []
        while batch := cur.next_batch(7, 1 << 20):
            got.extend(batch)
        assert got == [(i, payload_for(i, 100)) for i in range(2, 200)]


def test_seek_repositions_the_cursor(wal: WAL) -> None:
    """seek(after) makes the next batch start at after + 1."""
    wal.append_many([payload_for(i, 100) for i in range(1, 101)])
    with wal.cursor(0) as cur:
        cur.next_batch(50, 1 << 20)
        cur.seek(10)
        assert cur.next_batch(1, 1 << 20)[0][0] == 11
        cur.seek(95)
        assert [s for s, _ in cur.next_batch(100, 1 << 20)] == [96, 97, 98, 99, 100]


def test_cursor_survives_acked_segments_being_deleted(wal: WAL) -> None:
    """Deleting segments under a cursor neither breaks it nor makes it return acked data it skipped."""
    wal.append_many([payload_for(i, 100) for i in range(1, 201)])
    with wal.cursor(0) as cur:
        assert [s for s, _ in cur.next_batch(5, 1 << 20)] == [1, 2, 3, 4, 5]
        wal.ack(150)  # deletes the segment the cursor has open, and more
        got = [s for s, _ in cur]
    assert got[0] == 6  # it still reads the file it had open, though deleted
    assert got == sorted(got) and got[-1] == 200
    assert set(range(151, 201)) <= set(got)


def test_cursor_does_not_rescan_a_segment_for_each_batch(
    wal_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading N frames in small batches reads each byte about once."""
    with WAL.open(wal_dir, durability="never", segment_bytes=1 << 20) as w:
        w.append_many([payload_for(i, 200) for i in range(1, 2001)])
        size = w.stats()["bytes_on_disk"]
        read_bytes = 0
        real_pread = os.pread

        def counting_pread(fd: int, n: int, offset: int) -> bytes:
            nonlocal read_bytes
            data = real_pread(fd, n, offset)
            read_bytes += len(data)
            return data

        monkeypatch.setattr(os, "pread", counting_pread)
        with w.cursor(0) as cur:
            count = 0
            while batch := cur.next_batch(5, 1 << 20):
                count += len(batch)
        assert count == 2000
        assert read_bytes < 1.5 * size


def test_incomplete_frame_at_live_tail_is_not_yet_written(wal_dir: Path) -> None:
    """A half-written frame at the end is waited for, not reported as corruption."""
    with WAL.open(wal_dir) as w:
        w.append(payload_for(1))
    seg = next((wal_dir / "segments").iterdir())
    whole = frame.encode(2, 0, payload_for(2))
    with open(seg, "ab") as f:
        f.write(whole[:20])
    reader = WALReader(wal_dir)
    with reader.cursor(0) as cur:
        assert cur.next_batch(10, 1 << 20) == [(1, payload_for(1))]
        assert cur.next_batch(10, 1 << 20) == []
        with open(seg, "ab") as f:
            f.write(whole[20:])
        assert cur.next_batch(10, 1 << 20) == [(2, payload_for(2))]
    assert reader.stats()["last_seq"] == 2


def test_damage_inside_a_sealed_segment_raises_with_location(wal_dir: Path) -> None:
    """A reader meeting damage in a segment that has a successor reports file and offset."""
    with WAL.open(wal_dir, durability="never", segment_bytes=1024) as w:
        w.append_many([payload_for(i, 100) for i in range(1, 5)])
        w.append_many([payload_for(i, 100) for i in range(5, 30)])
    first = sorted((wal_dir / "segments").iterdir())[0]
    data = bytearray(first.read_bytes())
    data[24 + 28 + 3] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(WALCorruptionError) as info:
        list(WALReader(wal_dir).read())
    assert info.value.segment == str(first) and info.value.offset == 24


def test_cursor_follows_a_writer_thread_exactly(wal_dir: Path) -> None:
    """A cursor reading while another thread appends sees 1..N once each, in order."""
    n = 3000
    with WAL.open(wal_dir, durability="never", segment_bytes=8192) as w:

        def write() -> None:
            for i in range(1, n + 1):
                w.append(payload_for(i, i % 300))

        t = threading.Thread(target=write)
        t.start()
        got: list[tuple[int, bytes]] = []
        with w.cursor(0) as cur:
            while len(got) < n:
                batch = cur.next_batch(64, 1 << 16)
                if not batch:
                    w.wait_for_append(got[-1][0] if got else 0, 1.0)
                got.extend(batch)
        t.join()
    assert got == [(i, payload_for(i, i % 300)) for i in range(1, n + 1)]


WRITER = (
    "import sys\n"
    "from otel_audit.wal import WAL\n"
    "from tests.wal.conftest import payload_for\n"
    "n = int(sys.argv[2])\n"
    "with WAL.open(sys.argv[1], durability='never', segment_bytes=2048) as w:\n"
    "    for i in range(1, n + 1):\n"
    "        w.append(payload_for(i, (i * 37) % 400))\n"
    "        if i % 50 == 0:\n"
    "            w.ack(i - 40)\n"
)


def test_reader_in_another_process_follows_a_live_writer(wal_dir: Path) -> None:
    """WALReader beside a writer process that rolls and deletes segments: no error, no bad frame."""
    n = 4000
    WAL.open(wal_dir).close()
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(wal_dir), str(n)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    reader = WALReader(wal_dir)
    got: list[int] = []
    try:
        with reader.cursor(0) as cur:
            done = False
            while True:
                batch = cur.next_batch(100, 1 << 20)
                for seq, payload in batch:
                    assert payload == payload_for(seq, (seq * 37) % 400)
                got.extend(s for s, _ in batch)
                if got:
                    assert reader.stats()["last_seq"] >= got[-1]
                if not batch:
                    if done:
                        break
                    done = writer.poll() is not None  # one more pass after the writer exited
    finally:
        writer.wait()
    assert writer.returncode == 0
    assert got == sorted(set(got))
    assert got[-1] == n
    assert reader.acked_seq == n - 40
    assert reader.stats()["lock_holder_pid"] is None
