"""The sender on the real WAL: outages, restarts and replay from the checkpoint, dead-letter on disk."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_audit.export.contexts import ContextStore
from otel_audit.testing import FakeCollector, record_id
from otel_audit.wal import WAL

from .conftest import SenderFactory, fill, transport_for


@pytest.fixture
def wal_dir(tmp_path: Path) -> Path:
    return tmp_path / "wal"


@pytest.fixture
def wal(wal_dir: Path) -> Iterator[WAL]:
    w = WAL.open(wal_dir, durability="never")
    yield w
    w.close()


@pytest.fixture
def wal_contexts(wal_dir: Path) -> ContextStore:
    return ContextStore(wal_dir)


def test_outage_then_recovery_on_the_real_wal(
    collector: FakeCollector, wal: WAL, wal_contexts: ContextStore, make_sender: SenderFactory
) -> None:
    """Receiver down at start, then up: every record once, in order, and the checkpoint at the end."""
    collector.down()
    ids = fill(wal, wal_contexts, 3000)
    sender = make_sender(wal, transport_for("grpc", collector), max_batch_records=256, store=wal_contexts)
    assert not sender.force_flush(0.3)
    assert wal.acked_seq == 0
    collector.up()
    assert sender.force_flush(15)
    assert collector.record_ids() == ids
    assert wal.acked_seq == wal.last_seq == 3000


def test_restart_replays_only_what_was_not_acknowledged(
    collector: FakeCollector, wal_dir: Path, make_sender: SenderFactory
) -> None:
    """A sender stopped mid-backlog resumes from the checkpoint in a new process-like lifetime."""
    contexts = ContextStore(wal_dir)
    wal = WAL.open(wal_dir, durability="never")
    ids = fill(wal, contexts, 2000)
    first = make_sender(wal, transport_for("grpc", collector), max_batch_records=100, store=contexts)
    assert collector.wait_for(500, 10)
    first.shutdown(2)
    delivered_before = wal.acked_seq
    assert delivered_before >= 500
    wal.close()

    # A new WAL object and context store: the contexts are read back from disk.
    wal2 = WAL.open(wal_dir, durability="never")
    try:
        assert wal2.acked_seq == delivered_before
        second = make_sender(
            wal2, transport_for("http", collector), max_batch_records=100, store=ContextStore(wal_dir)
        )
        assert second.force_flush(15)
        received = collector.record_ids()
        assert list(dict.fromkeys(received)) == ids
        # Only records after the checkpoint were sent again (at most the one batch in flight at stop).
        assert len(received) - len(ids) <= 100
    finally:
        wal2.close()


def test_dead_letter_lands_on_disk_with_its_reason(
    collector: FakeCollector, wal: WAL, wal_dir: Path, wal_contexts: ContextStore, make_sender: SenderFactory
) -> None:
    """The real WAL's dead-letter/ holds the refused record and the collector's reason; the rest flows."""
    ids = fill(wal, wal_contexts, 200)
    collector.reject_if(lambda r: record_id(r) == "id-42")
    sender = make_sender(wal, transport_for("http", collector), max_batch_records=200, store=wal_contexts)
    assert sender.force_flush(10)
    assert collector.record_ids() == [i for i in ids if i != "id-42"]
    assert wal.acked_seq == 200
    sidecars = list((wal_dir / "dead-letter").glob("*.json"))
    assert len(sidecars) == 1
    meta = json.loads(sidecars[0].read_text())
    assert meta["seq"] == 43 and "HTTP 400" in meta["reason"]
