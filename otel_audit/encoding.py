"""OTLP protobuf encoding for the SDK path: LogRecords from SDK records, and per-stream context blobs."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope as PB2Scope
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as PB2Resource
from opentelemetry.sdk._logs import ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

_logger = logging.getLogger(__name__)


def encode_sdk_log_record(record: ReadableLogRecord | ReadWriteLogRecord) -> LogRecord:
    """Encode one SDK log record exactly as the SDK's OTLP `encode_logs` would, but faster.

    Equality (message and serialized bytes) with the SDK encoder is pinned by a test. Like the
    SDK, an attribute whose value cannot be encoded is logged and skipped, and a None body is
    written as an empty (present) AnyValue; resource and scope are not part of the LogRecord
    (see `encode_context`).
    """
    log = record.log_record
    pb = LogRecord()
    if log.timestamp:
        pb.time_unix_nano = log.timestamp
    if log.observed_timestamp:
        pb.observed_time_unix_nano = log.observed_timestamp
    if log.severity_number is not None and log.severity_number.value:
        pb.severity_number = log.severity_number.value  # type: ignore[assignment]
    if log.severity_text:
        pb.severity_text = log.severity_text
    _set_value(pb.body, log.body)
    if log.attributes:
        _add_attributes(pb.attributes, log.attributes)
    dropped = record.dropped_attributes
    if dropped:
        pb.dropped_attributes_count = dropped
    flags = int(log.trace_flags) if log.trace_flags is not None else 0
    if flags:
        pb.flags = flags
    if log.trace_id:
        pb.trace_id = log.trace_id.to_bytes(16, "big")
    if log.span_id:
        pb.span_id = log.span_id.to_bytes(8, "big")
    if log.event_name:
        pb.event_name = log.event_name
    return pb


def _add_attributes(target: Any, attributes: Mapping[str, Any]) -> None:
    add = target.add
    for key, value in attributes.items():
        kv = add(key=key)
        try:
            if type(value) is str:
                kv.value.string_value = value
            else:
                _set_value(kv.value, value)
        except Exception:  # the SDK encoder logs and skips such an attribute; so do we
            _logger.exception("Failed to encode key %s", key)
            del target[len(target) - 1]


def _set_value(target: AnyValue, value: Any) -> None:
    # Mirrors the SDK's _encode_value branch order (bool before str before int...), so odd
    # inputs (a str subclass, a tuple of mappings) encode the same way.
    if value is None:
        target.SetInParent()
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, bytes):
        target.bytes_value = value
    elif isinstance(value, Sequence):
        array = target.array_value
        array.SetInParent()
        add = array.values.add
        for item in value:
            _set_value(add(), item)
    elif isinstance(value, Mapping):
        kvlist = target.kvlist_value
        kvlist.SetInParent()
        add = kvlist.values.add
        for key, item in value.items():
            _set_value(add(key=str(key)).value, item)
    else:
        raise TypeError(f"Invalid type {type(value)} of value {value}")


def encode_context(resource: Resource, scope: InstrumentationScope | None) -> bytes:
    """Serialize the envelope records share: a ResourceLogs with one ScopeLogs and no records.

    The bytes are deterministic for equal inputs, so they can key a "context" table stored once
    per distinct value. The layout matches the SDK encoder's: `ResourceLogs{resource=1,
    scope_logs=2: ScopeLogs{scope=1, schema_url=3}, schema_url=3}`; a request builder parses it
    (`ResourceLogs.FromString`) or splices record bytes as field 2 of the ScopeLogs. A None scope
    is written as an empty InstrumentationScope, as the SDK does.
    """
    blob: bytes = encode_context_message(resource, scope).SerializeToString()
    return blob


def encode_context_message(resource: Resource, scope: InstrumentationScope | None) -> ResourceLogs:
    """The ResourceLogs behind `encode_context`, for callers that append LogRecords to it."""
    pb_resource = PB2Resource()
    _add_attributes(pb_resource.attributes, resource.attributes)
    pb_scope = PB2Scope()
    scope_schema_url = ""
    if scope is not None:
        if scope.name:
            pb_scope.name = scope.name
        if scope.version:
            pb_scope.version = scope.version
        if scope.attributes:
            _add_attributes(pb_scope.attributes, scope.attributes)
        scope_schema_url = scope.schema_url or ""
    scope_logs = ScopeLogs(scope=pb_scope, schema_url=scope_schema_url)
    return ResourceLogs(resource=pb_resource, scope_logs=[scope_logs], schema_url=resource.schema_url or "")


def default_resource(service_name: str, extra: Mapping[str, Any] | None = None) -> Resource:
    """A Resource with `service.name` and `extra`, merged with OTEL_RESOURCE_ATTRIBUTES and SDK info.

    `extra` wins over the environment; `service_name` wins over both (it is the caller's choice).
    """
    attributes: dict[str, Any] = dict(extra or {})
    attributes[SERVICE_NAME] = service_name
    return Resource.create(attributes)


__all__ = ["default_resource", "encode_context", "encode_context_message", "encode_sdk_log_record"]
