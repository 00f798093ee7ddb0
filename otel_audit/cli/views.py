"""How one record looks in each output form (table row, JSON, CSV, detail), the same for every source."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from otel_audit.archive import ArchivedRecord, PyValue

from .filters import format_time, format_time_ns
from .sources import Entry

LIST_COLUMNS = ("SEQ", "TIME", "EVENT", "USER", "ACTION", "OUTCOME", "RESOURCE", "TRACE ID")
# Fixed widths for `tail -f`, whose rows are printed one call at a time and must still line up.
TAIL_WIDTHS = (8, 24, 24, 16, 10, 8, 24, 13)
# The same with room for SHARD:SEQ (a 16-digit shard id), for a WAL root with shards.
TAIL_WIDTHS_SHARDS = (26, *TAIL_WIDTHS[1:])
# Enough hex digits to tell traces apart on a screen and to paste into --trace-id (a prefix).
TRACE_ID_SHOWN = 12

CSV_COLUMNS = (
    "seq",
    "time",
    "observed_time",
    "event_name",
    "record_id",
    "actor_id",
    "actor_type",
    "action",
    "outcome",
    "target_id",
    "target_type",
    "source_id",
    "trace_id",
    "span_id",
    "body",
    "attributes",
    "resource",
)


def list_row(entry: Entry) -> tuple[str, ...]:
    """The list columns; reads only what the table shows, so no full decode per row."""
    trace = entry.trace_id
    return (
        entry.key,
        format_time(entry.time_unix_nano),
        entry.event_name or "-",
        entry.attribute("audit.actor.id") or "-",
        entry.attribute("audit.action") or "-",
        entry.attribute("audit.outcome") or "-",
        entry.attribute("audit.target.id") or "-",
        (trace[:TRACE_ID_SHOWN] + "…") if len(trace) > TRACE_ID_SHOWN else (trace or "-"),
    )


def _jsonable(value: PyValue) -> Any:
    if isinstance(value, bytes):
        import base64

        return base64.b64encode(value).decode("ascii")
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _mapping(values: Mapping[str, PyValue]) -> dict[str, Any]:
    return {k: _jsonable(v) for k, v in values.items()}


def record_json(seq: int, record: ArchivedRecord, location: str, shard: str | None = None) -> dict[str, Any]:
    """Every field of a record as one JSON object (`list --json`, `get --json`, `export --format jsonl`).

    Times are given twice: ns since the epoch (exact, sortable) and ISO-8601 UTC (readable).
    `shard` (the WAL shard's id) is present only for records outside the root shard, whose seqs
    repeat those of other shards.
    """
    out: dict[str, Any] = {"seq": seq}
    if shard is not None:
        out["shard"] = shard
    out |= {
        "record_id": record.record_id,
        "time": format_time_ns(record.time_unix_nano),
        "time_unix_nano": record.time_unix_nano,
        "observed_time": format_time_ns(record.observed_time_unix_nano),
        "observed_time_unix_nano": record.observed_time_unix_nano,
        "event_name": record.event_name,
        "trace_id": record.trace_id,
        "span_id": record.span_id,
        "flags": record.flags,
        "body": _jsonable(record.body),
        "attributes": _mapping(record.attributes),
        "resource": _mapping(record.resource),
        "scope": {"name": record.scope_name, "version": record.scope_version},
        "location": location,
    }
    if record.severity_number or record.severity_text:
        out["severity_number"] = record.severity_number
        out["severity_text"] = record.severity_text
    return out


def _text(value: PyValue) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(_jsonable(value), ensure_ascii=False, separators=(",", ":"))


def csv_row(seq: int | str, record: ArchivedRecord) -> list[str]:
    """One CSV line: the audit columns spelled out, the remaining attributes and resource as JSON.

    `seq` is the record's key: SEQ, or SHARD:SEQ outside a WAL's root shard.
    """
    attrs = record.attributes
    return [
        str(seq),
        format_time_ns(record.time_unix_nano),
        format_time_ns(record.observed_time_unix_nano),
        record.event_name,
        record.record_id or "",
        _text(attrs.get("audit.actor.id")),
        _text(attrs.get("audit.actor.type")),
        _text(attrs.get("audit.action")),
        _text(attrs.get("audit.outcome")),
        _text(attrs.get("audit.target.id")),
        _text(attrs.get("audit.target.type")),
        _text(attrs.get("audit.source.id")),
        record.trace_id,
        record.span_id,
        _text(record.body),
        json.dumps(_mapping(attrs), ensure_ascii=False, separators=(",", ":")),
        json.dumps(_mapping(record.resource), ensure_ascii=False, separators=(",", ":")),
    ]


def detail_sections(
    seq: int | str, record: ArchivedRecord, location: str
) -> list[tuple[str, list[tuple[str, str]]]]:
    """`get`'s output: the record's fields, then its attributes, then the resource, nothing left out."""
    fields = [
        ("seq", str(seq)),
        ("record id", record.record_id or "-"),
        ("time", f"{format_time_ns(record.time_unix_nano)}  ({record.time_unix_nano})"),
        (
            "observed time",
            f"{format_time_ns(record.observed_time_unix_nano)}  ({record.observed_time_unix_nano})",
        ),
        ("event", record.event_name or "-"),
        ("trace id", record.trace_id or "-"),
        ("span id", record.span_id or "-"),
        ("trace flags", f"0x{record.flags:02x}"),
    ]
    if record.severity_number or record.severity_text:
        fields.append(("severity", f"{record.severity_text or '-'} ({record.severity_number})"))
    fields.append(("body", _text(record.body) or "-"))
    scope = record.scope_name + (f" {record.scope_version}" if record.scope_version else "")
    fields.append(("scope", scope or "-"))
    fields.append(("location", location))
    attributes = [(k, _text(v)) for k, v in record.attributes.items()]
    resource = [(k, _text(v)) for k, v in record.resource.items()]
    return [("Record", fields), ("Attributes", attributes), ("Resource", resource)]


__all__ = [
    "CSV_COLUMNS",
    "LIST_COLUMNS",
    "TAIL_WIDTHS",
    "TAIL_WIDTHS_SHARDS",
    "csv_row",
    "detail_sections",
    "list_row",
    "record_json",
]
