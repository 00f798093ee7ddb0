"""The draft's metrics (and ours) reach whatever MeterProvider the application installed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import otel_audit
from otel_audit.testing import FakeCollector

from .conftest import LOGIN

_reader = InMemoryMetricReader()


@pytest.fixture(scope="module")
def reader() -> InMemoryMetricReader:
    # The global provider can be set once per process; the pipeline's meter is a proxy bound to it.
    metrics.set_meter_provider(MeterProvider(metric_readers=[_reader]))
    return _reader


def _points(reader: InMemoryMetricReader) -> dict[str, Any]:
    data = reader.get_metrics_data()
    out: dict[str, Any] = {}
    assert data is not None
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            if sm.scope.name != "otel_audit":
                continue
            for metric in sm.metrics:
                out[metric.name] = list(metric.data.data_points)
    return out


def test_emitted_exported_dropped_depth_and_duration_are_reported(
    reader: InMemoryMetricReader, make_audit: Callable[..., otel_audit.Audit], collector: FakeCollector
) -> None:
    audit = make_audit()
    for _ in range(10):
        audit.record("user.login.success", **LOGIN)
    assert audit.force_flush(10)
    points = _points(reader)
    assert sum(p.value for p in points["audit.records.emitted"]) >= 10
    assert sum(p.value for p in points["audit.records.exported"]) >= 10
    assert "audit.queue.depth" in points and "otel_audit.wal.backlog.bytes" in points
    assert sum(p.count for p in points["audit.export.duration"]) >= 1
