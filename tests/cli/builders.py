"""Real inputs for the CLI tests: a WAL written by the real WAL + payload modules, and a collector-style archive."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from otel_audit.export.contexts import ContextStore
from otel_audit.export.payload import encode_payload
from otel_audit.record import build_audit_log_record
from otel_audit.wal import WAL

BASE_NS = 1_775_110_000_000_000_000  # 2026-04-02T06:06:40Z
STEP_NS = 1_000_000_000


@dataclass(frozen=True)
class Spec:
    """What record number `i` of a test data set holds, so tests can predict every field."""

    i: int

    @property
    def record_id(self) -> str:
        return f"00000000-0000-4000-8000-{self.i:012d}"

    @property
    def user(self) -> str:
        return f"u-{self.i % 5}"

    @property
    def event(self) -> str:
        return "user.login.failure" if self.i % 4 == 0 else "user.login.success"

    @property
    def outcome(self) -> str:
        return "failure" if self.i % 4 == 0 else "success"

    @property
    def action(self) -> str:
        return "LOGIN"

    @property
    def target(self) -> str:
        return f"/api/items/{self.i}"

    @property
    def trace_id(self) -> int:
        return (0xABCD << 112) + self.i

    @property
    def span_id(self) -> int:
        return 0x1000 + self.i

    @property
    def time_ns(self) -> int:
        return BASE_NS + self.i * STEP_NS


def build_record(spec: Spec) -> LogRecord:
    rec = build_audit_log_record(
        spec.event,
        actor_id=spec.user,
        actor_type="user",
        action=spec.action,
        outcome=spec.outcome,
        target_type="http.endpoint",
        target_id=spec.target,
        source_id="203.0.113.42",
        attributes={
            "http.request.method": "POST",
            "http.response.status_code": 401 if spec.outcome == "failure" else 200,
        },
        timestamp=spec.time_ns,
        observed_timestamp_ns=spec.time_ns + 5,
        record_id=spec.record_id,
        trace_id=spec.trace_id,
        span_id=spec.span_id,
        trace_flags=1,
    )
    return rec.proto


def context_message(service: str = "billing") -> ResourceLogs:
    return ResourceLogs(
        resource=Resource(
            attributes=[
                KeyValue(key="service.name", value=AnyValue(string_value=service)),
                KeyValue(key="host.name", value=AnyValue(string_value="web-1")),
            ]
        ),
        scope_logs=[ScopeLogs(scope=InstrumentationScope(name="otel_audit", version="0.1.0"))],
    )


def write_wal(
    directory: Path, indexes: Iterable[int], *, segment_bytes: int = 32 << 20, batch: int = 1000
) -> list[int]:
    """Append records 1..n through the real WAL with the real payload format; returns their seqs."""
    contexts = ContextStore(directory)
    seqs: list[int] = []
    with WAL.open(directory, durability="never", segment_bytes=segment_bytes) as wal:
        cid = contexts.put(context_message().SerializeToString())
        chunk: list[bytes] = []
        for i in indexes:
            chunk.append(encode_payload(cid, build_record(Spec(i)).SerializeToString()))
            if len(chunk) >= batch:
                seqs.extend(wal.append_many(chunk))
                chunk = []
        if chunk:
            seqs.extend(wal.append_many(chunk))
    return seqs


def request_line(specs: Sequence[Spec], service: str = "billing") -> str:
    """One archive line as the collector's file exporter writes it (OTLP/JSON, hex ids)."""
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    rl.CopyFrom(context_message(service))
    sl = rl.scope_logs[0]
    for spec in specs:
        sl.log_records.append(build_record(spec))
    data = MessageToDict(request)
    # pdata writes trace and span ids as hex, protobuf's generic JSON as base64.
    for lr in data["resourceLogs"][0]["scopeLogs"][0]["logRecords"]:
        idx = int(lr["attributes"][0]["value"]["stringValue"].rsplit("-", 1)[1])
        lr["traceId"] = f"{Spec(idx).trace_id:032x}"
        lr["spanId"] = f"{Spec(idx).span_id:016x}"
    return json.dumps(data, separators=(",", ":")) + "\n"


def write_archive(path: Path, indexes: Sequence[int], per_request: int = 7) -> None:
    with open(path, "w") as f:
        for start in range(0, len(indexes), per_request):
            f.write(request_line([Spec(i) for i in indexes[start : start + per_request]]))


def write_root(root: Path, shards: dict[str, Sequence[int]], root_records: Sequence[int]) -> dict[str, Path]:
    """A multi-process `wal_dir`: the root shard and `shards/<id>/`, each a real WAL with its own contexts.

    Returns each shard's directory by id; the root's id (its `shard-id` file) is "r000000000000000".
    """
    from otel_audit.shards import SHARD_ID_FILE, SHARDS_DIRNAME

    write_wal(root, root_records, segment_bytes=4096, batch=2)
    (root / SHARD_ID_FILE).write_text("r000000000000000")
    paths = {"r000000000000000": root}
    (root / SHARDS_DIRNAME).mkdir(exist_ok=True)
    for shard, indexes in shards.items():
        path = root / SHARDS_DIRNAME / shard
        write_wal(path, indexes, segment_bytes=4096, batch=2)
        (path / SHARD_ID_FILE).write_text(shard)
        paths[shard] = path
    return paths
