"""What the archive must show after a scale-out run: every acknowledged record, once, in order per stream."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otel_audit.archive import ArchivedRecord
from otel_audit.integrity import check_chain
from otel_audit.integrity.digest import DIGEST_EVENT

STREAM_ID = "audit.sequence.stream_id"
SEQ_NUMBER = "audit.sequence.number"
SEQ_END = "audit.sequence.end"


@dataclass
class DeliveryReport:
    archived: int
    unique: int
    duplicates: int
    late_arrivals: int
    """Records that reached the archive after a later record of their stream (a gateway's replay)."""


def check_delivery(
    records: Sequence[ArchivedRecord], protos: Sequence[LogRecord], acked: Mapping[str, Sequence[str]]
) -> DeliveryReport:
    """Assert the archive holds every id of ``acked`` (per app, in record order) exactly once after dedup.

    Exactly once: copies of one id are identical, no id is unknown (stream end records aside).
    In order per stream: each app's records, deduplicated and ordered by ``audit.sequence.number``,
    are numbered 1..N without gap and are the app's acknowledged ids in the order it recorded them,
    and the hash chain over them verifies (each record names its predecessor's hash), so the
    order is proven, not inferred. Arrival order at the archive is only counted: with several
    gateways, each with its own queue, a batch replayed by a restarted gateway lands after newer
    batches that went through the other one.
    """
    first: dict[str, ArchivedRecord] = {}
    for record in records:
        record_id = record.record_id
        assert record_id, f"archived record without audit.record.id at {record.source}:{record.line_number}"
        if record_id in first:
            assert record == first[record_id], f"record {record_id} archived twice with different content"
        else:
            first[record_id] = record
    by_stream: dict[str, list[ArchivedRecord]] = defaultdict(list)
    arrival: dict[str, list[int]] = defaultdict(list)
    for record in first.values():
        stream, number = record.attributes.get(STREAM_ID), record.attributes.get(SEQ_NUMBER)
        assert isinstance(stream, str) and isinstance(number, int), record
        by_stream[stream].append(record)
        arrival[stream].append(number)
    all_acked = {record_id for ids in acked.values() for record_id in ids}
    missing = all_acked - first.keys()
    assert not missing, f"{len(missing)} acknowledged records never reached the archive, e.g. {sorted(missing)[:3]}"
    # End records (graceful close) and digest records (every 1,000) are the library's own.
    foreign = [
        r
        for r in first.values()
        if r.record_id not in all_acked and not r.attributes.get(SEQ_END) and r.event_name != DIGEST_EVENT
    ]
    assert not foreign, f"{len(foreign)} archived records nobody acknowledged, e.g. {foreign[:1]}"

    streams_of_apps = set()
    for app, ids in acked.items():
        stream = first[ids[0]].attributes[STREAM_ID]
        assert isinstance(stream, str)
        streams_of_apps.add(stream)
        ordered = sorted(by_stream[stream], key=lambda r: int(r.attributes[SEQ_NUMBER]))  # type: ignore[arg-type]
        numbers = [int(r.attributes[SEQ_NUMBER]) for r in ordered]  # type: ignore[arg-type]
        assert numbers == list(range(1, len(numbers) + 1)), f"{app}: sequence numbers have gaps"
        body = [r.record_id for r in ordered if not r.attributes.get(SEQ_END) and r.event_name != DIGEST_EVENT]
        assert body == list(ids), f"{app}: archived order by sequence number differs from record order"
    assert streams_of_apps == set(by_stream), "records of a stream no app wrote"

    unique_protos: dict[str, LogRecord] = {}
    for proto in protos:
        unique_protos.setdefault(_id(proto), proto)
    number_of = {rid: int(r.attributes[SEQ_NUMBER]) for rid, r in first.items()}  # type: ignore[arg-type]
    chained = sorted(unique_protos.values(), key=lambda p: number_of[_id(p)])
    problems = check_chain(chained)
    assert problems == [], f"{len(problems)} chain problems, first: {problems[:3]}"

    return DeliveryReport(len(records), len(first), len(records) - len(first), _late(arrival))


def _id(proto: LogRecord) -> str:
    return next(str(kv.value.string_value) for kv in proto.attributes if kv.key == "audit.record.id")


def _late(arrival: Mapping[str, Sequence[int]]) -> int:
    late = 0
    for numbers in arrival.values():
        highest = 0
        for number in numbers:
            if number < highest:
                late += 1
            highest = max(highest, number)
    return late
