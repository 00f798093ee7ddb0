"""Shared fixtures for the WAL tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_audit.wal import WAL


def payload_for(seq: int, size: int = 40) -> bytes:
    """A payload that names its own seq, so a test can tell a record from an invented one."""
    head = f"record-{seq:010d}|".encode()
    return head + bytes((seq + i) % 251 for i in range(max(0, size - len(head))))


@pytest.fixture
def wal_dir(tmp_path: Path) -> Path:
    return tmp_path / "wal"


@pytest.fixture
def wal(wal_dir: Path) -> Iterator[WAL]:
    w = WAL.open(wal_dir, durability="never", segment_bytes=4096)
    yield w
    w.close()
