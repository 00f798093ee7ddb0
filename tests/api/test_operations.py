"""What operators rely on: partial rejections kept in dead-letter/, the requeue inbox, the published sender state."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import otel_audit
from otel_audit.export.requeue import inbox
from otel_audit.testing import FakeCollector
from otel_audit.wal import deadletter

from .conftest import LOGIN


def _wait(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_partial_success_copies_the_whole_request_to_dead_letter_with_the_collector_message(
    make_audit: Callable[..., otel_audit.Audit], collector: FakeCollector, tmp_path: Path
) -> None:
    collector.down()
    audit = make_audit()
    ids = [audit.record("user.login.success", **LOGIN) for _ in range(5)]
    collector.partial_next(1, rejected=2, message="2 records over the size limit")
    collector.start()
    assert audit.force_flush(10)
    entries = deadletter.list_entries(tmp_path / "wal")
    assert entries and len(ids) == 5
    # Which records the sender had batched when the answer came is timing; the reason names the request.
    match = re.search(r"rejected (\d+) of the (\d+) records of this request \(seq (\d+)\.\.(\d+)\)", entries[0].reason)
    assert match is not None
    rejected, size, first, last = map(int, match.groups())
    assert [e.seq for e in entries] == list(range(first, last + 1))
    assert size == last - first + 1 and rejected == min(2, size)
    assert all(e.reason == entries[0].reason and "size limit" in e.reason for e in entries)
    assert audit.stats()["sender_partial_rejected"] == rejected


def test_a_dead_letter_requeued_while_the_app_runs_is_sent_again_by_the_running_sender(
    make_audit: Callable[..., otel_audit.Audit], collector: FakeCollector, tmp_path: Path
) -> None:
    wal_dir = tmp_path / "wal"
    collector.reject_if(lambda r: any(kv.key == "poison" for kv in r.attributes))
    audit = make_audit()
    bad = audit.record("user.login.success", **LOGIN, attributes={"poison": True})
    good = audit.record("user.login.success", **LOGIN)
    assert bad is not None and good is not None
    assert audit.force_flush(10)
    [entry] = deadletter.list_entries(wal_dir)
    assert collector.record_ids() == [good.record_id]
    # The operator fixes the collector and requeues while the app holds the WAL (the CLI's inbox path).
    collector.reject_if(None)
    box = inbox(wal_dir)
    box.mkdir(mode=0o700)
    entry.frame_path.rename(box / entry.frame_path.name)
    entry.meta_path.rename(box / entry.meta_path.name)
    assert _wait(lambda: bad.record_id in collector.record_ids())
    assert not any(box.iterdir())


def test_the_sender_publishes_its_last_error_for_otel_audit_status(
    make_audit: Callable[..., otel_audit.Audit], collector: FakeCollector, tmp_path: Path
) -> None:
    collector.down()
    audit = make_audit()
    audit.record("user.login.success", **LOGIN)
    state = tmp_path / "wal" / "state" / "sender.json"
    assert _wait(lambda: state.exists() and json.loads(state.read_text())["last_error"] != "")
    published = json.loads(state.read_text())
    assert published["consecutive_failures"] >= 1
    assert published["endpoint"] == collector.grpc_endpoint


def test_a_trickle_of_appends_leaves_in_batches_not_one_request_per_record(
    make_audit: Callable[..., otel_audit.Audit], collector: FakeCollector
) -> None:
    audit = make_audit(durability="always")
    for _ in range(300):
        audit.record("user.login.success", **LOGIN)
    assert audit.force_flush(20)
    assert len(collector.record_ids()) == 300
    # Each always-mode append waits for an fsync; the sender lingers a few ms to gather them.
    assert len(collector.accepted) < 150
