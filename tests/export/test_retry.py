"""The retry policy: full-jitter exponential backoff, server-requested delays, no give-up, prompt stop."""

from __future__ import annotations

import threading
import time

import grpc
import pytest

from otel_audit.exceptions import ExportError
from otel_audit.export.contexts import ContextStore
from otel_audit.export.retry import RetryInterrupted, RetryPolicy
from otel_audit.testing import FakeCollector

from .conftest import SenderFactory, fill, transport_for
from .fakewal import FakeWAL


def failing(times: int, **error: object) -> tuple[list[int], object]:
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise ExportError("down", retryable=True, **error)  # type: ignore[arg-type]
        return "ok"

    return calls, fn


def test_waits_grow_exponentially_with_full_jitter_up_to_the_cap() -> None:
    """Wait n is uniform in [0, min(cap, initial * 2**(n-1))]: bounded, growing, and really random."""
    policy = RetryPolicy(initial_backoff=0.5, max_backoff=30.0)
    for attempt in range(1, 25):
        window = min(30.0, 0.5 * 2 ** (attempt - 1))
        samples = [policy.wait_seconds(attempt) for _ in range(200)]
        assert all(0 <= s <= window for s in samples)
        assert max(samples) > window * 0.8 and min(samples) < window * 0.2  # full jitter, not +-20%


def test_retries_never_stop_on_retryable_errors() -> None:
    """500 failures in a row, then success: the policy never gives up."""
    slept: list[float] = []
    calls, fn = failing(500)
    policy = RetryPolicy(sleep=slept.append)
    assert policy.call(fn) == "ok"  # type: ignore[arg-type]
    assert len(calls) == 501 and len(slept) == 500
    assert list(policy.schedule)[-500:] == slept
    assert max(slept) <= 30.0


def test_server_requested_delay_is_a_floor_and_is_clamped() -> None:
    """retry_after raises the wait to at least its value, but never beyond max_retry_after."""
    slept: list[float] = []
    policy = RetryPolicy(sleep=slept.append, max_retry_after=120.0)
    policy.call(failing(3, retry_after=7.0)[1])  # type: ignore[arg-type]
    assert len(slept) == 3 and all(7.0 <= s <= 30.0 for s in slept)
    slept.clear()
    policy.call(failing(1, retry_after=10_000.0)[1])  # type: ignore[arg-type]
    assert slept == [120.0]


def test_permanent_errors_are_raised_at_once() -> None:
    """retryable=False is not retried."""
    slept: list[float] = []
    calls: list[int] = []

    def fn() -> None:
        calls.append(1)
        raise ExportError("bad record", retryable=False, status="INVALID_ARGUMENT")

    with pytest.raises(ExportError, match="bad record"):
        RetryPolicy(sleep=slept.append).call(fn)
    assert calls == [1] and slept == []


def test_other_exceptions_are_not_retried() -> None:
    """Only ExportError is the transport's language; anything else is a bug and propagates."""
    with pytest.raises(KeyError):
        RetryPolicy(sleep=lambda s: None).call(lambda: {}["x"])


def test_stop_event_interrupts_a_long_wait_promptly() -> None:
    """A 60 s server-requested wait ends within milliseconds of shutdown."""
    stop = threading.Event()
    policy = RetryPolicy(stop_event=stop)
    threading.Timer(0.1, stop.set).start()
    start = time.monotonic()
    with pytest.raises(RetryInterrupted):
        policy.call(failing(10, retry_after=60.0)[1])  # type: ignore[arg-type]
    assert time.monotonic() - start < 0.5


def test_stop_event_set_before_the_wait_prevents_another_attempt() -> None:
    """With a fake sleep, a stop requested during the attempt still ends the loop before the next try."""
    stop = threading.Event()
    calls: list[int] = []

    def fn() -> None:
        calls.append(1)
        stop.set()
        raise ExportError("down", retryable=True)

    with pytest.raises(RetryInterrupted):
        RetryPolicy(stop_event=stop, sleep=lambda s: None).call(fn)
    assert calls == [1]


def test_bad_policy_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(initial_backoff=0)
    with pytest.raises(ValueError):
        RetryPolicy(initial_backoff=5, max_backoff=1)


# -- the same policy seen through the sender and the collector, with an injected sleep --------------


def test_grpc_retry_info_sets_the_sender_waits(
    collector: FakeCollector, fake_wal: FakeWAL, contexts: ContextStore, make_sender: SenderFactory
) -> None:
    """UNAVAILABLE + RetryInfo(7 s) three times: three waits of at least 7 s, no wall time spent."""
    slept: list[float] = []
    collector.fail_next(3, grpc_code=grpc.StatusCode.UNAVAILABLE, retry_after=7.0)
    ids = fill(fake_wal, contexts, 5)
    sender = make_sender(fake_wal, transport_for("grpc", collector), sleep=slept.append, max_backoff=30.0)
    assert sender.force_flush(5)
    assert collector.record_ids() == ids
    assert len(slept) == 3 and all(7.0 <= s <= 30.0 for s in slept)
    assert list(sender.retry_policy.schedule) == slept


def test_resource_exhausted_with_retry_info_is_throttling_not_rejection(
    collector: FakeCollector, fake_wal: FakeWAL, contexts: ContextStore, make_sender: SenderFactory
) -> None:
    """RESOURCE_EXHAUSTED carrying RetryInfo is retried after the delay; nothing is dead-lettered."""
    slept: list[float] = []
    collector.fail_next(2, grpc_code=grpc.StatusCode.RESOURCE_EXHAUSTED, retry_after=2.5)
    ids = fill(fake_wal, contexts, 5)
    sender = make_sender(fake_wal, transport_for("grpc", collector), sleep=slept.append)
    assert sender.force_flush(5)
    assert collector.record_ids() == ids and fake_wal.dead == {}
    assert len(slept) == 2 and all(s >= 2.5 for s in slept)


@pytest.mark.parametrize(("status", "retry_after"), [(429, 5), (503, 3), (502, 4), (504, 2)])
def test_http_retry_after_sets_the_sender_waits(
    status: int,
    retry_after: int,
    collector: FakeCollector,
    fake_wal: FakeWAL,
    contexts: ContextStore,
    make_sender: SenderFactory,
) -> None:
    """429/502/503/504 with Retry-After: each wait is at least the header's seconds."""
    slept: list[float] = []
    collector.fail_next(2, http_status=status, retry_after=retry_after)
    ids = fill(fake_wal, contexts, 5)
    sender = make_sender(fake_wal, transport_for("http", collector), sleep=slept.append, max_backoff=30.0)
    assert sender.force_flush(5)
    assert collector.record_ids() == ids
    assert len(slept) == 2 and all(retry_after <= s <= 30.0 for s in slept)
    assert sender.stats()["retries"] == 2


def test_without_server_delay_the_waits_follow_the_jittered_schedule(
    collector: FakeCollector, fake_wal: FakeWAL, contexts: ContextStore, make_sender: SenderFactory
) -> None:
    """Plain 503s: waits stay within the exponential windows 0.5, 1, 2, 4, 8 s."""
    slept: list[float] = []
    collector.fail_next(5, http_status=503)
    fill(fake_wal, contexts, 1)
    sender = make_sender(
        fake_wal, transport_for("http", collector), sleep=slept.append, initial_backoff=0.5, max_backoff=30.0
    )
    assert sender.force_flush(5)
    assert len(slept) == 5
    assert all(0 <= s <= 0.5 * 2**i for i, s in enumerate(slept))
