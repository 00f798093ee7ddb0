"""Durability modes and group commit."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from otel_audit.wal import WAL

from .conftest import payload_for


def test_group_commit_shares_fsyncs_between_threads(wal_dir: Path) -> None:
    """8 threads appending in always mode need far fewer fsyncs than appends."""
    per_thread, threads = 150, 8
    results: list[list[int]] = [[] for _ in range(threads)]
    with WAL.open(wal_dir, durability="always") as w:
        barrier = threading.Barrier(threads)

        def work(i: int) -> None:
            barrier.wait()
            for _ in range(per_thread):
                results[i].append(w.append(b"x" * 256))

        pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        stats = w.stats()
    all_seqs = sorted(s for r in results for s in r)
    assert all_seqs == list(range(1, per_thread * threads + 1))
    assert stats["appends"] == per_thread * threads
    assert stats["fsyncs"] < stats["appends"] / 3, stats


def test_always_mode_fsyncs_before_append_returns(wal_dir: Path) -> None:
    """A single writer in always mode gets one fsync per append."""
    with WAL.open(wal_dir, durability="always") as w:
        for i in range(1, 21):
            w.append(payload_for(i))
            assert w.stats()["fsyncs"] >= i
        w.append_many([payload_for(i) for i in range(21, 31)])
        assert w.stats()["fsyncs"] == 21, "append_many is one fsync"


def test_interval_mode_fsyncs_in_a_named_background_thread(wal_dir: Path) -> None:
    """interval fsyncs from 'otel-audit-wal-fsync' within a few intervals, not per append."""
    with WAL.open(wal_dir, durability="interval", fsync_interval=0.05) as w:
        assert "otel-audit-wal-fsync" in {t.name for t in threading.enumerate()}
        for i in range(1, 101):
            w.append(payload_for(i))
        assert w.stats()["fsyncs"] < 100
        deadline = time.monotonic() + 5
        while w.stats()["fsyncs"] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert w.stats()["fsyncs"] >= 1
    assert "otel-audit-wal-fsync" not in {t.name for t in threading.enumerate()}


def test_never_mode_does_not_fsync(wal_dir: Path) -> None:
    """never leaves flushing to the OS."""
    with WAL.open(wal_dir, durability="never", segment_bytes=1024) as w:
        for i in range(1, 101):
            w.append(payload_for(i))
        assert w.stats()["fsyncs"] == 0


def test_segments_roll_at_segment_bytes(wal_dir: Path) -> None:
    """No segment grows past segment_bytes unless a single batch is bigger."""
    with WAL.open(wal_dir, durability="never", segment_bytes=2048) as w:
        for i in range(1, 201):
            w.append(payload_for(i, 100))
        w.append(b"z" * 5000)  # bigger than a segment: gets one of its own
    sizes = sorted(p.stat().st_size for p in (wal_dir / "segments").iterdir())
    assert sizes[-1] == 24 + 28 + 5000
    assert all(s <= 2048 for s in sizes[:-1])
    names = sorted(p.name for p in (wal_dir / "segments").iterdir())
    assert names[0] == "00000000000000000001.wal"
    with WAL.open(wal_dir, durability="never", segment_bytes=2048) as w:
        assert [s for s, _ in w.read()] == list(range(1, 202))
