"""Context blobs and records built with the OTLP proto classes, as encoding.py builds them."""

from __future__ import annotations

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource


def context_blob(
    service: str = "svc",
    scope: str = "otel_audit",
    *,
    resource_schema: str = "",
    scope_schema: str = "",
    empty_resource: bool = False,
    scope_version: str = "1.0",
) -> bytes:
    resource = Resource() if empty_resource else Resource(attributes=[kv("service.name", service)])
    rl = ResourceLogs(
        resource=resource,
        scope_logs=[
            ScopeLogs(scope=InstrumentationScope(name=scope, version=scope_version), schema_url=scope_schema)
        ],
        schema_url=resource_schema,
    )
    return bytes(rl.SerializeToString())


def kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def record(record_id: str, *, body: str = "", extra_bytes: int = 0) -> bytes:
    rec = LogRecord(
        time_unix_nano=1_700_000_000_000_000_000,
        observed_time_unix_nano=1_700_000_000_000_000_001,
        event_name="user.login.success",
        attributes=[
            kv("audit.record.id", record_id),
            kv("log.record.uid", record_id),
            kv("audit.action", "LOGIN"),
        ],
    )
    if body or extra_bytes:
        rec.body.string_value = body + "x" * extra_bytes
    return bytes(rec.SerializeToString())
