"""The canonical form (OTLP/JSON + RFC 8785) is pinned by golden vectors and cross-checked."""

from __future__ import annotations

import base64
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from google.protobuf.json_format import MessageToDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otel_audit.canonical import (
    canonical_bytes,
    canonical_bytes_from_otlp_json,
    canonical_object,
    double_json,
    hash_text,
    integrity_hash,
)
from otel_audit.record import AttributeLimits, build_audit_log_record

# --- golden vectors ---------------------------------------------------------------------------
# Computed once and re-checked independently (protobuf JSON mapping + rfc8785 + sha256sum)
# against docs/integrity.md: members sorted, attributes sorted
# by key, integrity attributes and severity left out, int64 and timestamps as strings, ids hex.


def golden_login() -> LogRecord:
    """The draft's "Successful user login" example."""
    return build_audit_log_record(
        "user.login.success",
        actor_id="u8472",
        actor_type="user",
        action="LOGIN",
        outcome="success",
        target_id="/api/auth/session",
        target_type="http.endpoint",
        source_id="203.0.113.42",
        attributes={"audit.schema.version": "1.0.0", "session.id": "sess-abc123", "tls.version": "TLSv1.3"},
        record_id="a1b2c3d4-e5f6-7890-abcd-ef1234567890",
        timestamp=1714041600000000000,
        observed_timestamp_ns=1714041600001000000,
    ).proto


GOLDEN_LOGIN = (
    b'{"attributes":[{"key":"audit.action","value":{"stringValue":"LOGIN"}},'
    b'{"key":"audit.actor.id","value":{"stringValue":"u8472"}},'
    b'{"key":"audit.actor.type","value":{"stringValue":"user"}},'
    b'{"key":"audit.outcome","value":{"stringValue":"success"}},'
    b'{"key":"audit.record.id","value":{"stringValue":"a1b2c3d4-e5f6-7890-abcd-ef1234567890"}},'
    b'{"key":"audit.schema.version","value":{"stringValue":"1.0.0"}},'
    b'{"key":"audit.source.id","value":{"stringValue":"203.0.113.42"}},'
    b'{"key":"audit.source.type","value":{"stringValue":"ipv4"}},'
    b'{"key":"audit.target.id","value":{"stringValue":"/api/auth/session"}},'
    b'{"key":"audit.target.type","value":{"stringValue":"http.endpoint"}},'
    b'{"key":"log.record.uid","value":{"stringValue":"a1b2c3d4-e5f6-7890-abcd-ef1234567890"}},'
    b'{"key":"session.id","value":{"stringValue":"sess-abc123"}},'
    b'{"key":"tls.version","value":{"stringValue":"TLSv1.3"}}],'
    b'"eventName":"user.login.success","observedTimeUnixNano":"1714041600001000000",'
    b'"timeUnixNano":"1714041600000000000"}'
)
GOLDEN_LOGIN_HASH = "746c4e7cbf8b409669fee6d3cdfa91b8017d2e25abe182bd5a21e9ad89aa9659"


def golden_config_change() -> LogRecord:
    """The draft's "Failed privileged configuration change", in a trace, chained and signed."""
    record = build_audit_log_record(
        "config.change",
        actor_id="svc-deployer",
        actor_type="service",
        action="UPDATE",
        outcome="failure",
        target_id="production/app-secrets",
        target_type="k8s.configmap",
        body="Authorization denied: missing role 'config-writer'",
        attributes={
            "audit.schema.version": "1.0.0",
            "request.id": "req-xyz789",
            "k8s.namespace.name": "production",
            "error.type": "403",
        },
        record_id="f7e8d9c0-b1a2-3456-cdef-0987654321ab",
        timestamp=1714041700000000000,
        observed_timestamp_ns=1714041700002000000,
        trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
        span_id=0x00F067AA0BA902B7,
        trace_flags=1,
    ).proto
    record.severity_number = 9  # type: ignore[assignment]
    record.severity_text = "INFO"
    add = record.attributes.add
    add(key="audit.sequence.stream_id").value.string_value = "9b2e4c1a-0d3f-4e5a-8b7c-6d5e4f3a2b1c"
    add(key="audit.sequence.number").value.int_value = 2
    # Chained after the login vector: previous_hash is its IntegrityHash (the receipt's text).
    add(key="audit.sequence.previous_hash").value.string_value = GOLDEN_LOGIN_HASH
    add(key="audit.sequence.previous_record_id").value.string_value = "a1b2c3d4-e5f6-7890-abcd-ef1234567890"
    add(key="audit.integrity.value").value.string_value = "c2lnbmF0dXJl"
    add(key="audit.integrity.signer").value.string_value = "producer"
    return record


GOLDEN_CONFIG_CHANGE = (
    b'{"attributes":[{"key":"audit.action","value":{"stringValue":"UPDATE"}},'
    b'{"key":"audit.actor.id","value":{"stringValue":"svc-deployer"}},'
    b'{"key":"audit.actor.type","value":{"stringValue":"service"}},'
    b'{"key":"audit.outcome","value":{"stringValue":"failure"}},'
    b'{"key":"audit.record.id","value":{"stringValue":"f7e8d9c0-b1a2-3456-cdef-0987654321ab"}},'
    b'{"key":"audit.schema.version","value":{"stringValue":"1.0.0"}},'
    b'{"key":"audit.sequence.number","value":{"intValue":"2"}},'
    b'{"key":"audit.sequence.previous_hash","value":{"stringValue":'
    b'"746c4e7cbf8b409669fee6d3cdfa91b8017d2e25abe182bd5a21e9ad89aa9659"}},'
    b'{"key":"audit.sequence.previous_record_id","value":{"stringValue":'
    b'"a1b2c3d4-e5f6-7890-abcd-ef1234567890"}},'
    b'{"key":"audit.sequence.stream_id","value":{"stringValue":"9b2e4c1a-0d3f-4e5a-8b7c-6d5e4f3a2b1c"}},'
    b'{"key":"audit.target.id","value":{"stringValue":"production/app-secrets"}},'
    b'{"key":"audit.target.type","value":{"stringValue":"k8s.configmap"}},'
    b'{"key":"error.type","value":{"stringValue":"403"}},'
    b'{"key":"k8s.namespace.name","value":{"stringValue":"production"}},'
    b'{"key":"log.record.uid","value":{"stringValue":"f7e8d9c0-b1a2-3456-cdef-0987654321ab"}},'
    b'{"key":"request.id","value":{"stringValue":"req-xyz789"}}],'
    b'"body":{"stringValue":"Authorization denied: missing role \'config-writer\'"},'
    b'"eventName":"config.change","flags":1,"observedTimeUnixNano":"1714041700002000000",'
    b'"spanId":"00f067aa0ba902b7","timeUnixNano":"1714041700000000000",'
    b'"traceId":"4bf92f3577b34da6a3ce929d0e0e4736"}'
)
GOLDEN_CONFIG_CHANGE_HASH = "35eaaca33654254733ccad9b6167c83479594ca5530557d0f2b6519d5f715923"


def golden_edge_cases() -> LogRecord:
    """Escapes, doubles, int64 beyond 2^53, bytes, nesting and UTF-16 key order."""
    return build_audit_log_record(
        "data.export",
        actor_id=42,
        actor_type="user",
        action="EXPORT",
        outcome="unknown",
        attributes={
            "zeta": 'ü\t"q"\\',
            "\U0001f600": "non-BMP key",
            "\uff5e": "BMP key above surrogates",
            "count": -9007199254740993,
            "ok": False,
            "blob": b"\x00\xff\x10",
            "ratio": 0.1,
            "big": 1e21,
            "tiny": 1e-7,
            "neg0": -0.0,
            "tags": ["a", "b"],
            "meta": {"y": 1, "x": {"n": "NoneType"}},
            "ctl": "\x01\x7f\u2028",
        },
        record_id="00000000-0000-4000-8000-000000000003",
        timestamp=1,
        observed_timestamp_ns=2,
    ).proto


GOLDEN_EDGE_CASES = (
    '{"attributes":[{"key":"audit.action","value":{"stringValue":"EXPORT"}},'
    '{"key":"audit.actor.id","value":{"stringValue":"42"}},'
    '{"key":"audit.actor.type","value":{"stringValue":"user"}},'
    '{"key":"audit.outcome","value":{"stringValue":"unknown"}},'
    '{"key":"audit.record.id","value":{"stringValue":"00000000-0000-4000-8000-000000000003"}},'
    '{"key":"big","value":{"doubleValue":1e+21}},'
    '{"key":"blob","value":{"bytesValue":"AP8Q"}},'
    '{"key":"count","value":{"intValue":"-9007199254740993"}},'
    '{"key":"ctl","value":{"stringValue":"\\u0001\x7f\u2028"}},'
    '{"key":"log.record.uid","value":{"stringValue":"00000000-0000-4000-8000-000000000003"}},'
    '{"key":"meta","value":{"kvlistValue":{"values":[{"key":"x","value":{"kvlistValue":{"values":'
    '[{"key":"n","value":{"stringValue":"NoneType"}}]}}},{"key":"y","value":{"intValue":"1"}}]}}},'
    '{"key":"neg0","value":{"doubleValue":0}},'
    '{"key":"ok","value":{"boolValue":false}},'
    '{"key":"ratio","value":{"doubleValue":0.1}},'
    '{"key":"tags","value":{"arrayValue":{"values":[{"stringValue":"a"},{"stringValue":"b"}]}}},'
    '{"key":"tiny","value":{"doubleValue":1e-7}},'
    '{"key":"zeta","value":{"stringValue":"ü\\t\\"q\\"\\\\"}},'
    '{"key":"\U0001f600","value":{"stringValue":"non-BMP key"}},'
    '{"key":"\uff5e","value":{"stringValue":"BMP key above surrogates"}}],'
    '"eventName":"data.export","observedTimeUnixNano":"2","timeUnixNano":"1"}'
).encode("utf-8")
GOLDEN_EDGE_CASES_HASH = "af80df34afa90ebd77c56389e2159bcc38617a4a2aefb5eaf6351a6f0d5c1a64"

GOLDEN = [
    (golden_login, GOLDEN_LOGIN, GOLDEN_LOGIN_HASH),
    (golden_config_change, GOLDEN_CONFIG_CHANGE, GOLDEN_CONFIG_CHANGE_HASH),
    (golden_edge_cases, GOLDEN_EDGE_CASES, GOLDEN_EDGE_CASES_HASH),
]


def test_golden_vectors_give_the_pinned_bytes_and_hashes() -> None:
    """Any change to the canonical form breaks these: it would break every stored chain."""
    for make, expected, expected_hash in GOLDEN:
        record = make()
        assert canonical_bytes(record) == expected, make.__name__
        assert hashlib.sha256(expected).hexdigest() == expected_hash
        assert hash_text(integrity_hash(record)) == expected_hash


def test_golden_vectors_agree_with_the_reference_jcs_implementation() -> None:
    for make, expected, _ in GOLDEN:
        assert rfc8785.dumps(canonical_object(make())) == expected


def test_the_chained_vector_points_at_the_login_vector() -> None:
    """previous_hash is the predecessor's IntegrityHash itself, not a hash of it (the draft's text)."""
    attrs = {kv.key: kv.value.string_value for kv in golden_config_change().attributes}
    assert attrs["audit.sequence.previous_hash"] == hash_text(integrity_hash(golden_login()))


# --- rules ------------------------------------------------------------------------------------


def test_integrity_attributes_and_severity_do_not_change_the_hash() -> None:
    record = golden_login()
    before = integrity_hash(record)
    record.attributes.add(key="audit.integrity.value").value.string_value = "anything"
    record.severity_number = 17  # type: ignore[assignment]
    record.severity_text = "ERROR"
    assert integrity_hash(record) == before


def test_every_other_field_changes_the_hash() -> None:
    """Tamper evidence: changing any covered field changes the canonical bytes."""
    base = integrity_hash(golden_config_change())
    mutations = [
        lambda r: setattr(r, "time_unix_nano", r.time_unix_nano + 1),
        lambda r: setattr(r, "observed_time_unix_nano", r.observed_time_unix_nano + 1),
        lambda r: setattr(r, "event_name", "config.read"),
        lambda r: setattr(r, "flags", 0),
        lambda r: setattr(r, "trace_id", b"\x01" * 16),
        lambda r: setattr(r, "span_id", b"\x01" * 8),
        lambda r: setattr(r, "dropped_attributes_count", 1),
        lambda r: r.body.__setattr__("string_value", "edited"),
        lambda r: r.attributes[2].value.__setattr__("string_value", "mallory"),
        lambda r: r.attributes.add(key="extra").value.__setattr__("bool_value", False),
        lambda r: r.attributes.__delitem__(8),
    ]
    for mutate in mutations:
        record = golden_config_change()
        mutate(record)
        assert integrity_hash(record) != base


def test_attribute_order_does_not_change_the_hash() -> None:
    """Receivers may reorder attributes; the canonical form sorts them."""
    record = golden_login()
    shuffled = LogRecord()
    shuffled.CopyFrom(record)
    del shuffled.attributes[:]
    shuffled.attributes.extend(reversed(record.attributes))
    assert canonical_bytes(shuffled) == canonical_bytes(record)


def test_duplicate_attribute_keys_keep_the_last_value() -> None:
    record = LogRecord(event_name="x.y")
    record.attributes.add(key="k").value.string_value = "first"
    record.attributes.add(key="k").value.string_value = "last"
    assert (
        canonical_bytes(record)
        == b'{"attributes":[{"key":"k","value":{"stringValue":"last"}}],"eventName":"x.y"}'
    )


def test_unset_and_empty_body_are_both_omitted() -> None:
    """The SDK writes an empty AnyValue body for None; it must hash like an absent body."""
    absent = LogRecord(event_name="x.y")
    empty = LogRecord(event_name="x.y", body=AnyValue())
    assert empty.HasField("body")
    assert canonical_bytes(absent) == canonical_bytes(empty) == b'{"eventName":"x.y"}'


def test_empty_containers_and_empty_strings_are_kept() -> None:
    """A set oneof is written even at its default value, as protobuf JSON does."""
    record = LogRecord()
    record.attributes.add(key="s").value.string_value = ""
    record.attributes.add(key="a").value.array_value.SetInParent()
    record.attributes.add(key="m").value.kvlist_value.SetInParent()
    record.attributes.add(key="n")
    assert canonical_bytes(record) == (
        b'{"attributes":[{"key":"a","value":{"arrayValue":{}}},{"key":"m","value":{"kvlistValue":{}}},'
        b'{"key":"n"},{"key":"s","value":{"stringValue":""}}]}'
    )


def test_non_finite_doubles_are_written_as_otlp_json_strings() -> None:
    record = LogRecord()
    for key, number in (("a", math.nan), ("b", math.inf), ("c", -math.inf)):
        record.attributes.add(key=key).value.double_value = number
    assert canonical_bytes(record) == (
        b'{"attributes":[{"key":"a","value":{"doubleValue":"NaN"}},'
        b'{"key":"b","value":{"doubleValue":"Infinity"}},{"key":"c","value":{"doubleValue":"-Infinity"}}]}'
    )


@given(st.floats(allow_nan=False, allow_infinity=False))
@settings(max_examples=400)
def test_double_formatting_matches_rfc8785(number: float) -> None:
    assert double_json(number).encode() == rfc8785.dumps(number)


# --- property tests ---------------------------------------------------------------------------

keys = st.text(max_size=6)
scalars = st.one_of(
    st.text(max_size=12),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.binary(max_size=8),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(tuple),
        st.lists(st.tuples(keys, inner), max_size=3).map(lambda pairs: ("kv", pairs)),
    ),
    max_leaves=8,
)


def set_any(target: AnyValue, value: Any) -> None:
    if isinstance(value, tuple) and len(value) == 2 and value[0] == "kv":
        kvlist = target.kvlist_value
        kvlist.SetInParent()
        for key, item in value[1]:
            set_any(kvlist.values.add(key=key).value, item)
    elif isinstance(value, tuple):
        target.array_value.SetInParent()
        for item in value:
            set_any(target.array_value.values.add(), item)
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    else:
        target.bytes_value = value


@st.composite
def log_records(draw: st.DrawFn) -> LogRecord:
    record = LogRecord(
        time_unix_nano=draw(st.integers(0, 2**64 - 1)),
        observed_time_unix_nano=draw(st.integers(0, 2**64 - 1)),
        event_name=draw(st.text(max_size=10)),
        flags=draw(st.integers(0, 2**32 - 1)),
        dropped_attributes_count=draw(st.integers(0, 3)),
        severity_number=draw(st.integers(0, 24)),
        severity_text=draw(st.text(max_size=3)),
        trace_id=draw(st.sampled_from([b"", bytes(range(16))])),
        span_id=draw(st.sampled_from([b"", bytes(range(1, 9))])),
    )
    if draw(st.booleans()):
        record.body.SetInParent()
        if draw(st.booleans()):
            set_any(record.body, draw(values))
    for key, value in draw(
        st.lists(st.tuples(st.one_of(keys, st.just("audit.integrity.value")), values), max_size=6)
    ):
        set_any(record.attributes.add(key=key).value, value)
    return record


@given(log_records())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_fast_path_equals_the_reference_jcs_of_the_canonical_object(record: LogRecord) -> None:
    """Our direct JSON assembly is byte-identical to rfc8785.dumps on the reference object."""
    assert canonical_bytes(record) == rfc8785.dumps(canonical_object(record))


def _protobuf_json_view(record: LogRecord) -> dict[str, Any]:
    """Protobuf's own JSON mapping, adjusted by our documented rules only."""
    obj = MessageToDict(record)
    obj.pop("severityNumber", None)
    obj.pop("severityText", None)
    for name in ("traceId", "spanId"):
        if name in obj:
            obj[name] = base64.b64decode(obj[name]).hex()
    if obj.get("body") == {}:
        del obj["body"]

    def normalize_key_values(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        latest: dict[str, dict[str, Any]] = {}
        for entry in entries:
            latest[entry.get("key", "")] = entry
        for entry in latest.values():
            if "value" in entry:
                normalize_any(entry["value"])
        return [latest[k] for k in sorted(latest, key=lambda k: k.encode("utf-16-be"))]

    def normalize_any(value: dict[str, Any]) -> None:
        if "kvlistValue" in value and "values" in value["kvlistValue"]:
            value["kvlistValue"]["values"] = normalize_key_values(value["kvlistValue"]["values"])
        if "arrayValue" in value:
            for item in value["arrayValue"].get("values", []):
                normalize_any(item)

    if "body" in obj:
        normalize_any(obj["body"])
    attributes = [a for a in obj.get("attributes", []) if not a.get("key", "").startswith("audit.integrity.")]
    if attributes:
        obj["attributes"] = normalize_key_values(attributes)
    else:
        obj.pop("attributes", None)
    return obj


@given(log_records())
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_canonical_object_is_protobufs_own_json_mapping_plus_our_rules(record: LogRecord) -> None:
    """Field names, int64 strings, base64 bytes and omissions come from OTLP/protobuf JSON itself."""
    assert rfc8785.dumps(_protobuf_json_view(record)) == canonical_bytes(record)


attribute_values = st.recursive(
    st.one_of(
        st.text(max_size=12),
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.binary(max_size=8),
    ),
    lambda inner: st.one_of(
        st.lists(st.text(max_size=5), max_size=3),
        st.lists(st.integers(-5, 5), max_size=3),
        st.dictionaries(st.text(min_size=1, max_size=4), inner, max_size=3),
    ),
    max_leaves=6,
)


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=8).filter(lambda k: not k.startswith("audit.")), attribute_values
    ),
    st.one_of(st.none(), attribute_values),
    st.text(min_size=1, max_size=20),
)
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_builder_parts_equal_the_generic_canonical_form(
    attributes: dict[str, Any], body: Any, actor: str
) -> None:
    """The builder's pre-rendered attribute JSON never diverges from the protobuf it built."""
    attributes = {k: v for k, v in attributes.items() if k != "log.record.uid"}
    record = build_audit_log_record(
        "prop.test",
        actor_id=actor,
        actor_type="system",
        action="TEST",
        outcome="unknown",
        source_id="host.example",
        attributes=attributes,
        body=body,
        limits=AttributeLimits(max_value_length=6),
    )
    assert record.canonical_bytes() == canonical_bytes(record.proto)


def _docs_canonicalizer() -> Any:
    text = (Path(__file__).resolve().parent.parent / "docs" / "integrity.md").read_text()
    section = text[text.index("### 1.5") :]
    code = section[
        section.index("```python") + len("```python") : section.index("```\n", section.index("```python") + 9)
    ]
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/integrity.md", "exec"), namespace)
    return namespace["canonical_bytes"]


DOCS_CANONICAL_BYTES = _docs_canonicalizer()


def _as_otlp_json(record: LogRecord) -> dict[str, Any]:
    """The record as an OTLP/JSON archive line holds it (ids in hex), through a JSON round trip."""
    obj = MessageToDict(record)
    for name in ("traceId", "spanId"):
        if name in obj:
            obj[name] = base64.b64decode(obj[name]).hex().upper()  # case is not significant on input
    loaded: dict[str, Any] = json.loads(json.dumps(obj))
    return loaded


@given(log_records())
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_the_stand_alone_verifier_in_the_docs_agrees(record: LogRecord) -> None:
    """docs/integrity.md's canonicalizer, fed OTLP/JSON, gives our canonical bytes."""
    assert DOCS_CANONICAL_BYTES(_as_otlp_json(record)) == canonical_bytes(record)


def test_the_stand_alone_verifier_accepts_defaults_written_out() -> None:
    record = _as_otlp_json(golden_login())
    record.update({"flags": 0, "droppedAttributesCount": 0, "severityNumber": 9, "traceId": "", "spanId": ""})
    record["timeUnixNano"] = int(record["timeUnixNano"])
    assert DOCS_CANONICAL_BYTES(record) == GOLDEN_LOGIN


@given(log_records(), st.booleans())
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_otlp_json_canonicalizer_equals_the_protobuf_path(record: LogRecord, base64_ids: bool) -> None:
    """Verifying an archive line hashes the same bytes as the producer hashed in protobuf."""
    obj = json.loads(json.dumps(MessageToDict(record))) if base64_ids else _as_otlp_json(record)
    assert canonical_bytes_from_otlp_json(obj) == canonical_bytes(record)


def test_otlp_json_canonicalizer_refuses_what_is_not_otlp() -> None:
    for bad in (
        [],
        {"attributes": {"a": 1}},
        {"attributes": [{"key": "a", "value": {"stringValue": 1}}]},
        {"attributes": [{"key": "a", "value": {"stringValue": "x", "intValue": "1"}}]},
        {"attributes": [{"key": "a", "value": {"fooValue": 1}}]},
        {"body": {"bytesValue": "***"}},
        {"timeUnixNano": "soon"},
        {"traceId": "abc"},
    ):
        with pytest.raises(ValueError):
            canonical_bytes_from_otlp_json(bad)  # type: ignore[arg-type]
