"""Fixtures for the audit API tests: an in-process OTLP receiver and a pipeline that is always shut down."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import otel_audit
from otel_audit.testing import FakeCollector


@pytest.fixture
def collector() -> Iterator[FakeCollector]:
    with FakeCollector() as fc:
        yield fc


@pytest.fixture
def make_audit(tmp_path: Path, collector: FakeCollector) -> Iterator[Callable[..., otel_audit.Audit]]:
    made: list[otel_audit.Audit] = []

    def make(**kwargs: Any) -> otel_audit.Audit:
        kwargs.setdefault("service_name", "billing")
        kwargs.setdefault("wal_dir", tmp_path / "wal")
        kwargs.setdefault("endpoint", collector.grpc_endpoint)
        kwargs.setdefault("retry_max_backoff", 0.2)
        audit = otel_audit.configure(**kwargs)
        made.append(audit)
        return audit

    yield make
    for audit in made:
        audit.shutdown(timeout=5)


@pytest.fixture(scope="session")
def tracer() -> trace.Tracer:
    provider = TracerProvider()
    return provider.get_tracer("tests")


LOGIN: dict[str, Any] = {
    "actor_id": "u-1",
    "actor_type": "user",
    "action": "LOGIN",
    "outcome": "success",
}
