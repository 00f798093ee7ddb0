"""The stdlib logging bridge: extra keys become audit attributes, records go through the WAL, nothing raises."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.sdk.trace import TracerProvider

import otel_audit
import otel_audit.api
from otel_audit.config import resolve_config
from otel_audit.logging_bridge import AuditLogHandler, event_name_for
from otel_audit.record import build_audit_log_record
from otel_audit.testing import FakeCollector


@pytest.fixture
def collector() -> Iterator[FakeCollector]:
    with FakeCollector() as c:
        yield c


@pytest.fixture
def audit(tmp_path: Path, collector: FakeCollector) -> Iterator[otel_audit.Audit]:
    audit = otel_audit.Audit(
        resolve_config(service_name="bridge-test", wal_dir=tmp_path / "wal", endpoint=collector.grpc_endpoint)
    )
    yield audit
    audit.shutdown(timeout=2.0)


@pytest.fixture
def audit_logger(request: pytest.FixtureRequest) -> Iterator[logging.Logger]:
    """A fresh logger that does not propagate to the root (pytest's capture must not see our records)."""
    logger = logging.getLogger(f"audit.test.{request.node.name}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger
    for handler in list(logger.handlers):
        logger.removeHandler(handler)


def attributes(record: LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in record.attributes:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind) if kind else None
    return out


def received(collector: FakeCollector, n: int) -> list[LogRecord]:
    assert collector.wait_for(n, 10), f"received {len(collector.records)} records, expected {n}"
    return [r for r in collector.records if r.event_name != "audit.stream.end"]


class Failures(AuditLogHandler):
    """Collects what would go to stderr, so tests can assert on it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.errors: list[logging.LogRecord] = []

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        self.errors.append(record)


def test_short_extra_keys_map_onto_audit_attributes_and_the_message_into_body(
    audit: otel_audit.Audit, audit_logger: logging.Logger, collector: FakeCollector
) -> None:
    audit_logger.addHandler(AuditLogHandler(audit))
    audit_logger.info(
        "refund of %s issued",
        "12.50 EUR",
        extra={
            "event_name": "payment.refund",
            "actor_id": "u-1",
            "actor_type": "user",
            "action": "REFUND",
            "outcome": "success",
            "target_id": "order/42",
            "target_type": "order",
            "source_id": "203.0.113.9",
            "payment.amount": 12.5,
            "colour": "ignored: not dotted, not a short key",
        },
    )
    [record] = received(collector, 1)
    attrs = attributes(record)
    assert record.event_name == "payment.refund"
    assert record.body.string_value == "refund of 12.50 EUR issued"
    assert record.severity_number == 0 and record.severity_text == ""
    assert attrs["audit.actor.id"] == "u-1"
    assert attrs["audit.action"] == "REFUND"
    assert attrs["audit.outcome"] == "success"
    assert attrs["audit.target.id"] == "order/42"
    assert attrs["audit.target.type"] == "order"
    assert (attrs["audit.source.id"], attrs["audit.source.type"]) == ("203.0.113.9", "ipv4")
    assert attrs["payment.amount"] == 12.5
    assert "colour" not in attrs
    assert attrs["audit.record.id"]


def test_full_audit_keys_attributes_mapping_logger_name_as_event_and_defaults(
    audit: otel_audit.Audit, collector: FakeCollector
) -> None:
    logger = logging.getLogger("Billing.Audit")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = AuditLogHandler(audit, defaults={"actor_type": "service"})
    logger.addHandler(handler)
    try:
        logger.info(
            "config changed",
            extra={
                "audit.actor.id": "deployer",
                "audit.action": "UPDATE",
                "audit.record.id": "fixed-id-1",
                "attributes": {"config.key": "max_users", "config.new": 20},
            },
        )
    finally:
        logger.removeHandler(handler)
    [record] = received(collector, 1)
    attrs = attributes(record)
    assert record.event_name == "billing.audit"
    assert attrs["audit.actor.type"] == "service"
    assert attrs["audit.outcome"] == "unknown"
    assert attrs["audit.record.id"] == "fixed-id-1"
    assert (attrs["config.key"], attrs["config.new"]) == ("max_users", 20)
    assert handler.emitted == 1


def test_record_carries_the_current_span_and_exception_details(
    audit: otel_audit.Audit, audit_logger: logging.Logger, collector: FakeCollector
) -> None:
    audit_logger.addHandler(AuditLogHandler(audit))
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("delete-user") as span:
        try:
            raise PermissionError("not an admin")
        except PermissionError:
            audit_logger.exception("delete refused", extra={"action": "DELETE", "outcome": "failure"})
    [record] = received(collector, 1)
    assert int.from_bytes(record.trace_id, "big") == span.get_span_context().trace_id
    assert int.from_bytes(record.span_id, "big") == span.get_span_context().span_id
    attrs = attributes(record)
    assert attrs["exception.type"] == "PermissionError"
    assert attrs["exception.message"] == "not an admin"
    assert "raise PermissionError" in attrs["exception.stacktrace"]


def test_invalid_record_goes_to_handle_error_and_never_raises(
    audit: otel_audit.Audit, audit_logger: logging.Logger, collector: FakeCollector
) -> None:
    handler = Failures(audit)
    audit_logger.addHandler(handler)
    audit_logger.info("no action given", extra={"outcome": "success"})
    audit_logger.info("lower-case action", extra={"action": "refund"})
    audit_logger.info("fine", extra={"action": "READ", "outcome": "success"})
    assert (handler.failed, handler.emitted) == (2, 1)
    assert [r.getMessage() for r in handler.errors] == ["no action given", "lower-case action"]
    assert len(received(collector, 1)) == 1


def test_wal_that_cannot_persist_is_counted_not_raised_even_when_fail_closed(
    tmp_path: Path, audit_logger: logging.Logger
) -> None:
    audit = otel_audit.Audit(
        resolve_config(
            service_name="bridge-full",
            wal_dir=tmp_path / "full",
            endpoint="http://127.0.0.1:9",
            max_bytes=4096,
            segment_bytes=4096,
            full_policy="raise",
            fail_closed=True,
        )
    )
    try:
        handler = Failures(audit)
        audit_logger.addHandler(handler)
        for i in range(30):
            audit_logger.info("login %d", i, extra={"action": "LOGIN", "outcome": "success"})
        assert handler.emitted > 0
        assert handler.failed > 0
        assert handler.emitted + handler.failed == 30
        assert isinstance(handler.errors[0], logging.LogRecord)
    finally:
        audit.shutdown(timeout=1.0)


def test_own_log_records_are_ignored_so_a_root_handler_cannot_loop(
    audit: otel_audit.Audit, collector: FakeCollector
) -> None:
    handler = AuditLogHandler(audit)
    handler.handle(logging.LogRecord("otel_audit.wal", logging.WARNING, __file__, 1, "wal is full", (), None))
    handler.handle(logging.LogRecord("otel_audit", logging.ERROR, __file__, 1, "dropped", (), None))
    assert (handler.emitted, handler.failed) == (0, 0)
    assert audit.stats()["last_seq"] == 0


def test_default_audit_and_named_stream_are_used_when_none_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, audit_logger: logging.Logger, collector: FakeCollector
) -> None:
    monkeypatch.setattr(otel_audit.api, "_global", None)
    audit = otel_audit.configure(
        service_name="bridge-default", wal_dir=tmp_path / "d", endpoint=collector.grpc_endpoint
    )
    try:
        audit_logger.addHandler(AuditLogHandler(logger_name="security"))
        audit_logger.warning(
            "login failed", extra={"actor_id": "eve", "action": "LOGIN", "outcome": "failure"}
        )
        [record] = received(collector, 1)
        assert attributes(record)["audit.actor.id"] == "eve"
        chain = audit.get_audit_logger("security").chain
        assert chain is not None and chain.last_number == 1
    finally:
        audit.shutdown(timeout=2.0)


@pytest.mark.parametrize(
    ("logger_name", "event_name"),
    [
        ("audit", "audit"),
        ("My.Audit", "my.audit"),
        ("__main__", "main"),
        ("app.v2 events", "app.v2_events"),
        ("9lives._x", "lives.x"),
        ("", "log.record"),
    ],
)
def test_logger_names_become_valid_event_names(logger_name: str, event_name: str) -> None:
    assert event_name_for(logger_name) == event_name
    build_audit_log_record(event_name, actor_id=None, actor_type="user", action="READ", outcome="success")
