"""The tamper suite on an archive the real collector wrote from the real pipeline: every mutation detected."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e.harness import Collector, CollectorError, resolve_binary

import otel_audit
from otel_audit.integrity.signing import HmacSha256Verifier
from otel_audit.integrity.verify import ChainVerifier, VerifyReport, verify_archive

from . import tamper
from .tamper import Record

pytestmark = pytest.mark.e2e

KEY = b"real-archive-key-0123456789abcdef"
KEYS = [HmacSha256Verifier(KEY)]


@pytest.fixture(scope="module")
def real_archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One run of the real collector: two streams, HMAC-signed, closed by a graceful shutdown."""
    try:
        binary = resolve_binary()
    except CollectorError as exc:
        pytest.fail(f"cannot get the collector binary: {exc}", pytrace=False)
    work = tmp_path_factory.mktemp("real")
    key_file = work / "hmac.key"
    key_file.write_bytes(KEY)
    key_file.chmod(0o600)
    collector = Collector(binary, work / "collector")
    try:
        collector.start()
        audit = otel_audit.configure(
            service_name="tamper-real",
            wal_dir=work / "wal",
            endpoint=collector.grpc_endpoint,
            hmac_key_file=str(key_file),
            retry_max_backoff=0.2,
            batch_max_records=7,
        )
        second = audit.get_audit_logger("payments")
        for n in range(40):
            if n % 3:
                audit.record(
                    "document.read",
                    actor_id=f"u{n % 5}",
                    actor_type="user",
                    action="READ",
                    outcome="success",
                    target_id=f"doc/{n}",
                    attributes={"n": n, "ratio": n / 3},
                    body={"n": n} if n % 4 == 0 else None,
                )
            else:
                second.emit(
                    "payment.refund",
                    {
                        "audit.actor.id": "svc",
                        "audit.actor.type": "service",
                        "audit.action": "REFUND",
                        "audit.outcome": "failure",
                        "amount": n,
                    },
                )
        assert audit.force_flush(20)
        audit.shutdown(timeout=10)
        collector.wait_for_records(42)
        collector.stop()
        yield collector.archive_path
    finally:
        collector.close()


def loaded(archive: Path) -> list[Record]:
    records: list[Record] = []
    for line in archive.read_text().splitlines():
        for rl in json.loads(line)["resourceLogs"]:
            for sl in rl["scopeLogs"]:
                records.extend(sl["logRecords"])
    return records


def verify(records: list[Record]) -> VerifyReport:
    verifier = ChainVerifier(KEYS, complete=True)
    source = verifier.source("memory")
    for index, record in enumerate(records):
        verifier.add_json(record, source, index, ("HMAC-SHA256", None))
    return verifier.finish()


def test_the_real_archive_verifies_clean(real_archive: Path) -> None:
    report = verify_archive(real_archive, KEYS, complete=True)
    assert report.ok and report.findings == [], [str(f) for f in report.findings]
    assert len(report.streams) == 2 and all(s.closed for s in report.streams)
    assert report.records_read == 42


def test_every_mutation_of_the_real_archive_is_detected(real_archive: Path) -> None:
    records = loaded(real_archive)
    assert verify(records).ok
    rng = random.Random(404)
    detected = 0
    for name, mutate in tamper.TAMPERING.items():
        for _ in range(40):
            mutated = mutate(records, rng)
            if mutated is not None:
                assert not verify(mutated).ok, name
                detected += 1
    for name, variant in tamper.CLEAN.items():
        for _ in range(10):
            report = verify(variant(records, rng))
            assert report.ok and report.kinds() <= {"redelivered"}, name
    assert detected >= 450


def test_bit_flips_in_the_real_archive_file_are_detected(real_archive: Path, tmp_path: Path) -> None:
    lines = real_archive.read_bytes().splitlines(keepends=True)
    rng = random.Random(9)
    target = tmp_path / "flipped.jsonl"
    detected = 0
    for _ in range(150):
        index = rng.randrange(len(lines))
        line = bytearray(lines[index])
        start = line.index(b'"logRecords"')
        line[rng.randrange(start, len(line) - 4)] ^= 1 << rng.randrange(8)
        try:
            before = json.loads(lines[index])["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
            after = json.loads(line)["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
            if len(before) == len(after) and all(
                tamper.claims(a) == tamper.claims(b) for a, b in zip(before, after, strict=True)
            ):
                continue  # the same claims (e.g. the case of a hex digit)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            pass
        target.write_bytes(b"".join([*lines[:index], bytes(line), *lines[index + 1 :]]))
        assert not verify_archive(target, KEYS, complete=True).ok
        detected += 1
    assert detected >= 120
