"""Dead-letter entries: written durably by the WAL, listed and read back by module functions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from otel_audit.exceptions import WALCorruptionError
from otel_audit.wal import WAL, WALReader, deadletter


def test_dead_letter_writes_frame_and_sidecar(wal_dir: Path) -> None:
    """The entry holds the frame bytes and a JSON sidecar with seq, reason and time."""
    with WAL.open(wal_dir) as w:
        seq = w.append(b"poison")
        path = w.dead_letter(seq, b"poison", "collector said 400: bad attribute")
        assert w.stats()["dead_letter_count"] == 1
    assert path == wal_dir / "dead-letter" / "00000000000000000001.frame"
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["seq"] == 1 and meta["reason"] == "collector said 400: bad attribute"
    assert meta["time"].endswith("Z") and meta["payload_bytes"] == 6


def test_entries_are_listed_in_seq_order_and_read_back(wal_dir: Path) -> None:
    """list_entries and get give the CLI what it needs."""
    with WAL.open(wal_dir) as w:
        w.append_many([b"a", b"b", b"c"])
        w.dead_letter(3, b"c", "too large")
        w.dead_letter(1, b"a", "rejected")
    entries = deadletter.list_entries(wal_dir)
    assert [(e.seq, e.reason) for e in entries] == [(1, "rejected"), (3, "too large")]
    assert deadletter.read_payload(entries[1]) == b"c"
    entry, payload = deadletter.get(wal_dir, 1)
    assert entry.seq == 1 and payload == b"a"
    with pytest.raises(KeyError):
        deadletter.get(wal_dir, 2)
    assert WALReader(wal_dir).stats()["dead_letter_count"] == 2


def test_dead_letter_count_survives_reopen(wal_dir: Path) -> None:
    """The count comes from disk, not from a counter."""
    with WAL.open(wal_dir) as w:
        w.append(b"x")
        w.dead_letter(1, b"x", "r")
    with WAL.open(wal_dir) as w:
        assert w.stats()["dead_letter_count"] == 1


def test_damaged_dead_letter_frame_is_reported(wal_dir: Path) -> None:
    """Reading a damaged entry raises WALCorruptionError naming the file."""
    with WAL.open(wal_dir) as w:
        w.append(b"x")
        path = w.dead_letter(1, b"payload", "r")
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(WALCorruptionError, match="00000000000000000001.frame"):
        deadletter.get(wal_dir, 1)
