"""The SDK-path encoder matches the SDK's own OTLP encoder byte for byte."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.proto.logs.v1.logs_pb2 import ResourceLogs
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel_audit.encoding import default_resource, encode_context, encode_sdk_log_record


def _emit(**kwargs: Any) -> ReadableLogRecord:
    provider = LoggerProvider(resource=Resource.create({"service.name": "svc", "k": [1, 2]}))
    exporter = InMemoryLogRecordExporter()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    provider.get_logger("lib", "1.2", schema_url="https://opentelemetry.io/schemas/1.30.0").emit(**kwargs)
    (record,) = exporter.get_finished_logs()
    return record


CASES: list[dict[str, Any]] = [
    {},
    {
        "body": "hello",
        "event_name": "user.login",
        "severity_number": SeverityNumber.INFO,
        "severity_text": "INFO",
    },
    {
        "body": {"nested": [1, 2.5, True, b"\x00\xff", "s"], "m": {"a": None}},
        "attributes": {
            "s": "x",
            "i": -(2**63),
            "f": 1.5,
            "b": False,
            "bytes": b"ab",
            "arr": ["a", "b"],
            "t": (1, 2),
        },
        "timestamp": 1_700_000_000_123_456_789,
        "observed_timestamp": 1_700_000_000_223_456_789,
    },
    {"body": b"raw", "attributes": {"empty_list": [], "unicode": "üñí€𝄞"}},
]


@pytest.mark.parametrize("kwargs", CASES)
def test_encode_sdk_log_record_equals_the_sdk_encoder(kwargs: dict[str, Any]) -> None:
    """Our record encoding is the same message and the same bytes as encode_logs produces."""
    record = _emit(**kwargs)
    expected = encode_logs([record]).resource_logs[0].scope_logs[0].log_records[0]
    ours = encode_sdk_log_record(record)
    assert ours == expected
    assert ours.SerializeToString() == expected.SerializeToString()


def test_encode_sdk_log_record_carries_the_active_span() -> None:
    """Trace and span ids of the active span reach the encoded record, as with the SDK encoder."""
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("op") as span:
        record = _emit(body="in span")
    context = span.get_span_context()
    ours = encode_sdk_log_record(record)
    assert ours.trace_id == context.trace_id.to_bytes(16, "big")
    assert ours.span_id == context.span_id.to_bytes(8, "big")
    assert ours.flags == int(context.trace_flags)
    assert ours == encode_logs([record]).resource_logs[0].scope_logs[0].log_records[0]


def test_encode_sdk_log_record_accepts_a_read_write_record() -> None:
    """A ReadWriteLogRecord (what processors receive) encodes like its readable twin."""
    readable = _emit(body="rw", attributes={"a": 1})
    writable = ReadWriteLogRecord(readable.log_record, readable.resource, readable.instrumentation_scope)
    assert encode_sdk_log_record(writable) == encode_sdk_log_record(readable)


def test_encode_sdk_log_record_skips_an_unencodable_attribute_like_the_sdk() -> None:
    """An attribute the SDK encoder cannot encode is skipped by both encoders alike."""
    record = _emit(body="x")
    record.log_record.attributes = {"ok": 1, "bad": object(), "big": 2**70}  # type: ignore[assignment]
    expected = encode_logs([record]).resource_logs[0].scope_logs[0].log_records[0]
    assert encode_sdk_log_record(record) == expected
    assert [kv.key for kv in expected.attributes] == ["ok"]


def _context_of_sdk(record: ReadableLogRecord) -> ResourceLogs:
    resource_logs = encode_logs([record]).resource_logs[0]
    del resource_logs.scope_logs[0].log_records[:]
    return resource_logs


def test_encode_context_equals_the_sdk_envelope_without_records() -> None:
    """The context blob is the SDK's ResourceLogs+ScopeLogs with the records taken out."""
    record = _emit(body="x")
    blob = encode_context(record.resource, record.instrumentation_scope)
    assert ResourceLogs.FromString(blob) == _context_of_sdk(record)
    assert blob == _context_of_sdk(record).SerializeToString()


def test_encode_context_with_no_scope_writes_an_empty_scope() -> None:
    """A None scope becomes an empty InstrumentationScope, as the SDK encoder writes it."""
    resource = Resource({"service.name": "svc"}, schema_url="https://example.test/schema")
    blob = encode_context(resource, None)
    message = ResourceLogs.FromString(blob)
    assert message.schema_url == "https://example.test/schema"
    assert len(message.scope_logs) == 1
    assert message.scope_logs[0].HasField("scope")
    assert message.scope_logs[0].scope.name == ""
    assert not message.scope_logs[0].log_records


def test_encode_context_is_deterministic_and_distinguishes_scopes() -> None:
    """Equal inputs give equal bytes (a usable table key); a different scope gives other bytes."""
    resource = default_resource("svc", {"deployment.environment.name": "test"})
    a = encode_context(resource, InstrumentationScope("otel-audit", "0.1.0"))
    assert a == encode_context(resource, InstrumentationScope("otel-audit", "0.1.0"))
    assert a != encode_context(resource, InstrumentationScope("otel-audit", "0.2.0"))


def test_concatenated_records_parse_as_the_sdk_request() -> None:
    """Context bytes plus record bytes (field 2 of ScopeLogs) parse to the SDK's ResourceLogs."""
    record = _emit(body="x", attributes={"a": "b"})
    context = ResourceLogs.FromString(encode_context(record.resource, record.instrumentation_scope))
    context.scope_logs[0].log_records.append(encode_sdk_log_record(record))
    assert context == encode_logs([record]).resource_logs[0]


def test_default_resource_sets_service_name_over_extra() -> None:
    """service_name wins; extra attributes are kept; SDK attributes are added."""
    resource = default_resource("billing", {"service.name": "other", "team": "audit"})
    assert resource.attributes["service.name"] == "billing"
    assert resource.attributes["team"] == "audit"
    assert resource.attributes["telemetry.sdk.language"] == "python"
