"""Request bytes built by concatenation are identical to the protobuf library's own encoding."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs

from otel_audit.exceptions import WALContextError, WALFormatError
from otel_audit.export.payload import encode_payload
from otel_audit.export.request import ContextTemplate, RequestBuilder, build_request, varint

from .protos import context_blob, record


def library_request(groups: Sequence[tuple[bytes, Sequence[bytes]]]) -> bytes:
    """The reference: parse everything and let the library serialize the request."""
    resource_logs = []
    for blob, records in groups:
        rl = ResourceLogs.FromString(blob)
        rl.scope_logs[0].log_records.extend(LogRecord.FromString(r) for r in records)
        resource_logs.append(rl)
    return bytes(ExportLogsServiceRequest(resource_logs=resource_logs).SerializeToString())


def built(groups: Sequence[tuple[bytes, Sequence[bytes]]]) -> bytes:
    return build_request([(ContextTemplate.parse(blob), records) for blob, records in groups])


@pytest.mark.parametrize(
    "blob",
    [
        context_blob(),
        context_blob(empty_resource=True),
        context_blob(resource_schema="https://opentelemetry.io/schemas/1.26.0"),
        context_blob(scope_schema="https://opentelemetry.io/schemas/1.27.0", resource_schema="https://r"),
        context_blob(scope="", scope_version=""),
    ],
    ids=["plain", "empty-resource", "resource-schema", "both-schemas", "empty-scope"],
)
def test_one_context_matches_library_encoding(blob: bytes) -> None:
    """Resource, scope and schema urls land where the library puts them."""
    records = [record(f"id-{i}") for i in range(5)]
    assert built([(blob, records)]) == library_request([(blob, records)])


def test_multiple_contexts_keep_their_order() -> None:
    """Groups become consecutive ResourceLogs, records stay in order, repeated contexts repeat."""
    a, b = context_blob("a"), context_blob("b", scope_schema="https://s")
    groups = [(a, [record("1"), record("2")]), (b, [record("3")]), (a, [record("4")])]
    assert built(groups) == library_request(groups)


@pytest.mark.parametrize("size", [0, 100, 127, 128, 200, 4095, 4096, 16383, 16384, 70_000, 3 << 20])
def test_big_records_need_multi_byte_varints(size: int) -> None:
    """Lengths across every varint width (1 to 4 bytes) frame correctly at each nesting level."""
    records = [record("big", extra_bytes=size), record("small")]
    assert built([(context_blob(), records)]) == library_request([(context_blob(), records)])


def test_empty_record_and_empty_group() -> None:
    """A record with no fields and a group of no records still match the library."""
    empty = b""
    assert built([(context_blob(), [empty])]) == library_request([(context_blob(), [empty])])
    assert built([(context_blob(), [])]) == library_request([(context_blob(), [])])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 300)), min_size=1, max_size=30))
def test_builder_groups_consecutive_payloads_like_the_library(items: list[tuple[str, int]]) -> None:
    """RequestBuilder's grouping of WAL payloads equals the library's request of the same groups."""
    blobs = {name: context_blob(name) for name in "abc"}
    ids = {name: bytes([ord(name)]) * 8 for name in "abc"}
    by_id = {ids[n]: blobs[n] for n in "abc"}
    payloads = []
    groups: list[tuple[bytes, list[bytes]]] = []
    for i, (name, extra) in enumerate(items):
        rec = record(str(i), extra_bytes=extra)
        payloads.append(encode_payload(ids[name], rec))
        if groups and groups[-1][0] == blobs[name]:
            groups[-1][1].append(rec)
        else:
            groups.append((blobs[name], [rec]))
    assert RequestBuilder(by_id.__getitem__).build(payloads) == library_request(groups)


def test_varint_matches_protobuf() -> None:
    """The hand-made varint is protobuf's (AnyValue.int_value is field 3, a varint)."""
    for n in (0, 1, 127, 128, 300, 16383, 16384, 2**21, 2**35, 2**63 - 1):
        assert AnyValue(int_value=n).SerializeToString() == b"\x18" + varint(n)


def test_context_with_records_is_refused() -> None:
    """A context blob must hold no records, else the splice would mix them."""
    rl = ResourceLogs.FromString(context_blob())
    rl.scope_logs[0].log_records.add().event_name = "x"
    with pytest.raises(ValueError, match="already holds log records"):
        ContextTemplate.parse(rl.SerializeToString())


def test_context_with_two_scopes_is_refused() -> None:
    """Exactly one ScopeLogs per context."""
    rl = ResourceLogs.FromString(context_blob())
    rl.scope_logs.add()
    with pytest.raises(ValueError, match="exactly one ScopeLogs"):
        ContextTemplate.parse(rl.SerializeToString())


def test_bad_payloads_raise_errors_that_name_the_cause() -> None:
    """Unknown version and unknown context are told apart by check()."""
    builder = RequestBuilder({b"k" * 8: context_blob()}.__getitem__)
    good = encode_payload(b"k" * 8, record("1"))
    with pytest.raises(WALFormatError, match="version 9"):
        builder.build([good, b"\x09" + good[1:]])

    def missing(cid: bytes) -> bytes:
        raise WALContextError("gone", context_id=cid.hex(), path="p")

    with pytest.raises(WALContextError):
        RequestBuilder(missing).check(good)


def test_building_costs_about_a_microsecond_per_record() -> None:
    """The hot path stays cheap: well under the ~1 us budget of design section 4b."""
    builder = RequestBuilder({b"k" * 8: context_blob()}.__getitem__)
    payloads = [encode_payload(b"k" * 8, record(f"{i:036d}", extra_bytes=150)) for i in range(512)]
    builder.build(payloads)
    rounds = 50
    start = time.perf_counter()
    for _ in range(rounds):
        builder.build(payloads)
    per_record_us = (time.perf_counter() - start) / rounds / len(payloads) * 1e6
    assert per_record_us < 3.0, per_record_us
