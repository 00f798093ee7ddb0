"""The sender against the in-process collector: order, outages, rejections, partial success, shutdown."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import grpc
import pytest

from otel_audit.export.contexts import ContextStore
from otel_audit.export.payload import encode_payload
from otel_audit.export.sender import THREAD_NAME
from otel_audit.testing import FakeCollector, record_id

from .conftest import SenderFactory, fill, transport_for
from .fakewal import FakeWAL
from .protos import context_blob, record

PROTOCOLS = ["grpc", "http"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_sender_delivers_every_record_once_in_order(
    protocol: str,
    collector: FakeCollector,
    fake_wal: FakeWAL,
    contexts: ContextStore,
    make_sender: SenderFactory,
) -> None:
    """2,000 records in batches of 100 arrive once each, in WAL order, and the checkpoint reaches the end."""
    ids = fill(fake_wal, contexts, 2000)
    sender = make_sender(fake_wal, transport_for(protocol, collector), max_batch_records=100)
    assert sender.force_flush(10)
    assert collector.record_ids() == ids
    assert fake_wal.acked_seq == 2000 and sender.delivered_seq == 2000
    assert all(r.records <= 100 for r in collector.requests)
    stats = sender.stats()
    assert stats["exported"] == 2000 and stats["requests"] == 20 and stats["dead_lettered"] == 0


def test_sender_runs_in_a_named_daemon_thread(
    collector: FakeCollector, fake_wal: FakeWAL, make_sender: SenderFactory
) -> None:
    """One daemon thread named otel-audit-sender, gone after shutdown."""
    sender = make_sender(fake_wal, transport_for("grpc", collector))
    threads = [t for t in threading.enumerate() if t.name == THREAD_NAME]
    assert len(threads) == 1 and threads[0].daemon
    sender.shutdown(2)
    threads[0].join(2)
    assert not threads[0].is_alive()


def test_records_appended_later_are_picked_up(
    collector: FakeCollector, fake_wal: FakeWAL, contexts: ContextStore, make_sender: SenderFactory
) -> None:
    """An idle sender wakes on new appends."""
    sender = make_sender(fake_wal, transport_for("grpc", collector))
    assert sender.force_flush(1)
    ids = fill(fake_wal, contexts, 10)
    assert sender.wait_delivered(10, 5)
    assert collector.record_ids() == ids


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_receiver_down_at_start_then_up_delivers_all_once_in_order(
    protocol: str,
    collector: FakeCollector,
    fake_wal: FakeWAL,
    contexts: ContextStore,
    make_sender: SenderFactory,
) -> None:
    """Nothing is lost or duplicated across an outage; the sender keeps retrying until the collector is back."""
    collector.down()
    ids = fill(fake_wal, contexts, 500)
    sender = make_sender(fake_wal, transport_for(protocol, collector), max_batch_records=64)
    deadline = time.monotonic() + 5
    while sender.stats()["retries"] < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sender.stats()["retries"] >= 5
    assert fake_wal.acked_seq == 0
    ids += fill(fake_wal, contexts, 100, prefix="during")
    collector.up()
    assert sender.force_flush(15)
    assert collector.record_ids() == ids
    assert sender.stats()["consecutive_failures"] == 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_collector_flapping_loses_nothing(
    protocol: str,
    collector: FakeCollector,
    fake_wal: FakeWAL,
    contexts: ContextStore,
    make_sender: SenderFactory,
) -> None:
    """Down/up cycles while records keep coming: every record arrives, in order after dedup."""
    sender = make_sender(fake_wal, transport_for(protocol, collector), max_batch_records=50)
    ids: list[str] = []
    for round_ in range(4):
        ids += fill(fake_wal, contexts, 200, prefix=f"r{round_}")
        time.sleep(0.05)
        collector.down()
        ids += fill(fake_wal, contexts, 50, prefix=f"d{round_}")
        time.sleep(0.05)
        collector.up()
    assert sender.force_flush(20)
    received = collector.record_ids()
    deduped = list(dict.fromkeys(received))
    assert deduped == ids


def test_poison_record_goes_to_dead_letter_and_the_rest_flows(
    collector: FakeCollector, fake_wal: FakeWAL, contexts: ContextStore, make_sender: SenderFactory
) -> None:
    """One record the collector refuses, in a batch of 1,000: exactly it is dead-lettered, 999 are delivered."""
    ids = fill(fake_wal, contexts, 1000)
    collector.reject_if(lambda r: record_id(r) == "id-617")
    outcomes: list[tuple[int, str]] = []
    sender = make_sender(
        fake_wal,
        transport_for("grpc", collector),
        max_batch_records=1000,
        on_export=lambda n, d, outcome: outcomes.append((n, outcome)),
    )
    assert sender.force_flush(10)
    assert collector.record_ids() == [i for i in ids if i != "id-617"]
    assert list(fake_wal.dead) == [618]
    payload, reason = fake_wal.dead[618]
    assert payload == fake_wal.items[617][1]
    assert "INVALID_ARGUMENT" in reason
    assert sender.dead_letter_reason(618) == reason
    assert fake_wal.acked_seq == 1000
    assert fake_wal.ack_calls == sorted(fake_wal.ack_calls)
    stats = sender.stats()
    assert stats["dead_lettered"] == 1 and stats["exported"] == 999
    assert (1, "dead_letter") in outcomes
    assert sum(n for n, o in outcomes if o == "success") == 999


def test_http_400_poison_records_are_isolated(
    collector: FakeCollector, fake_wal: FakeWAL, contexts: ContextStore, make_sender: SenderFactory
) -> None:
    """Over HTTP too; two poison records far apart are both isolated."""
    ids = fill(fake_wal, contexts, 300)
    bad = {"id-3", "id-250"}
    collector.reject_if(lambda r: record_id(r) in bad)
    sender = make_sender(fake_wal, transport_for("http", collector), max_batch_records=128)
    assert sender.force_flush(10)
    assert collector.record_ids() == [i for i in ids if i not in bad]
    assert sorted(fake_wal.dead) == [4, 251]
    assert all("HTTP 400" in reason for _, reason in fake_wal.dead.values())


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_oversized_record_is_dead_lettered_and_big_batches_are_split(
    protocol: str, fake_wal: FakeWAL, contexts: ContextStore, make_sender: SenderFactory
) -> None:
    """A request over the collector's limit is halved; a single record over it (413/RESOURCE_EXHAUSTED) is dead-lettered."""
    with FakeCollector(max_request_bytes=20_000) as collector:
        ids = fill(fake_wal, contexts, 100, extra_bytes=100)  # ~250 bytes each: 25 KB per full batch
        big = fill(fake_wal, contexts, 1, prefix="big", extra_bytes=50_000)
        ids += fill(fake_wal, contexts, 10, prefix="after")
        sender = make_sender(fake_wal, transport_for(protocol, collector), max_batch_records=200)
        assert sender.force_flush(10)
        assert collector.record_ids() == ids
        assert list(fake_wal.dead) == [101]
        reason = fake_wal.dead[101][1]
        assert ("413" in reason) if protocol == "http" else ("RESOURCE_EXHAUSTED" in reason)
        assert big == ["big-0"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_partial_success_is_counted_and_not_resent(
    protocol: str,
    collector: FakeCollector,
    fake_wal: FakeWAL,
    contexts: ContextStore,
    make_sender: SenderFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """partial_success: the batch is acked once, the rejected count is in stats and a warning is logged."""
    collector.partial_next(1, rejected=3, message="3 records had bad timestamps")
    ids = fill(fake_wal, contexts, 10)
    outcomes: list[tuple[int, str]] = []
    with caplog.at_level(logging.WARNING, logger="otel_audit"):
        sender = make_sender(
            fake_wal, transport_for(protocol, collector), on_export=lambda n, d, o: outcomes.append((n, o))
        )
        assert sender.force_flush(5)
    assert collector.record_ids() == ids and len(collector.requests) == 1
    stats = sender.stats()
    assert stats["partial_rejected"] == 3 and stats["exported"] == 7
    assert stats["partial_last_message"] == "3 records had bad timestamps"
    assert (3, "partial_rejected") in outcomes and (7, "success") in outcomes
    assert any("partial_success" in r.getMessage() for r in caplog.records)


def test_misconfiguration_errors_never_dead_letter(
    collector: FakeCollector, fake_wal: FakeWAL, contexts: ContextStore, make_sender: SenderFactory
) -> None:
    """UNAUTHENTICATED, PERMISSION_DENIED, UNIMPLEMENTED, INTERNAL: not about the records, so retried, never dead-lettered."""
    for code in (
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
    ):
        collector.fail_next(2, grpc_code=code)
    ids = fill(fake_wal, contexts, 20)
    sender = make_sender(fake_wal, transport_for("grpc", collector))
    assert sender.force_flush(10)
    assert collector.record_ids() == ids
    assert fake_wal.dead == {}
    assert sender.stats()["retries"] == 8


@pytest.mark.parametrize("status", [301, 307, 401, 403, 404, 500])
def test_http_redirects_and_endpoint_errors_are_retried_not_dead_lettered(
    status: int,
    collector: FakeCollector,
    fake_wal: FakeWAL,
    contexts: ContextStore,
    make_sender: SenderFactory,
) -> None:
    """3xx is not success and 401/403/404/500 are not the records' fault: records wait, then flow."""
    collector.fail_next(2, http_status=status)
    ids = fill(fake_wal, contexts, 5)
    sender = make_sender(fake_wal, transport_for("http", collector))
    assert sender.force_flush(10)
    assert collector.record_ids() == ids
    assert fake_wal.dead == {}
    assert sender.stats()["retries"] == 2


def test_unbuildable_records_are_dead_lettered_with_the_reason(
    collector: FakeCollector, fake_wal: FakeWAL, contexts: ContextStore, make_sender: SenderFactory
) -> None:
    """A lost context file and an unknown payload version send those records to dead-letter; neighbours flow."""
    ids = fill(fake_wal, contexts, 3)
    fake_wal.append(encode_payload(b"\xee" * 8, record("orphan")))
    fake_wal.append(b"\x07" + encode_payload(b"\x00" * 8, record("future"))[1:])
    ids += fill(fake_wal, contexts, 3, prefix="after")
    sender = make_sender(fake_wal, transport_for("grpc", collector))
    assert sender.force_flush(5)
    assert collector.record_ids() == ids
    assert sorted(fake_wal.dead) == [4, 5]
    assert "eeeeeeeeeeeeeeee" in fake_wal.dead[4][1] and "does not exist" in fake_wal.dead[4][1]
    assert "version 7" in fake_wal.dead[5][1]


def test_several_contexts_arrive_under_their_own_resources(
    collector: FakeCollector, fake_wal: FakeWAL, contexts: ContextStore, make_sender: SenderFactory
) -> None:
    """Records keep the resource they were appended with."""
    a, b = contexts.put(context_blob("svc-a")), contexts.put(context_blob("svc-b"))
    fake_wal.append_many([encode_payload(cid, record(f"{n}")) for n, cid in enumerate([a, a, b, a])])
    assert make_sender(fake_wal, transport_for("grpc", collector)).force_flush(5)
    assert collector.record_ids() == ["0", "1", "2", "3"]
    (request,) = collector.accepted
    groups = [
        (rl.resource.attributes[0].value.string_value, [record_id(r) for r in rl.scope_logs[0].log_records])
        for rl in request.resource_logs
    ]
    assert groups == [("svc-a", ["0", "1"]), ("svc-b", ["2"]), ("svc-a", ["3"])]


def test_hanging_collector_does_not_hold_shutdown(
    collector: FakeCollector, fake_wal: FakeWAL, contexts: ContextStore, make_sender: SenderFactory
) -> None:
    """gRPC: shutdown(1.0) returns within its bound while a request hangs; nothing is acked."""
    collector.hang()
    fill(fake_wal, contexts, 10)
    sender = make_sender(fake_wal, transport_for("grpc", collector), export_timeout=60.0)
    deadline = time.monotonic() + 5
    while not collector.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    start = time.monotonic()
    sender.shutdown(1.0)
    assert time.monotonic() - start < 1.3
    assert fake_wal.acked_seq == 0
    collector.release()


def test_hanging_http_collector_does_not_hold_shutdown(
    collector: FakeCollector, fake_wal: FakeWAL, contexts: ContextStore, make_sender: SenderFactory
) -> None:
    """HTTP: shutdown is bounded too (the request in flight is abandoned to its own timeout)."""
    collector.hang(timeout=3)
    fill(fake_wal, contexts, 10)
    sender = make_sender(fake_wal, transport_for("http", collector), export_timeout=2.0)
    time.sleep(0.2)
    start = time.monotonic()
    sender.shutdown(0.5)
    assert time.monotonic() - start < 0.8
    assert fake_wal.acked_seq == 0


def test_hang_shorter_than_shutdown_is_a_retryable_deadline(
    collector: FakeCollector, fake_wal: FakeWAL, contexts: ContextStore, make_sender: SenderFactory
) -> None:
    """A request that outlives export_timeout fails DEADLINE_EXCEEDED and is retried once the collector answers."""
    collector.hang()
    ids = fill(fake_wal, contexts, 5)
    sender = make_sender(fake_wal, transport_for("grpc", collector), export_timeout=0.2)
    deadline = time.monotonic() + 5
    while "DEADLINE_EXCEEDED" not in sender.stats()["last_error"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "DEADLINE_EXCEEDED" in sender.stats()["last_error"]
    collector.release()
    assert sender.force_flush(5)
    assert list(dict.fromkeys(collector.record_ids())) == ids


def test_shutdown_interrupts_a_long_backoff(
    collector: FakeCollector, fake_wal: FakeWAL, contexts: ContextStore, make_sender: SenderFactory
) -> None:
    """A collector asking for a 60 s wait does not delay shutdown."""
    collector.fail_next(1, retry_after=60)
    fill(fake_wal, contexts, 1)
    sender = make_sender(fake_wal, transport_for("grpc", collector), max_backoff=30.0)
    deadline = time.monotonic() + 5
    while sender.stats()["retries"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    start = time.monotonic()
    sender.shutdown(5.0)
    assert time.monotonic() - start < 0.5
    assert fake_wal.acked_seq == 0


def test_force_flush_times_out_while_the_collector_is_down(
    collector: FakeCollector, fake_wal: FakeWAL, contexts: ContextStore, make_sender: SenderFactory
) -> None:
    """force_flush reports False instead of pretending; the records stay pending."""
    collector.down()
    fill(fake_wal, contexts, 3)
    sender = make_sender(fake_wal, transport_for("grpc", collector))
    assert not sender.force_flush(0.3)
    assert not sender.wait_delivered(1, 0.05)
    assert sender.delivered_seq == 0
    assert "UNAVAILABLE" in sender.stats()["last_error"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_headers_reach_the_collector_and_never_the_stats_or_logs(
    protocol: str,
    collector: FakeCollector,
    fake_wal: FakeWAL,
    contexts: ContextStore,
    make_sender: SenderFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Credentials go on the wire as headers/metadata only."""
    secret = "Bearer s3cr3t-t0ken"
    collector.fail_next(2, grpc_code=grpc.StatusCode.UNAUTHENTICATED, http_status=401)
    fill(fake_wal, contexts, 2)
    with caplog.at_level(logging.DEBUG):
        sender = make_sender(
            fake_wal, transport_for(protocol, collector, headers={"Authorization": secret, "X-Tenant": "t1"})
        )
        assert sender.force_flush(5)
    assert all(r.headers.get("authorization") == secret for r in collector.requests)
    assert all(r.headers.get("x-tenant") == "t1" for r in collector.requests)
    assert secret not in repr(sender.stats())
    assert "s3cr3t" not in caplog.text


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_gzip_compression_is_accepted(
    protocol: str,
    collector: FakeCollector,
    fake_wal: FakeWAL,
    contexts: ContextStore,
    make_sender: SenderFactory,
) -> None:
    """gzip requests arrive intact (HTTP bodies are smaller on the wire)."""
    ids = fill(fake_wal, contexts, 200, extra_bytes=200)
    sender = make_sender(fake_wal, transport_for(protocol, collector, compression="gzip"))
    assert sender.force_flush(5)
    assert collector.record_ids() == ids
    if protocol == "http":
        request = collector.requests[0]
        assert request.headers["content-encoding"] == "gzip"
        assert request.body_bytes < 200 * 200 / 4


def test_callback_errors_do_not_stop_delivery(
    collector: FakeCollector, fake_wal: FakeWAL, contexts: ContextStore, make_sender: SenderFactory
) -> None:
    """A broken metrics hook is logged, delivery goes on."""

    def broken(n: int, d: float, o: str) -> None:
        raise RuntimeError("metrics bug")

    ids = fill(fake_wal, contexts, 5)
    sender = make_sender(fake_wal, transport_for("grpc", collector), on_export=broken)
    assert sender.force_flush(5)
    assert collector.record_ids() == ids


def test_wal_errors_restart_the_loop_from_the_checkpoint(
    collector: FakeCollector,
    fake_wal: FakeWAL,
    contexts: ContextStore,
    make_sender: SenderFactory,
    tmp_path: Path,
) -> None:
    """A failing ack (disk trouble) does not kill the thread: it resumes from the checkpoint."""
    ids = fill(fake_wal, contexts, 10)
    real_ack = fake_wal.ack
    calls = {"n": 0}

    def flaky_ack(seq: int) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("EIO")
        real_ack(seq)

    fake_wal.ack = flaky_ack  # type: ignore[method-assign]
    sender = make_sender(fake_wal, transport_for("grpc", collector), max_batch_records=5)
    assert sender.force_flush(5)
    assert list(dict.fromkeys(collector.record_ids())) == ids
    assert "EIO" in sender.stats()["last_error"]
