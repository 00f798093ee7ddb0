"""The canonical form of an audit LogRecord (OTLP/JSON, RFC 8785) that is hashed and signed."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from decimal import Decimal
from json.encoder import encode_basestring
from typing import Any, Final

from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

INTEGRITY_PREFIX: Final = "audit.integrity."

# Python's json string escaping (ensure_ascii=False) is exactly RFC 8785's: only '"', '\\'
# and U+0000..U+001F are escaped, with the same short forms and lowercase \u00xx; everything
# else is written as UTF-8. The property test in tests/test_canonical.py pins this.
json_string = encode_basestring

ValueParts = Mapping[str, "str | None"]
"""Attribute key -> the canonical JSON of its AnyValue (None: the KeyValue has no value)."""


def canonical_bytes(record: LogRecord) -> bytes:
    """The RFC 8785 (JCS) bytes of the record's canonical OTLP/JSON object: hash and sign these.

    See `canonical_object` for the rules and docs/integrity.md for the specification.
    """
    return canonical_bytes_from_parts(record, attribute_parts(record))


def attribute_parts(record: LogRecord) -> dict[str, str | None]:
    """The canonical JSON of each attribute value, integrity attributes left out, last key wins."""
    parts: dict[str, str | None] = {}
    for kv in record.attributes:
        key = kv.key
        if not key.startswith(INTEGRITY_PREFIX):
            parts[key] = any_value_json(kv.value) if kv.HasField("value") else None
    return parts


def canonical_bytes_from_parts(record: LogRecord, parts: ValueParts) -> bytes:
    """Canonical bytes of `record` whose attributes are given pre-rendered in `parts`.

    The fast path for records we build ourselves: the builder renders each value once while
    it still holds the Python value, which avoids walking the protobuf (about 1 µs an
    attribute). `parts` must describe exactly the record's non-integrity attributes; the
    property test checks the builder against `canonical_bytes`.
    """
    # Members in RFC 8785 order: attributes, body, droppedAttributesCount, eventName, flags,
    # observedTimeUnixNano, spanId, timeUnixNano, traceId.
    out = []
    if parts:
        out.append('"attributes":' + _key_values_json(parts))
    if record.HasField("body"):
        body = any_value_json(record.body)
        if body != "{}":  # an unset Body (the SDK writes an empty one) is omitted
            out.append('"body":' + body)
    if record.dropped_attributes_count:
        out.append(f'"droppedAttributesCount":{record.dropped_attributes_count}')
    if record.event_name:
        out.append('"eventName":' + json_string(record.event_name))
    if record.flags:
        out.append(f'"flags":{record.flags}')
    if record.observed_time_unix_nano:
        out.append(f'"observedTimeUnixNano":"{record.observed_time_unix_nano}"')
    if record.span_id:
        out.append(f'"spanId":"{record.span_id.hex()}"')
    if record.time_unix_nano:
        out.append(f'"timeUnixNano":"{record.time_unix_nano}"')
    if record.trace_id:
        out.append(f'"traceId":"{record.trace_id.hex()}"')
    return ("{" + ",".join(out) + "}").encode("utf-8")


def integrity_hash(record: LogRecord) -> bytes:
    """SHA-256 of `canonical_bytes(record)`: the draft's IntegrityHash (32 raw bytes)."""
    return hashlib.sha256(canonical_bytes(record)).digest()


def hash_text(digest: bytes) -> str:
    """The IntegrityHash text form: lowercase hex, as receipts and `audit.sequence.previous_hash` carry it."""
    return digest.hex()


def string_value_json(value: str) -> str:
    """Canonical JSON of an AnyValue holding the string `value`."""
    return '{"stringValue":' + json_string(value) + "}"


def int_value_json(value: int) -> str:
    """Canonical JSON of an AnyValue holding the int64 `value` (a decimal string, as OTLP/JSON)."""
    return f'{{"intValue":"{value}"}}'


def any_value_json(value: AnyValue) -> str:
    """Canonical JSON of one AnyValue: `{"<kind>Value": ...}`, or `{}` when nothing is set."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return '{"stringValue":' + json_string(value.string_value) + "}"
    if kind == "int_value":
        return f'{{"intValue":"{value.int_value}"}}'
    if kind == "bool_value":
        return '{"boolValue":true}' if value.bool_value else '{"boolValue":false}'
    if kind == "double_value":
        return '{"doubleValue":' + double_json(value.double_value) + "}"
    if kind == "bytes_value":
        return '{"bytesValue":"' + base64.b64encode(value.bytes_value).decode("ascii") + '"}'
    if kind == "array_value":
        items = value.array_value.values
        if not items:
            return '{"arrayValue":{}}'
        return '{"arrayValue":{"values":[' + ",".join(any_value_json(item) for item in items) + "]}}"
    if kind == "kvlist_value":
        entries: dict[str, str | None] = {}
        for kv in value.kvlist_value.values:
            entries[kv.key] = any_value_json(kv.value) if kv.HasField("value") else None
        if not entries:
            return '{"kvlistValue":{}}'
        return '{"kvlistValue":{"values":' + _key_values_json(entries) + "}}"
    return "{}"


def double_json(number: float) -> str:
    """A double as RFC 8785 writes it (ECMAScript Number::toString); NaN/Infinity as OTLP/JSON strings."""
    if number != number:
        return '"NaN"'
    if number in (float("inf"), float("-inf")):
        return '"Infinity"' if number > 0 else '"-Infinity"'
    if number == 0:
        return "0"
    # repr() gives the shortest digits that round-trip, which is what ECMAScript requires;
    # only the layout (exponent thresholds, "e+") differs.
    sign, digit_tuple, exponent = Decimal(repr(number)).as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    exponent += len(digit_tuple) - len(digits)
    k = len(digits)
    n = exponent + k
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
        text = f"{mantissa}e{'+' if e > 0 else '-'}{abs(e)}"
    return "-" + text if sign else text


def _key_values_json(parts: ValueParts) -> str:
    keys = sorted(parts)
    if not "".join(keys).isascii():
        # RFC 8785 orders by UTF-16 code units; code points differ above U+FFFF.
        keys.sort(key=_utf16)
    if "" not in parts and None not in parts.values():
        prefix = _KEY_PREFIX
        return "[" + ",".join([(prefix.get(k) or _key_prefix(k)) + parts[k] + "}" for k in keys]) + "]"  # type: ignore[operator]
    items = []
    for key in keys:
        value = parts[key]
        if value is None:
            items.append('{"key":' + json_string(key) + "}" if key else "{}")
        elif key:
            items.append('{"key":' + json_string(key) + ',"value":' + value + "}")
        else:  # protobuf JSON omits a default (empty) key
            items.append('{"value":' + value + "}")
    return "[" + ",".join(items) + "]"


# Attribute names repeat from record to record: their JSON prefix is rendered once.
_KEY_PREFIX: dict[str, str] = {}
_KEY_PREFIX_MAX: Final = 4096


def _key_prefix(key: str) -> str:
    prefix = '{"key":' + json_string(key) + ',"value":'
    if len(_KEY_PREFIX) < _KEY_PREFIX_MAX:
        _KEY_PREFIX[key] = prefix
    return prefix


def _utf16(key: str) -> bytes:
    return key.encode("utf-16-be")


def canonical_bytes_from_otlp_json(record: Mapping[str, Any]) -> bytes:
    """Canonical bytes of one OTLP/JSON LogRecord object (an element of `logRecords`).

    Equal to `canonical_bytes` of the same record in protobuf, so a verifier hashes a line of the
    collector's `file` exporter archive without rebuilding a protobuf message. Accepts the
    variants OTLP/JSON allows on input: 64-bit integers as numbers or strings, trace and span
    ids as hex (pdata) or base64 (proto3 JSON), camelCase or proto field names, fields written
    at their default value. Unknown fields are ignored, as `canonical_bytes` ignores them.

    Raises:
        ValueError: the object is not an OTLP/JSON LogRecord (wrong type, unknown AnyValue kind).
    """
    if not isinstance(record, Mapping):
        raise ValueError(f"a log record must be a JSON object, got {type(record).__name__}")
    out = []
    attributes = _field(record, "attributes", "attributes")
    if attributes:
        parts = otlp_json_parts(attributes)
        if parts:
            out.append('"attributes":' + _key_values_json(parts))
    body = _field(record, "body", "body")
    if body is not None:
        body_json = otlp_json_value(body)
        if body_json != "{}":
            out.append('"body":' + body_json)
    dropped = _json_int(
        _field(record, "droppedAttributesCount", "dropped_attributes_count"), "droppedAttributesCount"
    )
    if dropped:
        out.append(f'"droppedAttributesCount":{dropped}')
    event_name = _field(record, "eventName", "event_name")
    if event_name:
        if not isinstance(event_name, str):
            raise ValueError(f"eventName must be a string, got {event_name!r:.60}")
        out.append('"eventName":' + json_string(event_name))
    flags = _json_int(_field(record, "flags", "flags"), "flags")
    if flags:
        out.append(f'"flags":{flags}')
    observed = _json_int(
        _field(record, "observedTimeUnixNano", "observed_time_unix_nano"), "observedTimeUnixNano"
    )
    if observed:
        out.append(f'"observedTimeUnixNano":"{observed}"')
    span_id = _json_id(_field(record, "spanId", "span_id"), 8, "spanId")
    if span_id:
        out.append(f'"spanId":"{span_id}"')
    time_ns = _json_int(_field(record, "timeUnixNano", "time_unix_nano"), "timeUnixNano")
    if time_ns:
        out.append(f'"timeUnixNano":"{time_ns}"')
    trace_id = _json_id(_field(record, "traceId", "trace_id"), 16, "traceId")
    if trace_id:
        out.append(f'"traceId":"{trace_id}"')
    return ("{" + ",".join(out) + "}").encode("utf-8")


def otlp_json_parts(key_values: object) -> dict[str, str | None]:
    """`attribute_parts` for an OTLP/JSON KeyValue list: canonical value JSON per key, integrity left out."""
    if not isinstance(key_values, list):
        raise ValueError(f"attributes must be a JSON array, got {type(key_values).__name__}")
    parts: dict[str, str | None] = {}
    for kv in key_values:
        if type(kv) is not dict:
            raise ValueError(f"a KeyValue must be a JSON object, got {kv!r:.60}")
        key = kv.get("key", "")
        if type(key) is not str:
            raise ValueError(f"a KeyValue key must be a string, got {key!r:.60}")
        if key.startswith(INTEGRITY_PREFIX):
            continue
        value = kv.get("value")
        if value is None:
            parts[key] = None
        elif type(value) is dict and len(value) == 1 and type(text := value.get("stringValue")) is str:
            parts[key] = '{"stringValue":' + json_string(text) + "}"  # the common case, inline
        else:
            parts[key] = otlp_json_value(value)
    return parts


def otlp_json_value(value: object) -> str:
    """Canonical JSON of one OTLP/JSON AnyValue; the same text `any_value_json` gives for the protobuf."""
    if not isinstance(value, Mapping):
        raise ValueError(f"an AnyValue must be a JSON object, got {value!r:.60}")
    if not value:
        return "{}"
    if len(value) != 1:
        raise ValueError(f"an AnyValue has exactly one member, got {sorted(value)!r:.80}")
    ((kind, raw),) = value.items()
    if kind in ("stringValue", "string_value"):
        if not isinstance(raw, str):
            raise ValueError(f"stringValue must be a string, got {raw!r:.60}")
        return '{"stringValue":' + json_string(raw) + "}"
    if kind in ("intValue", "int_value"):
        return f'{{"intValue":"{_json_int(raw, "intValue")}"}}'
    if kind in ("boolValue", "bool_value"):
        if not isinstance(raw, bool):
            raise ValueError(f"boolValue must be true or false, got {raw!r:.60}")
        return '{"boolValue":true}' if raw else '{"boolValue":false}'
    if kind in ("doubleValue", "double_value"):
        return '{"doubleValue":' + double_json(_json_double(raw)) + "}"
    if kind in ("bytesValue", "bytes_value"):
        if not isinstance(raw, str):
            raise ValueError(f"bytesValue must be a base64 string, got {raw!r:.60}")
        try:
            data = base64.b64decode(raw, validate=True)
        except binascii.Error:
            raise ValueError(f"bytesValue is not base64: {raw!r:.60}") from None
        return '{"bytesValue":"' + base64.b64encode(data).decode("ascii") + '"}'
    if kind in ("arrayValue", "array_value"):
        items = _values_of(raw, kind)
        if not items:
            return '{"arrayValue":{}}'
        return '{"arrayValue":{"values":[' + ",".join(otlp_json_value(item) for item in items) + "]}}"
    if kind in ("kvlistValue", "kvlist_value"):
        entries = _kvlist_parts(_values_of(raw, kind))
        if not entries:
            return '{"kvlistValue":{}}'
        return '{"kvlistValue":{"values":' + _key_values_json(entries) + "}}"
    raise ValueError(f"unknown AnyValue member {kind!r:.40}")


def _kvlist_parts(key_values: list[Any]) -> dict[str, str | None]:
    # Unlike top-level attributes, nothing is left out of a kvlist (integrity attributes are top-level only).
    parts: dict[str, str | None] = {}
    for kv in key_values:
        if not isinstance(kv, Mapping) or not isinstance(kv.get("key", ""), str):
            raise ValueError(f"a KeyValue must be an object with a string key, got {kv!r:.60}")
        value = kv.get("value")
        parts[kv.get("key", "")] = None if value is None else otlp_json_value(value)
    return parts


def _values_of(raw: object, kind: str) -> list[Any]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"{kind} must be a JSON object, got {raw!r:.60}")
    values = raw.get("values", [])
    if not isinstance(values, list):
        raise ValueError(f"{kind}.values must be a JSON array, got {values!r:.60}")
    return values


def _field(record: Mapping[str, Any], camel: str, snake: str) -> Any:
    value = record.get(camel)
    return record.get(snake) if value is None else value


def _json_int(value: object, what: str) -> int:
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise ValueError(f"{what} must be an integer or a decimal string, got {value!r:.60}")


def _json_double(value: object) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if value in ("NaN", "Infinity", "-Infinity"):
        return float(str(value).replace("Infinity", "inf"))
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ValueError(f"doubleValue must be a number, got {value!r:.60}")


def _json_id(value: object, size: int, what: str) -> str:
    """Lowercase hex of a trace or span id written as hex (pdata) or base64 (proto3 JSON)."""
    if not value:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {value!r:.60}")
    if len(value) == 2 * size:
        try:
            return bytes.fromhex(value).hex()
        except ValueError:
            pass
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) != size:
        raise ValueError(f"{what} must be {size} bytes as hex, got {value!r:.60}")
    return raw.hex()


def canonical_object(record: LogRecord) -> dict[str, Any]:
    """The record's canonical OTLP/JSON object, the reference the fast paths are checked against.

    OTLP/JSON rules: lowerCamelCase field names, 64-bit integers and nanosecond timestamps as
    decimal strings, bytes as standard base64, traceId/spanId as lowercase hex, fields at their
    default value omitted, an AnyValue as one `{"<kind>Value": ...}` member. Our rules on top
    (docs/integrity.md): severity, every `audit.integrity.*` attribute, an unset or empty Body
    and unknown fields are left out; attribute and kvlist entries are sorted by key (UTF-16 code
    units, as RFC 8785 orders members) and the last of duplicate keys is kept. Serialize the
    result with any RFC 8785 implementation to get `canonical_bytes(record)`.
    """
    obj: dict[str, Any] = {}
    if record.time_unix_nano:
        obj["timeUnixNano"] = str(record.time_unix_nano)
    if record.observed_time_unix_nano:
        obj["observedTimeUnixNano"] = str(record.observed_time_unix_nano)
    if record.HasField("body") and record.body.WhichOneof("value") is not None:
        obj["body"] = _any_object(record.body)
    latest = {kv.key: kv for kv in record.attributes if not kv.key.startswith(INTEGRITY_PREFIX)}
    if latest:
        obj["attributes"] = _key_values_object(latest)
    if record.dropped_attributes_count:
        obj["droppedAttributesCount"] = record.dropped_attributes_count
    if record.flags:
        obj["flags"] = record.flags
    if record.trace_id:
        obj["traceId"] = record.trace_id.hex()
    if record.span_id:
        obj["spanId"] = record.span_id.hex()
    if record.event_name:
        obj["eventName"] = record.event_name
    return obj


def _any_object(value: AnyValue) -> dict[str, Any]:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return {"stringValue": value.string_value}
    if kind == "int_value":
        return {"intValue": str(value.int_value)}
    if kind == "bool_value":
        return {"boolValue": value.bool_value}
    if kind == "double_value":
        number = value.double_value
        if number != number:
            return {"doubleValue": "NaN"}
        if number in (float("inf"), float("-inf")):
            return {"doubleValue": "Infinity" if number > 0 else "-Infinity"}
        return {"doubleValue": number}
    if kind == "bytes_value":
        return {"bytesValue": base64.b64encode(value.bytes_value).decode("ascii")}
    if kind == "array_value":
        values = [_any_object(item) for item in value.array_value.values]
        return {"arrayValue": {"values": values} if values else {}}
    if kind == "kvlist_value":
        latest = {kv.key: kv for kv in value.kvlist_value.values}
        return {"kvlistValue": {"values": _key_values_object(latest)} if latest else {}}
    return {}


def _key_values_object(latest: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for key in sorted(latest, key=_utf16):
        kv = latest[key]
        entry: dict[str, Any] = {"key": key} if key else {}
        if kv.HasField("value"):
            entry["value"] = _any_object(kv.value)
        out.append(entry)
    return out


__all__ = [
    "INTEGRITY_PREFIX",
    "any_value_json",
    "attribute_parts",
    "canonical_bytes",
    "canonical_bytes_from_otlp_json",
    "canonical_bytes_from_parts",
    "canonical_object",
    "double_json",
    "hash_text",
    "int_value_json",
    "integrity_hash",
    "json_string",
    "otlp_json_parts",
    "otlp_json_value",
    "string_value_json",
]
