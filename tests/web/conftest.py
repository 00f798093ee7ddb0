"""Fixtures of the web integration tests: a fake collector, a real pipeline, an SDK tracer that keeps spans."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import otel_audit
from otel_audit.config import resolve_config
from otel_audit.testing import FakeCollector


@pytest.fixture
def collector() -> Iterator[FakeCollector]:
    with FakeCollector() as c:
        yield c


AuditFactory = Callable[..., otel_audit.Audit]


@pytest.fixture
def make_audit(tmp_path: Path, collector: FakeCollector) -> Iterator[AuditFactory]:
    """Build Audits on a fresh WAL sending to the fake collector; all are shut down after the test."""
    made: list[otel_audit.Audit] = []

    def make(**kwargs: Any) -> otel_audit.Audit:
        options: dict[str, Any] = {
            "service_name": "web-test",
            "wal_dir": tmp_path / f"wal-{len(made)}",
            "endpoint": collector.grpc_endpoint,
            "retry_max_backoff": 1.0,
            **kwargs,
        }
        audit = otel_audit.Audit(resolve_config(**options))
        made.append(audit)
        return audit

    yield make
    for audit in made:
        audit.shutdown(timeout=0.5)


@pytest.fixture
def audit(make_audit: AuditFactory) -> otel_audit.Audit:
    return make_audit()


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(spans: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return provider


def attributes(record: LogRecord) -> dict[str, Any]:
    """A received record's attributes as python values."""
    out: dict[str, Any] = {}
    for kv in record.attributes:
        kind = kv.value.WhichOneof("value")
        value = getattr(kv.value, kind) if kind else None
        if kind == "array_value":
            value = [getattr(v, v.WhichOneof("value")) for v in kv.value.array_value.values]
        out[kv.key] = value
    return out


def http_records(collector: FakeCollector, n: int, timeout: float = 10.0) -> list[LogRecord]:
    """Wait for n audit records of HTTP requests (stream-end records excluded) and return them."""
    assert collector.wait_for(n, timeout), (
        f"collector received {len(collector.records)} records, expected {n}"
    )
    return [r for r in collector.records if r.event_name == "http.request"]


def server_spans(spans: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
