"""The collector's JSON-lines files parsed back into OTLP protobuf messages, to hash and chain-check them."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel_audit.archive import archive_files

# The collector writes trace/span ids as hex; proto3 JSON (json_format) wants base64 for bytes.
_HEX_ID_FIELDS = frozenset({"traceId", "spanId", "parentSpanId"})
_REQUEST_START = re.compile(r'\{"resource(?:Logs|Spans)"')


def log_records(active: Path) -> list[LogRecord]:
    """Every LogRecord in the archive (rotated files first), in write order, duplicates kept.

    Built field by field from the JSON, independently of otel_audit.archive, so a test that
    recomputes integrity hashes checks the archive against a second reader. Strict: a field this
    reader does not know raises, rather than being silently left out of the hash. A line torn by a
    collector kill is skipped; the request glued after it on the same line is kept.
    """
    out: list[LogRecord] = []
    for obj in _requests(active, "resourceLogs"):
        for resource_logs in obj["resourceLogs"]:
            for scope_logs in resource_logs.get("scopeLogs", []):
                out.extend(_log_record(item) for item in scope_logs.get("logRecords", []))
    return out


def _log_record(obj: dict[str, Any]) -> LogRecord:
    record = LogRecord()
    for key, value in obj.items():
        if key in _INT_FIELDS:
            setattr(record, _INT_FIELDS[key], int(value))
        elif key in _HEX_FIELDS:
            setattr(record, _HEX_FIELDS[key], bytes.fromhex(value))
        elif key == "severityText":
            record.severity_text = value
        elif key == "eventName":
            record.event_name = value
        elif key == "body":
            _any_value(record.body, value)
        elif key == "attributes":
            _key_values(record.attributes, value)
        else:
            raise ValueError(f"archive log record field {key!r} is not handled by this reader")
    return record


_INT_FIELDS = {
    "timeUnixNano": "time_unix_nano",
    "observedTimeUnixNano": "observed_time_unix_nano",
    "severityNumber": "severity_number",
    "droppedAttributesCount": "dropped_attributes_count",
    "flags": "flags",
}
_HEX_FIELDS = {"traceId": "trace_id", "spanId": "span_id"}


def _key_values(target: Any, items: list[dict[str, Any]]) -> None:
    for item in items:
        kv = target.add(key=item.get("key", ""))
        if "value" in item:
            _any_value(kv.value, item["value"])


def _any_value(target: AnyValue, obj: dict[str, Any]) -> None:
    target.SetInParent()
    for kind, value in obj.items():
        if kind == "stringValue":
            target.string_value = value
        elif kind == "intValue":
            target.int_value = int(value)
        elif kind == "boolValue":
            target.bool_value = value
        elif kind == "doubleValue":
            target.double_value = float(value)
        elif kind == "bytesValue":
            target.bytes_value = base64.b64decode(value)
        elif kind == "arrayValue":
            target.array_value.SetInParent()
            for element in value.get("values", []):
                _any_value(target.array_value.values.add(), element)
        elif kind == "kvlistValue":
            target.kvlist_value.SetInParent()
            _key_values(target.kvlist_value.values, value.get("values", []))
        else:
            raise ValueError(f"AnyValue kind {kind!r} is not handled by this reader")


def spans(path: Path) -> list[Span]:
    """Every span in a traces file written by the collector's file exporter, in write order."""
    out: list[Span] = []
    for obj in _requests(path, "resourceSpans"):
        request = json_format.ParseDict(_ids_to_base64(obj), ExportTraceServiceRequest())
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                out.extend(scope_spans.spans)
    return out


def _requests(active: Path, top_key: str) -> Iterator[dict[str, Any]]:
    for path in archive_files(active):
        with open(path, "rb") as stream:
            for line in stream:
                for obj in _objects(line.decode("utf-8", errors="replace")):
                    if isinstance(obj, dict) and top_key in obj:
                        yield obj


def _objects(text: str) -> Iterator[Any]:
    text = text.strip()
    decoder = json.JSONDecoder()
    pos = 0
    while pos < len(text):
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            match = _REQUEST_START.search(text, pos + 1)
            if match is None:
                return
            pos = match.start()
            continue
        yield obj
        while pos < len(text) and text[pos].isspace():
            pos += 1


def _ids_to_base64(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: base64.b64encode(bytes.fromhex(item)).decode("ascii")
            if key in _HEX_ID_FIELDS and isinstance(item, str)
            else _ids_to_base64(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_ids_to_base64(item) for item in value]
    return value
