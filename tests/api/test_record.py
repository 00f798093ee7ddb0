"""Audit.record() and AuditLogger.emit(): the draft's data model, receipts, delivery waits, failure policy."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace

import otel_audit
from otel_audit.canonical import canonical_bytes
from otel_audit.integrity.digest import DIGEST_EVENT
from otel_audit.testing import FakeCollector, record_id

from .conftest import LOGIN


def _attrs(record: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in record.attributes:
        which = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, which) if which else None
    return out


def test_record_returns_a_receipt_whose_hash_is_the_canonical_sha256_of_what_arrives(
    make_audit: Callable[..., otel_audit.Audit], collector: FakeCollector
) -> None:
    audit = make_audit()
    receipt = audit.record("user.login.success", **LOGIN, target_type="http.endpoint", target_id="/api/session")
    assert receipt is not None
    assert audit.force_flush(10)
    [got] = collector.records
    assert record_id(got) == receipt.record_id
    assert hashlib.sha256(canonical_bytes(got)).hexdigest() == receipt.integrity_hash
    assert receipt.sink_timestamp >= got.observed_time_unix_nano


def test_every_mandatory_attribute_is_present_and_mirrored_in_log_record_uid(
    make_audit: Callable[..., otel_audit.Audit], collector: FakeCollector
) -> None:
    audit = make_audit()
    audit.record("user.login.success", actor_id=None, actor_type="user", action="LOGIN", outcome="failure",
                 source_id="2001:db8::1")
    assert audit.force_flush(10)
    [got] = collector.records
    attrs = _attrs(got)
    assert attrs["audit.record.id"] == attrs["log.record.uid"]
    assert attrs["audit.actor.id"] == "anonymous"
    assert attrs["audit.actor.type"] == "user"
    assert attrs["audit.action"] == "LOGIN"
    assert attrs["audit.outcome"] == "failure"
    assert attrs["audit.source.type"] == "ipv6"
    assert got.event_name == "user.login.success"
    assert got.severity_number == 0 and got.severity_text == ""
    assert 0 < got.time_unix_nano <= got.observed_time_unix_nano


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"actor_type": "robot"}, "audit.actor.type"),
        ({"action": "login"}, "audit.action"),
        ({"outcome": "maybe"}, "audit.outcome"),
        ({"attributes": {"x": object()}}, "x"),
    ],
)
def test_invalid_calls_raise_value_error_naming_the_attribute_in_every_mode(
    make_audit: Callable[..., otel_audit.Audit], change: dict[str, Any], needle: str
) -> None:
    audit = make_audit(fail_closed=False)
    with pytest.raises(ValueError, match=needle):
        audit.record("user.login.success", **{**LOGIN, **change})


def test_trace_and_span_ids_are_those_of_the_active_span(
    make_audit: Callable[..., otel_audit.Audit], collector: FakeCollector, tracer: trace.Tracer
) -> None:
    audit = make_audit()
    with tracer.start_as_current_span("request") as span:
        audit.record("user.login.success", **LOGIN)
        ctx = span.get_span_context()
    audit.record("user.logout", **{**LOGIN, "action": "LOGOUT"}, trace_id=0xABC, span_id=0xDEF)
    assert audit.force_flush(10)
    inside, explicit = collector.records
    assert inside.trace_id == ctx.trace_id.to_bytes(16, "big")
    assert inside.span_id == ctx.span_id.to_bytes(8, "big")
    assert explicit.trace_id == (0xABC).to_bytes(16, "big")
    assert explicit.span_id == (0xDEF).to_bytes(8, "big")


def test_emit_on_an_audit_logger_chains_records_of_its_stream(
    make_audit: Callable[..., otel_audit.Audit], collector: FakeCollector
) -> None:
    audit = make_audit()
    logger = audit.get_audit_logger("billing.payments", version="1.2.0")
    assert audit.get_audit_logger("billing.payments", version="1.2.0") is logger
    attrs = {"audit.actor.id": "ops-7", "audit.actor.type": "user", "audit.action": "UPDATE",
             "audit.outcome": "success", "audit.target.id": "cfg/limits"}
    receipts = [logger.emit("config.change", attrs) for _ in range(3)]
    assert audit.force_flush(10)
    got = [_attrs(r) for r in collector.records]
    assert [g["audit.sequence.number"] for g in got] == [1, 2, 3]
    assert len({g["audit.sequence.stream_id"] for g in got}) == 1
    assert got[0]["audit.target.id"] == "cfg/limits"
    for prev, cur in zip(receipts, got[1:], strict=False):
        assert prev is not None
        assert cur["audit.sequence.previous_record_id"] == prev.record_id


def test_a_caller_record_id_is_kept_so_retries_deduplicate(
    make_audit: Callable[..., otel_audit.Audit], collector: FakeCollector
) -> None:
    audit = make_audit()
    receipt = audit.record("user.login.success", **LOGIN, record_id="7b0c5a8e-0000-4000-8000-000000000001")
    assert receipt is not None and receipt.record_id == "7b0c5a8e-0000-4000-8000-000000000001"


def test_records_are_accepted_while_the_receiver_is_down_and_all_arrive_once_in_order(
    make_audit: Callable[..., otel_audit.Audit], collector: FakeCollector
) -> None:
    collector.down()
    audit = make_audit()
    ids = []
    for i in range(300):
        receipt = audit.record("user.login.success", **LOGIN, attributes={"i": i})
        assert receipt is not None
        ids.append(receipt.record_id)
    assert audit.stats()["backlog_records"] == 300
    collector.start()
    assert audit.force_flush(20)
    assert collector.record_ids() == ids


def test_wait_delivered_times_out_with_the_record_id_and_the_record_still_arrives(
    make_audit: Callable[..., otel_audit.Audit], collector: FakeCollector
) -> None:
    collector.down()
    audit = make_audit()
    started = time.monotonic()
    with pytest.raises(otel_audit.AuditTimeoutError) as err:
        audit.record("user.login.success", **LOGIN, wait="delivered", timeout=0.5)
    assert time.monotonic() - started < 3
    assert err.value.record_id
    collector.start()
    assert collector.wait_for(1, 15)
    assert collector.record_ids() == [err.value.record_id]
    audit.wait_delivered(err.value.record_id, timeout=5)


def test_wait_delivered_returns_once_the_receiver_has_the_record(
    make_audit: Callable[..., otel_audit.Audit], collector: FakeCollector
) -> None:
    audit = make_audit()
    receipt = audit.record("user.login.success", **LOGIN, wait="delivered", timeout=10)
    assert receipt is not None
    assert receipt.record_id in collector.record_ids()


@pytest.mark.parametrize("durability", ["never", "interval", "always"])
def test_a_hanging_receiver_never_holds_record_beyond_its_bound(
    make_audit: Callable[..., otel_audit.Audit], collector: FakeCollector, durability: str
) -> None:
    collector.hang(timeout=30)
    audit = make_audit(durability=durability, timeout=1.0)
    worst = 0.0
    for _ in range(50):
        t = time.monotonic()
        audit.record("user.login.success", **LOGIN)
        worst = max(worst, time.monotonic() - t)
    # record() waits for the local disk only; the sender is stuck on the network, not the caller.
    assert worst < 0.5
    collector.release()


def test_fail_closed_raises_audit_write_error_when_the_wal_is_full(
    make_audit: Callable[..., otel_audit.Audit], collector: FakeCollector
) -> None:
    collector.down()
    audit = make_audit(max_bytes=64 << 10, segment_bytes=16 << 10, full_policy="raise")
    with pytest.raises(otel_audit.AuditWriteError) as err:
        for _ in range(10_000):
            audit.record("user.login.success", **LOGIN, attributes={"pad": "x" * 200})
    assert err.value.record_id


def test_fail_open_returns_none_and_counts_the_drop(
    make_audit: Callable[..., otel_audit.Audit], collector: FakeCollector, caplog: pytest.LogCaptureFixture
) -> None:
    collector.down()
    audit = make_audit(max_bytes=64 << 10, segment_bytes=16 << 10, full_policy="raise", fail_closed=False)
    results = [audit.record("user.login.success", **LOGIN, attributes={"pad": "x" * 200}) for _ in range(400)]
    dropped = results.count(None)
    assert dropped > 0
    assert "not persisted" in caplog.text
    # The chain skips nothing: a refused record is rolled back, so the persisted ones stay contiguous.
    collector.start()
    assert audit.force_flush(20)
    numbers = [_attrs(r)["audit.sequence.number"] for r in collector.records]
    assert numbers == list(range(1, len(numbers) + 1))


def test_four_threads_in_always_mode_lose_and_drop_nothing(
    make_audit: Callable[..., otel_audit.Audit], collector: FakeCollector
) -> None:
    audit = make_audit(durability="always")
    per_thread = 50_000
    ids: list[list[str]] = [[] for _ in range(4)]

    def work(n: int) -> None:
        for i in range(per_thread):
            receipt = audit.record("user.login.success", **LOGIN, attributes={"t": n, "i": i})
            assert receipt is not None
            ids[n].append(receipt.record_id)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert audit.force_flush(120)
    # Digest records (one per 1,000 per stream) are the library's own; compare what the threads wrote.
    received = [record_id(r) for r in collector.records if r.event_name != DIGEST_EVENT]
    # At-least-once: a request the receiver took but whose answer was late is sent again; dedup by id.
    assert set(received) == {i for chunk in ids for i in chunk}
    assert len(set(received)) == 4 * per_thread
    stats = audit.stats()
    assert stats["dropped"] == 0
    # group commit: concurrent appenders share fsyncs
    assert stats["fsyncs"] < stats["appends"]


def test_shutdown_closes_each_stream_with_an_end_record(
    make_audit: Callable[..., otel_audit.Audit], collector: FakeCollector, tmp_path: Path
) -> None:
    audit = make_audit()
    audit.record("user.login.success", **LOGIN)
    audit.shutdown(timeout=10)
    last = _attrs(collector.records[-1])
    assert last["audit.sequence.end"] is True
    assert last["audit.sequence.number"] == 2


def test_record_after_shutdown_is_a_write_failure_under_the_failure_policy(
    make_audit: Callable[..., otel_audit.Audit], tmp_path: Path
) -> None:
    closed = make_audit(wal_dir=tmp_path / "closed")
    closed.shutdown(timeout=5)
    with pytest.raises(otel_audit.AuditWriteError, match="shut down"):
        closed.record("user.login.success", **LOGIN)
    open_ = make_audit(wal_dir=tmp_path / "open", fail_closed=False)
    open_.shutdown(timeout=5)
    assert open_.record("user.login.success", **LOGIN) is None
