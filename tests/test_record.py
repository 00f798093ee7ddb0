"""The audit record builder enforces the draft data model and builds the expected LogRecord."""

from __future__ import annotations

import math
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, use_span

from otel_audit.canonical import canonical_bytes
from otel_audit.exceptions import InvalidAuditRecordError
from otel_audit.record import (
    AttributeLimits,
    AuditReceipt,
    AuditRecord,
    build_audit_log_record,
    new_record_id,
    source_type_of,
)

MANDATORY: dict[str, Any] = {
    "actor_id": "u8472",
    "actor_type": "user",
    "action": "LOGIN",
    "outcome": "success",
}


def build(event_name: str = "user.login.success", **kwargs: Any) -> AuditRecord:
    return build_audit_log_record(event_name, **{**MANDATORY, **kwargs})


def attrs(record: AuditRecord | LogRecord) -> dict[str, Any]:
    proto = record.proto if isinstance(record, AuditRecord) else record
    out: dict[str, Any] = {}
    for kv in proto.attributes:
        kind = kv.value.WhichOneof("value")
        value = getattr(kv.value, kind)
        if kind == "array_value":
            value = [getattr(v, v.WhichOneof("value")) for v in value.values]
        out[kv.key] = value
    return out


def raises(match: str, **kwargs: Any) -> None:
    with pytest.raises(InvalidAuditRecordError, match=match):
        build(**kwargs)


# --- mandatory attributes ---------------------------------------------------------------------


def test_record_carries_every_mandatory_attribute_in_a_fixed_order() -> None:
    """Record id, log.record.uid, actor, action and outcome come first, in that order."""
    record = build(record_id="r-1")
    keys = [kv.key for kv in record.proto.attributes]
    assert keys == [
        "audit.record.id",
        "log.record.uid",
        "audit.actor.id",
        "audit.actor.type",
        "audit.action",
        "audit.outcome",
    ]
    assert attrs(record)["audit.record.id"] == "r-1" == attrs(record)["log.record.uid"]
    assert record.record_id == "r-1"
    assert record.proto.event_name == "user.login.success"


def test_record_id_defaults_to_a_uuid4_mirrored_in_log_record_uid() -> None:
    """Without record_id a fresh uuid4 is made and written twice (dedup for generic tooling too)."""
    record = build()
    assert uuid.UUID(record.record_id).version == 4
    assert attrs(record)["log.record.uid"] == record.record_id
    assert build().record_id != record.record_id


@pytest.mark.parametrize("bad", ["", "   ", 42, None.__class__, "x" * 257])
def test_bad_record_id_is_rejected_naming_the_attribute(bad: Any) -> None:
    """An empty, blank, non-str or overlong record id is an error naming audit.record.id."""
    raises("audit.record.id", record_id=bad)


@pytest.mark.parametrize("missing", [None, ""])
def test_missing_actor_id_becomes_anonymous(missing: str | None) -> None:
    """An unknown actor is recorded as `anonymous`, as the draft requires a value."""
    assert attrs(build(actor_id=missing))["audit.actor.id"] == "anonymous"


def test_integer_actor_id_is_written_as_text() -> None:
    """The draft allows an integer user id cast to string."""
    assert attrs(build(actor_id=1234))["audit.actor.id"] == "1234"


@pytest.mark.parametrize("bad", [1.5, True, b"u", ["u"]])
def test_non_text_actor_id_is_rejected(bad: Any) -> None:
    """Only str (or int) actor ids are accepted."""
    raises("audit.actor.id", actor_id=bad)


@pytest.mark.parametrize("bad", ["", "User", "human", None])
def test_bad_actor_type_is_rejected(bad: Any) -> None:
    """audit.actor.type must be user, service or system."""
    raises("audit.actor.type", actor_type=bad)


@pytest.mark.parametrize("bad", ["", "login", "Login", "1LOGIN", "LOG IN", "LOG-IN", None, "A" * 65])
def test_bad_action_is_rejected(bad: Any) -> None:
    """audit.action must be an upper-case verb."""
    raises("audit.action", action=bad)


@pytest.mark.parametrize("good", ["LOGIN", "PASSWORD_RESET", "READ2"])
def test_upper_case_actions_are_accepted(good: str) -> None:
    assert attrs(build(action=good))["audit.action"] == good


@pytest.mark.parametrize("bad", ["", "ok", "SUCCESS", "failed", None])
def test_bad_outcome_is_rejected(bad: Any) -> None:
    """audit.outcome must be success, failure or unknown."""
    raises("audit.outcome", outcome=bad)


@pytest.mark.parametrize(
    "bad", ["", "User.Login", ".login", "login.", "a..b", "user login", "1user", None, "a" * 257]
)
def test_bad_event_name_is_rejected(bad: Any) -> None:
    """EventName must be a non-empty dot-separated lowercase name."""
    with pytest.raises(InvalidAuditRecordError, match="EventName"):
        build_audit_log_record(bad, **MANDATORY)


@pytest.mark.parametrize(
    "good", ["config.change", "startup", "user.login.success", "http.v2.request", "a_b.c-d.2fa"]
)
def test_hierarchical_event_names_are_accepted(good: str) -> None:
    assert build(good).proto.event_name == good


# --- optional attributes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("203.0.113.42", "ipv4"),
        ("2001:db8::1", "ipv6"),
        ("::ffff:192.0.2.1", "ipv6"),
        ("fe80::1%eth0", "ipv6"),
        ("client.example.com", "hostname"),
        ("localhost", "hostname"),
    ],
)
def test_source_type_is_derived_from_the_source_id(source: str, kind: str) -> None:
    """audit.source.type is ipv4, ipv6 or hostname according to audit.source.id."""
    record = build(source_id=source)
    assert attrs(record)["audit.source.type"] == kind
    assert attrs(record)["audit.source.id"] == source


def test_source_type_is_not_guessed_for_an_unclassifiable_source() -> None:
    """An address with a port or a path is kept, but no type is invented."""
    assert source_type_of("203.0.113.42:5555") is None
    assert "audit.source.type" not in attrs(build(source_id="unix:/run/app.sock"))


def test_explicit_source_type_wins() -> None:
    assert attrs(build(source_id="10.0.0.1", source_type="proxy"))["audit.source.type"] == "proxy"


def test_target_attributes_are_written_when_given_and_omitted_when_empty() -> None:
    record = build(target_id="/api/v1/orders/42", target_type="http.endpoint")
    assert attrs(record)["audit.target.id"] == "/api/v1/orders/42"
    assert attrs(record)["audit.target.type"] == "http.endpoint"
    assert "audit.target.id" not in attrs(build(target_id=""))


def test_non_text_target_is_rejected() -> None:
    raises("audit.target.id", target_id=42)


@pytest.mark.parametrize(
    "key",
    [
        "audit.record.id",
        "audit.actor.id",
        "log.record.uid",
        "audit.sequence.number",
        "audit.integrity.value",
        "audit.digest.head.hash",
    ],
)
def test_reserved_keys_in_attributes_are_rejected(key: str) -> None:
    """Keys owned by the keyword arguments, the chain, the signer or digests cannot come in attributes."""
    raises(key.replace(".", r"\."), attributes={key: "forged"})


def test_reserved_key_message_names_the_keyword_to_use() -> None:
    raises("actor_id=", attributes={"audit.actor.id": "x"})


# --- severity, timestamps, trace context -------------------------------------------------------


def test_severity_is_never_set() -> None:
    """The draft: SeverityNumber and SeverityText SHOULD NOT be set."""
    proto = build().proto
    assert proto.severity_number == 0
    assert proto.severity_text == ""


def test_timestamp_defaults_to_the_observed_time() -> None:
    before = time.time_ns()
    proto = build().proto
    assert before <= proto.observed_time_unix_nano <= time.time_ns()
    assert proto.time_unix_nano == proto.observed_time_unix_nano


def test_aware_datetime_timestamp_is_converted_exactly() -> None:
    moment = datetime(2024, 4, 25, 10, 40, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    proto = build(timestamp=moment).proto
    assert proto.time_unix_nano == 1714034400_123456_000
    assert proto.time_unix_nano <= proto.observed_time_unix_nano


def test_naive_datetime_is_rejected() -> None:
    raises("naive", timestamp=datetime(2024, 1, 1))


def test_integer_timestamp_in_the_past_is_kept() -> None:
    assert build(timestamp=1_714_041_600_000_000_000).proto.time_unix_nano == 1_714_041_600_000_000_000


def test_future_timestamp_within_skew_is_clamped_to_observed() -> None:
    """Clock noise below the tolerated skew keeps Timestamp <= ObservedTimestamp by clamping."""
    proto = build(timestamp=time.time_ns() + 200_000_000).proto
    assert proto.time_unix_nano == proto.observed_time_unix_nano


def test_future_timestamp_beyond_skew_is_rejected() -> None:
    raises("Timestamp", timestamp=datetime.now(UTC) + timedelta(minutes=5))


def test_observed_timestamp_in_the_future_is_rejected() -> None:
    raises("ObservedTimestamp", observed_timestamp_ns=time.time_ns() + 60 * 10**9)


def test_explicit_observed_timestamp_is_kept() -> None:
    proto = build(timestamp=1_000, observed_timestamp_ns=2_000).proto
    assert (proto.time_unix_nano, proto.observed_time_unix_nano) == (1_000, 2_000)


@pytest.mark.parametrize("bad", [0, -5, 1.5, "1700000000", 2**64])
def test_bad_timestamp_is_rejected(bad: Any) -> None:
    raises("Timestamp", timestamp=bad)


def test_trace_and_span_ids_come_from_the_active_span() -> None:
    """Correlation: the record carries the current span's ids and flags."""
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("request") as span:
        proto = build().proto
    context = span.get_span_context()
    assert proto.trace_id == context.trace_id.to_bytes(16, "big")
    assert proto.span_id == context.span_id.to_bytes(8, "big")
    assert proto.flags == int(context.trace_flags)
    assert proto.flags & 0x01  # sampled


def test_no_active_span_leaves_trace_fields_unset() -> None:
    proto = build().proto
    assert (proto.trace_id, proto.span_id, proto.flags) == (b"", b"", 0)


def test_explicit_trace_ids_win_over_the_active_span() -> None:
    outer = SpanContext(trace_id=1, span_id=2, is_remote=False, trace_flags=TraceFlags(1))
    with use_span(NonRecordingSpan(outer)):
        proto = build(trace_id=0xABC, span_id=0xDEF, trace_flags=0).proto
    assert proto.trace_id == (0xABC).to_bytes(16, "big")
    assert proto.span_id == (0xDEF).to_bytes(8, "big")
    assert proto.flags == 0


def test_out_of_range_trace_id_is_rejected() -> None:
    raises("trace_id", trace_id=2**128)


# --- attribute values -------------------------------------------------------------------------


def test_supported_attribute_values_are_encoded_as_otlp_any_values() -> None:
    record = build(
        attributes={
            "s": "x",
            "b": True,
            "i": -(2**63),
            "f": 0.25,
            "raw": b"\x00\x01",
            "list": ["a", "b"],
            "tuple": (1, 2),
            "map": {"k": {"deep": [1.5]}},
            "empty": [],
        }
    )
    proto = {kv.key: kv.value for kv in record.proto.attributes}
    assert proto["s"].string_value == "x"
    assert proto["b"].bool_value is True
    assert proto["i"].int_value == -(2**63)
    assert proto["f"].double_value == 0.25
    assert proto["raw"].bytes_value == b"\x00\x01"
    assert [v.string_value for v in proto["list"].array_value.values] == ["a", "b"]
    assert [v.int_value for v in proto["tuple"].array_value.values] == [1, 2]
    inner = proto["map"].kvlist_value.values[0]
    assert inner.key == "k"
    assert inner.value.kvlist_value.values[0].value.array_value.values[0].double_value == 1.5
    assert proto["empty"].WhichOneof("value") == "array_value"


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (object(), "unsupported value type object"),
        ({1, 2}, "unsupported value type set"),
        (None, "None"),
        (2**63, "int64"),
        (-(2**63) - 1, "int64"),
        (math.nan, "canonical JSON"),
        (math.inf, "canonical JSON"),
        ([1, "a"], "mixes int and str"),
        ([1, 1.5], "mixes int and float"),
        ({"k": object()}, "unsupported"),
        ({1: "v"}, "map key"),
        ("bad\ud800", "surrogate"),
    ],
)
def test_unserialisable_values_are_rejected_naming_the_key(value: Any, match: str) -> None:
    """Anything OTLP or the canonical form cannot carry is an error naming the key."""
    with pytest.raises(InvalidAuditRecordError, match="the_key") as info:
        build(attributes={"the_key": value})
    assert match in str(info.value)


def test_bad_attribute_keys_are_rejected() -> None:
    raises("key", attributes={"": "v"})
    raises("key", attributes={1: "v"})
    raises("UTF-8", attributes={"k\udc80": "v"})


def test_surrogate_in_a_mandatory_value_is_rejected() -> None:
    raises("audit.actor.id", actor_id="u\ud83d")


def test_nesting_deeper_than_the_limit_is_rejected() -> None:
    value: Any = "leaf"
    for _ in range(4):
        value = [value]
    with pytest.raises(InvalidAuditRecordError, match="nested deeper than 3"):
        build(attributes={"deep": value}, limits=AttributeLimits(max_depth=3))
    build(attributes={"deep": value}, limits=AttributeLimits(max_depth=4))


def test_oversized_values_are_truncated_and_flagged() -> None:
    """Values over the length limit are cut and their keys listed in audit.truncated, never silently."""
    limits = AttributeLimits(max_value_length=4)
    record = build(
        actor_id="long-actor",
        attributes={"s": "abcdefgh", "b": b"123456", "ok": "abcd", "nested": {"x": ["short", "toolong"]}},
        limits=limits,
    )
    values = attrs(record)
    assert values["s"] == "abcd"
    assert values["b"] == b"1234"
    assert values["ok"] == "abcd"
    assert values["audit.actor.id"] == "long"
    assert values["audit.truncated"] == ["audit.actor.id", "s", "b", "nested"]
    nested = {kv.key: kv.value for kv in record.proto.attributes}["nested"]
    assert [v.string_value for v in nested.kvlist_value.values[0].value.array_value.values] == [
        "shor",
        "tool",
    ]


def test_record_id_is_never_truncated() -> None:
    record = build(record_id="x" * 40, limits=AttributeLimits(max_value_length=8))
    assert record.record_id == attrs(record)["audit.record.id"] == "x" * 40


def test_no_truncation_flag_when_nothing_was_cut() -> None:
    assert "audit.truncated" not in attrs(build(attributes={"s": "x" * 8192}))


def test_attribute_count_over_the_limit_is_an_error_not_a_drop() -> None:
    limits = AttributeLimits(max_count=8)
    build(attributes={"a": 1, "b": 2}, limits=limits)
    with pytest.raises(InvalidAuditRecordError, match="exceed the limit of 8"):
        build(attributes={"a": 1, "b": 2, "c": 3}, limits=limits)


def test_limits_come_from_the_otel_environment_variables() -> None:
    limits = AttributeLimits.from_env(
        {"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "100", "OTEL_ATTRIBUTE_COUNT_LIMIT": "50"}
    )
    assert (limits.max_value_length, limits.max_count) == (100, 50)
    specific = AttributeLimits.from_env(
        {"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "100", "OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT": "7"}
    )
    assert specific.max_value_length == 7


def test_malformed_limit_variable_falls_back_to_the_default(caplog: pytest.LogCaptureFixture) -> None:
    limits = AttributeLimits.from_env({"OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "lots"})
    assert limits.max_value_length == 8192
    assert "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT" in caplog.text


# --- body -------------------------------------------------------------------------------------


def test_body_is_unset_by_default() -> None:
    assert not build().proto.HasField("body")


@pytest.mark.parametrize(
    "body", ["Authorization denied", b"\x01", {"reason": "missing role", "roles": ["a"]}, 7]
)
def test_body_accepts_any_value(body: Any) -> None:
    assert build(body=body).proto.HasField("body")


def test_body_is_not_truncated() -> None:
    record = build(body="y" * 100, limits=AttributeLimits(max_value_length=8))
    assert record.proto.body.string_value == "y" * 100
    assert "audit.truncated" not in attrs(record)


def test_unsupported_body_is_rejected() -> None:
    raises("body", body=object())


# --- canonical parts and receipt --------------------------------------------------------------


def test_prerendered_parts_give_the_generic_canonical_bytes() -> None:
    """The builder's fast canonical path equals the one that walks the protobuf."""
    record = build(
        target_id="/t",
        source_id="::1",
        attributes={"x": [1, 2], "m": {"z": True, "a": b"q"}, "f": 1e21, "ü": "é\n"},
        body={"k": "v"},
        limits=AttributeLimits(max_value_length=3),
    )
    assert record.canonical_bytes() == canonical_bytes(record.proto)


def test_serialized_record_parses_back_equal() -> None:
    proto = build(attributes={"k": [1.5, 2.5]}, body="b").proto
    assert LogRecord.FromString(proto.SerializeToString()) == proto


def test_receipt_is_frozen() -> None:
    receipt = AuditReceipt(record_id="r", integrity_hash="00" * 32, sink_timestamp=1)
    with pytest.raises(AttributeError):
        receipt.record_id = "other"  # type: ignore[misc]


def test_new_record_id_is_a_random_rfc4122_version_4_uuid() -> None:
    ids = {new_record_id() for _ in range(2000)}
    assert len(ids) == 2000
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)


def test_a_body_array_may_mix_types_as_the_logs_data_model_allows() -> None:
    """The Body is free-form AnyValue; only attribute arrays must be homogeneous."""
    built = build_audit_log_record(
        "config.change", actor_id="u", actor_type="user", action="UPDATE", outcome="success",
        body={"changes": [1, 2.5, "x", True]},
    )
    values = built.proto.body.kvlist_value.values[0].value.array_value.values
    assert [v.WhichOneof("value") for v in values] == ["int_value", "double_value", "string_value", "bool_value"]
    with pytest.raises(InvalidAuditRecordError, match="homogeneous"):
        build_audit_log_record(
            "config.change", actor_id="u", actor_type="user", action="UPDATE", outcome="success",
            attributes={"changes": [1, "x"]},
        )
