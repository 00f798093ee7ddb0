"""Throughput of the sender on the in-process FakeCollector, and request-building cost per record.

Run: .venv/bin/python -m tests.export.bench_sender [records]
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

from otel_audit.export.contexts import ContextStore
from otel_audit.export.payload import encode_payload
from otel_audit.export.request import RequestBuilder
from otel_audit.export.sender import Sender
from otel_audit.testing import FakeCollector
from otel_audit.wal import WAL

from .conftest import transport_for
from .protos import context_blob, record


def build_cost(n_batch: int = 512, rounds: int = 200) -> float:
    contexts = {b"k" * 8: context_blob()}
    payloads = [encode_payload(b"k" * 8, record(f"{i:036d}", extra_bytes=150)) for i in range(n_batch)]
    builder = RequestBuilder(contexts.__getitem__)
    start = time.perf_counter()
    for _ in range(rounds):
        builder.build(payloads)
    return (time.perf_counter() - start) / rounds / n_batch * 1e6


def throughput(protocol: str, n: int, compression: str | None) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp, FakeCollector() as collector:
        wal_dir = Path(tmp) / "wal"
        wal = WAL.open(wal_dir, durability="never")
        contexts = ContextStore(wal_dir)
        cid = contexts.put(context_blob())
        for start in range(0, n, 10_000):
            wal.append_many(
                [encode_payload(cid, record(f"{i:036d}")) for i in range(start, min(n, start + 10_000))]
            )
        size = len(encode_payload(cid, record("0" * 36)))
        sender = Sender(wal, contexts, transport_for(protocol, collector, compression=compression))
        t0 = time.perf_counter()
        sender.start()
        assert sender.force_flush(300), sender.stats()
        elapsed = time.perf_counter() - t0
        assert len(collector.records) == n
        sender.shutdown(5)
        wal.close()
        return n / elapsed, size


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    print(f"request building: {build_cost():.2f} us/record (512-record batches, ~250-byte records)")
    for protocol, compression in (("grpc", None), ("http", None), ("grpc", "gzip"), ("http", "gzip")):
        rate, size = throughput(protocol, n, compression)
        print(f"{protocol:5} {compression or 'none':5} {n} records of {size} B: {rate:,.0f} records/s")
    print(
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (sender + collector in one process)"
    )


if __name__ == "__main__":
    main()
