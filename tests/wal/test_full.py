"""Full WAL: max_bytes and a real ENOSPC on a 1 MiB tmpfs, under every full policy."""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_audit.exceptions import WALError, WALFullError
from otel_audit.wal import WAL

from .conftest import payload_for

PAYLOAD_BYTES = 1000


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem, so writes hit ENOSPC (the tests run as root)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def _fill(wal: WAL, start: int) -> int:
    """Append until the WAL refuses; return the last seq stored."""
    seq = start
    while True:
        try:
            got = wal.append(payload_for(seq + 1, PAYLOAD_BYTES))
        except WALFullError:
            return seq
        if got == 0:
            return seq
        assert got == seq + 1
        seq = got


def _filler(path: Path) -> None:
    """Take all space left on the filesystem."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            try:
                os.write(fd, b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                return
    finally:
        os.close(fd)


def _assert_intact(directory: Path, first: int, last: int) -> None:
    with WAL.open(directory, durability="never", segment_bytes=64 << 10) as w:
        assert w.stats()["quarantine_count"] == 0, "a full disk must not leave damaged frames"
        got = list(w.read(after=first - 1))
    assert [s for s, _ in got] == list(range(first, last + 1))
    assert all(p == payload_for(s, PAYLOAD_BYTES) for s, p in got)


def test_raise_policy_fails_at_once_on_enospc_and_resumes_after_ack(small_fs: Path) -> None:
    """ENOSPC mid-write is cut back, raises WALFullError, and acking frees space for new appends."""
    d = small_fs / "wal"
    with WAL.open(d, durability="always", segment_bytes=64 << 10, full_policy="raise") as w:
        last = _fill(w, 0)
        assert last > 500  # most of the 1 MiB was used before ENOSPC
        with pytest.raises(WALFullError, match="disk full"):
            w.append(payload_for(last + 1, PAYLOAD_BYTES))
        assert w.last_seq == last
        assert [s for s, _ in w.read()] == list(range(1, last + 1))
        w.ack(last)  # the checkpoint is written although the disk is full
        assert w.append(payload_for(last + 1, PAYLOAD_BYTES)) == last + 1
    _assert_intact(d, last + 1, last + 1)


def test_drop_newest_counts_warns_and_resumes_when_space_returns(
    small_fs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Dropped appends return 0, are counted and warned once; deleting a filler file ends it."""
    d = small_fs / "wal"
    with WAL.open(d, durability="interval", segment_bytes=64 << 10, full_policy="drop_newest") as w:
        w.append_many([payload_for(i, PAYLOAD_BYTES) for i in range(1, 101)])
        _filler(small_fs / "filler")
        with caplog.at_level(logging.WARNING, logger="otel_audit.wal"):
            results = [w.append(payload_for(101, PAYLOAD_BYTES)) for _ in range(50)]
            assert w.append_many([b"a", b"b"]) == [0, 0]
        assert set(results) == {0}
        assert w.stats()["dropped"] == 52
        warnings = [r for r in caplog.records if "dropped" in r.getMessage()]
        assert len(warnings) == 1, "the warning is rate-limited"
        os.unlink(small_fs / "filler")
        assert w.append(payload_for(101, PAYLOAD_BYTES)) == 101
    _assert_intact(d, 1, 101)


def test_block_policy_waits_for_space_then_raises(small_fs: Path) -> None:
    """block waits full_timeout for space, then raises WALFullError."""
    d = small_fs / "wal"
    with WAL.open(d, durability="never", segment_bytes=64 << 10, full_policy="block", full_timeout=0.3) as w:
        w.append(payload_for(1, PAYLOAD_BYTES))
        _filler(small_fs / "filler")
        t0 = time.monotonic()
        last = _fill(w, 1)  # a few more may fit in the segment's last page
        assert last < 10
        assert 0.25 < time.monotonic() - t0 < 3
    _assert_intact(d, 1, last)


def test_block_policy_resumes_when_space_is_freed_by_someone_else(small_fs: Path) -> None:
    """A blocked append completes once another program frees disk space."""
    d = small_fs / "wal"
    with WAL.open(d, durability="always", segment_bytes=64 << 10, full_policy="block", full_timeout=10) as w:
        w.append(payload_for(1, PAYLOAD_BYTES))
        _filler(small_fs / "filler")
        w.options = dataclasses.replace(w.options, full_timeout=0.1)
        last = _fill(w, 1)
        w.options = dataclasses.replace(w.options, full_timeout=10)
        threading.Timer(0.3, os.unlink, args=(small_fs / "filler",)).start()
        t0 = time.monotonic()
        assert w.append(payload_for(last + 1, PAYLOAD_BYTES)) == last + 1
        assert 0.2 < time.monotonic() - t0 < 5
    _assert_intact(d, 1, last + 1)


def test_enospc_when_rolling_to_a_new_segment_is_handled(small_fs: Path) -> None:
    """No space for a new segment file is a full WAL too; the old segment stays clean."""
    d = small_fs / "wal"
    with WAL.open(d, durability="never", segment_bytes=2048, full_policy="raise") as w:
        last = _fill(w, 0)
        segments = w.stats()["segments"]
        assert segments > 100
        w.ack(last // 2)
        assert w.stats()["segments"] < segments
        new_last = _fill(w, last)
        assert new_last > last
    _assert_intact(d, last // 2 + 1, new_last)


# -- max_bytes, no special filesystem needed ------------------------------------------------


def test_max_bytes_raise_policy(wal_dir: Path) -> None:
    """Past max_bytes, raise fails at once and stores nothing."""
    with WAL.open(wal_dir, segment_bytes=4096, max_bytes=16384, full_policy="raise") as w:
        last = _fill(w, 0)
        assert 10 <= last <= 16
        assert w.stats()["bytes_on_disk"] <= 16384
        with pytest.raises(WALFullError, match="max_bytes=16384"):
            w.append(payload_for(last + 1, PAYLOAD_BYTES))
        assert w.last_seq == last


def test_max_bytes_drop_newest_policy(wal_dir: Path) -> None:
    """Past max_bytes, drop_newest returns 0 and counts the drop."""
    with WAL.open(wal_dir, segment_bytes=4096, max_bytes=16384, full_policy="drop_newest") as w:
        last = _fill(w, 0)
        assert w.append(payload_for(last + 1, PAYLOAD_BYTES)) == 0
        assert w.stats()["dropped"] == 2  # the one that ended _fill, and this one
        assert w.last_seq == last
        w.ack(last)
        assert w.append(b"x") == last + 1


def test_max_bytes_block_policy_unblocks_on_ack(wal_dir: Path) -> None:
    """A blocked append proceeds as soon as an ack deletes a segment."""
    with WAL.open(wal_dir, segment_bytes=4096, max_bytes=16384, full_policy="block", full_timeout=10) as w:
        last = _fill_until_blocking(w)
        timer = threading.Timer(0.2, w.ack, args=(last,))
        timer.start()
        t0 = time.monotonic()
        assert w.append(payload_for(last + 1, PAYLOAD_BYTES)) == last + 1
        timer.join()
        assert 0.15 < time.monotonic() - t0 < 5


def _fill_until_blocking(w: WAL) -> int:
    """Fill with a short full_timeout, then restore the WAL's own."""
    timeout = w.options.full_timeout
    w.options = dataclasses.replace(w.options, full_timeout=0.05)
    try:
        return _fill(w, 0)
    finally:
        w.options = dataclasses.replace(w.options, full_timeout=timeout)


def test_max_bytes_block_policy_times_out(wal_dir: Path) -> None:
    """With nobody acking, block raises after full_timeout."""
    with WAL.open(wal_dir, segment_bytes=4096, max_bytes=16384, full_policy="block", full_timeout=0.2) as w:
        last = _fill_until_blocking(w)
        t0 = time.monotonic()
        with pytest.raises(WALFullError):
            w.append(payload_for(last + 1, PAYLOAD_BYTES))
        assert 0.15 < time.monotonic() - t0 < 3


def test_segment_deleted_under_the_writer_is_detected_at_fsync(wal_dir: Path) -> None:
    """Someone deleting the active segment makes the next fsync fail loudly, not lose records silently."""
    with WAL.open(wal_dir, durability="always") as w:
        w.append(b"a")
        for p in (wal_dir / "segments").iterdir():
            p.unlink()
        with pytest.raises(WALError, match="deleted by another program"):
            w.append(b"b")
        with pytest.raises(WALError, match="reopen the WAL"):
            w.append(b"c")
