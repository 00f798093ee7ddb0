"""After a SIGKILL and a restart, the sealed bytes in the WAL are what is sent: same bytes, same hashes, one chain."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

import otel_audit
from otel_audit.canonical import integrity_hash
from otel_audit.export.payload import decode_payload
from otel_audit.integrity.verify import ChainVerifier
from otel_audit.testing import FakeCollector, record_id
from otel_audit.wal import WALReader

from .builders import KEY, SIGNER

CHILD = Path(__file__).with_name("replay_child.py")
ROOT = Path(__file__).resolve().parents[2]


def test_replay_after_sigkill_resends_the_persisted_bytes(tmp_path: Path) -> None:
    key_file = tmp_path / "hmac.key"
    key_file.write_bytes(KEY)
    key_file.chmod(0o600)
    wal_dir = tmp_path / "wal"
    with FakeCollector() as collector:
        collector.down()  # the collector is unreachable while the child records
        child = subprocess.Popen(
            [sys.executable, str(CHILD), str(wal_dir), collector.grpc_endpoint, str(key_file), "60"],
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        receipts: dict[str, str] = {}
        assert child.stdout is not None
        deadline = time.monotonic() + 60
        for line in child.stdout:
            if line == b"done\n" or time.monotonic() > deadline:
                break
            _, rid, digest = line.decode().split()
            receipts[rid] = digest
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        assert len(receipts) == 60

        stored = {}
        for _, payload in WALReader(wal_dir).read():
            body = bytes(decode_payload(payload)[1])
            record = LogRecord.FromString(body)
            stored[record_id(record)] = body
        assert set(stored) == set(receipts)
        assert all(
            integrity_hash(LogRecord.FromString(b)).hex() == receipts[rid] for rid, b in stored.items()
        )

        collector.up()
        audit = otel_audit.configure(
            service_name="replay-child",
            wal_dir=wal_dir,
            endpoint=collector.grpc_endpoint,
            retry_max_backoff=0.2,
            hmac_key_file=str(key_file),
        )
        try:
            assert audit.force_flush(20)
        finally:
            audit.shutdown(timeout=5)
        received = {record_id(r): r for r in collector.records}
        assert set(received) == set(receipts)
        for rid, record in received.items():
            assert record.SerializeToString() == stored[rid], rid  # the very bytes the child sealed
            assert integrity_hash(record).hex() == receipts[rid]

    verifier = ChainVerifier([SIGNER.verifier()])
    source = verifier.source("received")
    for index, record in enumerate(collector.records):
        verifier.add_proto(record, source, index, ("HMAC-SHA256", None))
    report = verifier.finish()
    assert report.ok and len(report.streams) == 2
    assert report.kinds() == {"unclosed"}  # killed: both streams ended without their close
