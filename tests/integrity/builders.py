"""Build real WALs and collector-style archives of sealed, signed, digested audit streams for the tests."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs
from opentelemetry.sdk.resources import Resource

from otel_audit.encoding import encode_context
from otel_audit.export.contexts import ContextStore
from otel_audit.export.payload import encode_payload
from otel_audit.integrity.chain import StreamChain, stream_end_record
from otel_audit.integrity.digest import DigestPolicy, StreamDigester
from otel_audit.integrity.signing import HmacSha256Signer, Signer
from otel_audit.record import AuditRecord, build_audit_log_record
from otel_audit.wal import WAL

KEY = b"integrity-test-key-0123456789abcdef"
SIGNER = HmacSha256Signer(KEY)


def make_record(n: int, stream: int = 0) -> AuditRecord:
    return build_audit_log_record(
        "document.update",
        actor_id=f"user-{n % 7}",
        actor_type="user",
        action="UPDATE",
        outcome="success" if n % 5 else "failure",
        target_type="database.table",
        target_id=f"docs/{n}",
        source_id="198.51.100.7",
        attributes={"n": n, "stream": stream, "ratio": n / 7, "tags": ["a", "b"]},
        body={"n": n} if n % 3 == 0 else None,
        trace_id=(n + 1) * 0x1111 if n % 2 else None,
        span_id=(n + 1) * 0x22 if n % 2 else None,
    )


@dataclass
class Streams:
    """Sealed records of several streams in emit order, interleaved, with the resource they share."""

    records: list[LogRecord] = field(default_factory=list)
    hashes: list[bytes] = field(default_factory=list)
    stream_ids: list[str] = field(default_factory=list)
    resource: Resource = field(default_factory=lambda: Resource.create({"service.name": "integrity-test"}))


def make_streams(
    count: int,
    *,
    streams: int = 2,
    signer: Signer | None = SIGNER,
    close: bool = True,
    digest_every: int | None = 25,
) -> Streams:
    """`count` records round-robin over `streams` chains, digests every `digest_every`, closed by end records."""
    chains = [StreamChain(signer) for _ in range(streams)]
    policy = DigestPolicy(digest_every, None)
    digesters = [StreamDigester(policy) for _ in range(streams)]
    attributes = signer.resource_attributes() if signer is not None else {}
    out = Streams(resource=Resource.create({"service.name": "integrity-test", **attributes}))
    out.stream_ids = [c.stream_id for c in chains]

    def seal(index: int, record: AuditRecord, *, end: bool = False) -> None:
        digest = chains[index].seal(record, end=end)
        out.records.append(record.proto)
        out.hashes.append(digest)
        due = digesters[index].after_persist(record, digest) if digest_every else None
        if due is not None:
            seal(index, due)

    for n in range(count):
        seal(n % streams, make_record(n, n % streams))
    if close:
        for index in range(streams):
            seal(index, stream_end_record(), end=True)
    return out


def write_wal(directory: Path, streams: Streams, *, segment_bytes: int = 32 << 20) -> list[int]:
    """Append the records to a fresh WAL exactly as the pipeline does; returns their seqs."""
    with WAL.open(directory, durability="never", segment_bytes=segment_bytes) as wal:
        context_id = ContextStore(directory).put(encode_context(streams.resource, None))
        # One append per record, as the pipeline does: segments roll between appends.
        return [
            wal.append(encode_payload(context_id, r.SerializeToString()), sync=False) for r in streams.records
        ]


def request_line(records: Sequence[LogRecord], resource: Resource) -> str:
    """One archive line as the collector's `file` exporter writes it: OTLP/JSON, hex ids, int64 as strings."""
    context = ResourceLogs.FromString(encode_context(resource, None))
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    rl.CopyFrom(context)
    rl.scope_logs[0].log_records.extend(records)
    return json.dumps(_hex_ids(MessageToDict(request)), separators=(",", ":"), ensure_ascii=False)


def write_archive(
    path: Path, streams: Streams, *, batch: int = 50, order: Sequence[int] | None = None
) -> Path:
    """Write the records (optionally in another `order` of indexes) as request lines of `batch` records."""
    indexes = list(order) if order is not None else list(range(len(streams.records)))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        for start in range(0, len(indexes), batch):
            chunk = [streams.records[i] for i in indexes[start : start + batch]]
            out.write(request_line(chunk, streams.resource) + "\n")
    return path


def _hex_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: base64.b64decode(v).hex() if k in ("traceId", "spanId") and isinstance(v, str) else _hex_ids(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_hex_ids(v) for v in value]
    return value
