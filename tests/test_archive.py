"""Tests for otel_audit.archive: reading the collector's JSON-lines archive back."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otel_audit.archive import (
    ArchivedRecord,
    ArchiveReader,
    ArchiveStats,
    anyvalue_to_python,
    archive_files,
    iter_archive,
    record_from_json,
)

TRACE_ID = "4fa3153e1d2940276bdf40d99d16c977"
SPAN_ID = "5892ca63ebde3611"


def _record(record_id: str, **extra: Any) -> dict[str, Any]:
    """A log record as the collector's file exporter writes it (pdata JSON)."""
    record: dict[str, Any] = {
        "timeUnixNano": "1795552392000000000",
        "observedTimeUnixNano": "1795552392094902468",
        "body": {"stringValue": "hello"},
        "attributes": [
            {"key": "audit.record.id", "value": {"stringValue": record_id}},
            {"key": "audit.sequence.number", "value": {"intValue": "9007199254740993"}},
        ],
        "flags": 1,
        "traceId": TRACE_ID,
        "spanId": SPAN_ID,
        "eventName": "user.login.success",
    }
    record.update(extra)
    return record


def _request(*records: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceLogs": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
                "scopeLogs": [
                    {"scope": {"name": "otel_audit", "version": "0.1.0"}, "logRecords": list(records)}
                ],
            }
        ]
    }


def _line(*ids: str) -> str:
    return json.dumps(_request(*(_record(i) for i in ids)), separators=(",", ":"))


def _ids(records: list[ArchivedRecord]) -> list[str | None]:
    return [r.record_id for r in records]


def test_reader_flattens_a_record_into_typed_fields(tmp_path: Path) -> None:
    """Every field of a record comes back as a python value, resource and scope included."""
    path = tmp_path / "audit.jsonl"
    path.write_text(_line("r1") + "\n")

    (record,) = list(iter_archive([path]))

    assert record.time_unix_nano == 1795552392000000000
    assert record.observed_time_unix_nano == 1795552392094902468
    assert record.event_name == "user.login.success"
    assert record.body == "hello"
    assert record.attributes == {"audit.record.id": "r1", "audit.sequence.number": 9007199254740993}
    assert (record.trace_id, record.span_id, record.flags) == (TRACE_ID, SPAN_ID, 1)
    assert (record.severity_number, record.severity_text) == (0, "")
    assert record.resource == {"service.name": "svc"}
    assert (record.scope_name, record.scope_version) == ("otel_audit", "0.1.0")
    assert (record.source, record.line_number) == (str(path), 1)


def test_anyvalue_to_python_unwraps_every_kind() -> None:
    """Each AnyValue member maps to its python type; int64 strings become exact ints."""
    value = {
        "kvlistValue": {
            "values": [
                {"key": "s", "value": {"stringValue": "x"}},
                {"key": "i", "value": {"intValue": "-9223372036854775808"}},
                {"key": "d", "value": {"doubleValue": 2.5}},
                {"key": "b", "value": {"boolValue": False}},
                {"key": "y", "value": {"bytesValue": "eHk="}},
                {"key": "a", "value": {"arrayValue": {"values": [{"intValue": 1}, {}]}}},
                {"key": "e", "value": {"arrayValue": {}}},
                {"key": "unset"},
            ]
        }
    }

    assert anyvalue_to_python(value) == {
        "s": "x",
        "i": -(2**63),
        "d": 2.5,
        "b": False,
        "y": b"xy",
        "a": [1, None],
        "e": [],
        "unset": None,
    }


def test_anyvalue_to_python_reads_proto3_special_doubles() -> None:
    """NaN and infinities arrive as strings in proto3 JSON and become floats."""
    assert math.isnan(anyvalue_to_python({"doubleValue": "NaN"}))  # type: ignore[arg-type]
    assert anyvalue_to_python({"doubleValue": "-Infinity"}) == -math.inf


@pytest.mark.parametrize(
    "bad",
    [{"fooValue": 1}, {"stringValue": "a", "intValue": "1"}, {"intValue": "1.5"}, {"bytesValue": "%%"}],
)
def test_anyvalue_to_python_rejects_what_is_not_an_anyvalue(bad: dict[str, Any]) -> None:
    """Unknown members, two members, bad ints and bad base64 are errors, not guesses."""
    with pytest.raises(ValueError):
        anyvalue_to_python(bad)


def test_torn_last_line_is_skipped_and_counted(tmp_path: Path) -> None:
    """A request cut short by a killed collector does not hide the complete ones before it."""
    path = tmp_path / "audit.jsonl"
    torn = _line("r3")[:57]
    path.write_text(_line("r1") + "\n" + _line("r2") + "\n" + torn)
    reader = ArchiveReader(path)

    assert _ids(list(reader.records())) == ["r1", "r2"]
    assert reader.torn_lines == 1
    assert reader.stats.problems == [f"{path}:3: torn request at character 0"]


def test_torn_request_glued_to_the_next_one_keeps_the_next_one(tmp_path: Path) -> None:
    """After a kill, the restarted collector appends right after the fragment, on the same line."""
    path = tmp_path / "audit.jsonl"
    path.write_text(_line("r1") + "\n" + _line("r2")[:80] + _line("r3") + "\n" + _line("r4") + "\n")
    reader = ArchiveReader([path])

    assert _ids(list(reader.records())) == ["r1", "r3", "r4"]
    assert (reader.stats.torn_lines, reader.stats.requests, reader.stats.lines) == (1, 3, 3)


def test_request_whose_newline_was_never_written_is_kept(tmp_path: Path) -> None:
    """The exporter writes the JSON and its newline separately: a kill between them tears nothing."""
    path = tmp_path / "audit.jsonl"
    path.write_text(_line("r1") + _line("r2") + "\n")
    reader = ArchiveReader(path)

    assert _ids(list(reader.records())) == ["r1", "r2"]
    assert reader.torn_lines == 0


def test_gzip_files_are_read_and_a_truncated_one_counts_as_torn(tmp_path: Path) -> None:
    """Gzip is recognised by its magic bytes; a gzip cut short yields what precedes the cut."""
    whole = tmp_path / "a.jsonl.gz"
    whole.write_bytes(gzip.compress((_line("r1") + "\n" + _line("r2") + "\n").encode()))
    cut = tmp_path / "b.bin"
    big = "".join(_line(f"c{i}") + "\n" for i in range(200)).encode()
    cut.write_bytes(gzip.compress(big)[:-200])
    stats = ArchiveStats()

    records = list(iter_archive([whole, cut], stats=stats))

    assert _ids(records)[:3] == ["r1", "r2", "c0"]
    assert 2 < len(records) < 202
    assert stats.torn_lines == 1
    assert stats.files == 2


def test_files_are_read_in_the_order_given(tmp_path: Path) -> None:
    """Several files form one stream, in argument order, with per-file line numbers."""
    first, second = tmp_path / "1.jsonl", tmp_path / "2.jsonl"
    first.write_text(_line("a", "b") + "\n")
    second.write_text(_line("c") + "\n")

    records = list(iter_archive([second, first]))

    assert _ids(records) == ["c", "a", "b"]
    assert [(Path(r.source).name, r.line_number) for r in records] == [
        ("2.jsonl", 1),
        ("1.jsonl", 1),
        ("1.jsonl", 1),
    ]


def test_span_lines_are_counted_not_yielded(tmp_path: Path) -> None:
    """A file shared with the traces pipeline yields only log records."""
    path = tmp_path / "mixed.jsonl"
    spans: dict[str, Any] = {"resourceSpans": [{"resource": {}, "scopeSpans": []}]}
    path.write_text(json.dumps(spans) + "\n" + _line("r1") + "\n")
    reader = ArchiveReader(path)

    assert _ids(list(reader.records())) == ["r1"]
    assert (reader.stats.other_signal_lines, reader.stats.malformed_lines) == (1, 0)


def test_malformed_requests_are_counted_with_their_location(tmp_path: Path) -> None:
    """Complete JSON that is not a logs request is skipped whole, and the place is reported."""
    path = tmp_path / "audit.jsonl"
    bad_ids = _request(_record("x1"), _record("x2", traceId="not-an-id"))
    path.write_text("[1, 2]\n" + json.dumps(bad_ids) + "\n" + '{"hello": 1}\n' + _line("r1") + "\n")
    reader = ArchiveReader(path)

    assert _ids(list(reader.records())) == ["r1"]
    assert reader.stats.malformed_lines == 3
    assert reader.stats.torn_lines == 0
    assert reader.stats.problems[0] == f"{path}:1: not a JSON object but list"
    assert reader.stats.problems[1].startswith(f"{path}:2: not an OTLP logs request: traceId")


def test_a_resource_that_is_not_an_object_is_counted_not_raised(tmp_path: Path) -> None:
    """Nothing in a file's content makes the reader raise: a non-object resource is a malformed request."""
    path = tmp_path / "audit.jsonl"
    bad = _request(_record("x1"))
    bad["resourceLogs"][0]["resource"] = "svc"
    path.write_text(json.dumps(bad) + "\n" + _line("r1") + "\n")
    reader = ArchiveReader(path)

    assert _ids(list(reader.records())) == ["r1"]
    assert reader.stats.malformed_lines == 1
    assert reader.stats.problems[0].startswith(f"{path}:1: not an OTLP logs request: resource")


def test_record_from_json_builds_what_the_reader_yields(tmp_path: Path) -> None:
    """One record decoded from its parts equals the reader's, and breaks the same rules the same way."""
    request = _request(_record("r1"))
    path = tmp_path / "audit.jsonl"
    path.write_text(json.dumps(request) + "\n")
    (expected,) = list(iter_archive(path))
    rl = request["resourceLogs"][0]
    sl = rl["scopeLogs"][0]

    record = record_from_json(rl["resource"], sl["scope"], sl["logRecords"][0], source="x", line_number=3)

    assert record == expected
    assert dict(record.resource) == {"service.name": "svc"}
    assert (record.scope_name, record.source, record.line_number) == ("otel_audit", "x", 3)
    assert record_from_json(None, None, {}).resource == {}
    with pytest.raises(ValueError, match="traceId"):
        record_from_json(rl["resource"], sl["scope"], _record("r2", traceId="not-an-id"))
    with pytest.raises(ValueError, match="scope"):
        record_from_json(rl["resource"], ["not", "a", "scope"], _record("r2"))


def test_protobuf_json_with_base64_ids_and_snake_case_is_read(tmp_path: Path) -> None:
    """Generic proto3 JSON (base64 ids, proto field names) reads the same as pdata's hex form."""
    request = json_format.ParseDict(
        _request(_record("r1")), ExportLogsServiceRequest(), ignore_unknown_fields=False
    )
    # pdata writes hex ids; proto3 JSON of the same bytes is base64. Feed the reader base64.
    log = request.resource_logs[0].scope_logs[0].log_records[0]
    log.trace_id, log.span_id = bytes.fromhex(TRACE_ID), bytes.fromhex(SPAN_ID)
    path = tmp_path / "audit.jsonl"
    path.write_text(json.dumps(json_format.MessageToDict(request, preserving_proto_field_name=True)) + "\n")

    (record,) = list(iter_archive(path))

    assert (record.trace_id, record.span_id) == (TRACE_ID, SPAN_ID)
    assert record.attributes["audit.sequence.number"] == 9007199254740993
    assert record.event_name == "user.login.success"


def test_record_id_prefers_audit_record_id_then_log_record_uid() -> None:
    """The dedup key falls back to the generic semconv attribute, then to None."""
    base = dict(
        time_unix_nano=0,
        observed_time_unix_nano=0,
        event_name="e",
        body=None,
        trace_id="",
        span_id="",
        flags=0,
        severity_number=0,
        severity_text="",
        resource={},
        scope_name="",
        scope_version="",
    )
    both = ArchivedRecord(attributes={"log.record.uid": "u", "audit.record.id": "a"}, **base)  # type: ignore[arg-type]
    uid = ArchivedRecord(attributes={"log.record.uid": "u"}, **base)  # type: ignore[arg-type]
    none = ArchivedRecord(attributes={}, **base)  # type: ignore[arg-type]

    assert (both.record_id, uid.record_id, none.record_id) == ("a", "u", None)


def test_equal_records_from_different_places_compare_equal(tmp_path: Path) -> None:
    """A record archived twice (a retried request) is equal to itself wherever it was read."""
    one, two = tmp_path / "1.jsonl", tmp_path / "2.jsonl"
    one.write_text(_line("r1") + "\n")
    two.write_text("\n" + _line("r1") + "\n")

    first, second = iter_archive([one, two])

    assert first == second
    assert first.line_number != second.line_number


def test_missing_file_raises_unless_missing_ok(tmp_path: Path) -> None:
    """A collector that has not written yet has no archive; callers that poll can say so."""
    missing = tmp_path / "nope.jsonl"

    with pytest.raises(FileNotFoundError):
        list(iter_archive([missing]))
    assert list(iter_archive([missing], missing_ok=True)) == []


def test_each_pass_starts_fresh_statistics(tmp_path: Path) -> None:
    """Reading twice reports the same counts, not their sum."""
    path = tmp_path / "audit.jsonl"
    path.write_text(_line("r1", "r2") + "\n" + "{tor")
    reader = ArchiveReader(path)

    list(reader.records())
    list(reader.records())

    assert (reader.stats.records, reader.stats.torn_lines) == (2, 1)


def test_archive_files_lists_rotated_files_oldest_first_then_the_active_one(tmp_path: Path) -> None:
    """Rotated backups, in both naming schemes, come before the file being written."""
    for name in [
        "audit-2026-01-02T00-00-00.000-size.jsonl",
        "audit-2025-12-31T23-59-59.999.jsonl",
        "audit.jsonl",
        "other-2026-01-01T00-00-00.000-size.jsonl",
        "traces.jsonl",
    ]:
        (tmp_path / name).write_text("")

    assert [p.name for p in archive_files(tmp_path / "audit.jsonl")] == [
        "audit-2025-12-31T23-59-59.999.jsonl",
        "audit-2026-01-02T00-00-00.000-size.jsonl",
        "audit.jsonl",
    ]
    assert archive_files(tmp_path / "missing" / "audit.jsonl") == []


def test_a_plain_archive_whose_torn_first_line_starts_like_gzip_is_still_read_as_text(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"\x1f\x8b\x08junk\n" + (_line("a") + "\n" + _line("b") + "\n").encode())
    reader = ArchiveReader([path])
    assert _ids(list(reader.records())) == ["a", "b"]
