"""Thousands of random tamperings of real WALs and archives are all detected; clean variants never are."""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from pathlib import Path

import pytest
from google.protobuf.message import DecodeError
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otel_audit.canonical import canonical_bytes
from otel_audit.export.payload import HEADER_BYTES
from otel_audit.integrity.verify import ChainVerifier, VerifyReport, verify_archive, verify_wal
from otel_audit.wal import frame
from otel_audit.wal.segment import HEADER_SIZE as SEGMENT_HEADER_SIZE

from . import tamper
from .builders import SIGNER, Streams, make_streams, request_line, write_archive, write_wal
from .tamper import Record

KEYS = [SIGNER.verifier()]
RESOURCE = ("HMAC-SHA256", None)
CASES_PER_KIND = 120
CHAIN_ONLY = (
    "delete",
    "delete_range",
    "truncate",
    "renumber",
    "duplicate_modified",
    "move_between_streams",
    "append_forged",
)


@pytest.fixture(scope="module")
def streams() -> Streams:
    return make_streams(40, streams=2, digest_every=10)


@pytest.fixture(scope="module")
def records(streams: Streams) -> list[Record]:
    line = json.loads(request_line(streams.records, streams.resource))
    out: list[Record] = line["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    return out


def verify(records: list[Record], keys: bool = True) -> VerifyReport:
    verifier = ChainVerifier(KEYS if keys else (), complete=True)
    source = verifier.source("memory")
    for index, record in enumerate(records):
        verifier.add_json(record, source, index, RESOURCE)
    return verifier.finish()


def test_every_tampering_of_archived_records_is_detected(records: list[Record]) -> None:
    assert verify(records).ok
    rng = random.Random(20260412)
    detected: Counter[str] = Counter()
    no_ops: Counter[str] = Counter()
    for name, mutate in tamper.TAMPERING.items():
        for _ in range(CASES_PER_KIND):
            mutated = mutate(records, rng)
            if mutated is None:
                no_ops[name] += 1
                continue
            report = verify(mutated)
            assert not report.ok, f"{name} went undetected"
            detected[name] += 1
    assert sum(detected.values()) >= 1350, (detected, no_ops)
    assert no_ops["flip_byte"] < CASES_PER_KIND // 5


@pytest.mark.parametrize("name", CHAIN_ONLY)
def test_the_chain_alone_detects_deletion_reordering_and_truncation(records: list[Record], name: str) -> None:
    """Without keys (anyone can recompute hashes), what the chain itself proves still holds."""
    rng = random.Random(name)
    for _ in range(40):
        mutated = tamper.TAMPERING[name](records, rng)
        assert mutated is not None and not verify(mutated, keys=False).ok, name


def test_redelivery_reordering_and_reencoding_are_never_flagged(records: list[Record]) -> None:
    rng = random.Random(5)
    for name, variant in tamper.CLEAN.items():
        for _ in range(30):
            data = variant(records, rng)
            data = tamper.CLEAN[rng.choice(list(tamper.CLEAN))](data, rng)
            report = verify(data)
            assert report.ok and report.kinds() <= {"redelivered"}, (name, [str(f) for f in report.findings])


def test_bit_flips_in_archive_lines_are_detected_or_unchanged(tmp_path: Path, streams: Streams) -> None:
    """Flips anywhere in the logRecords part of a real archive file, read back through the file reader."""
    clean = write_archive(tmp_path / "clean.jsonl", streams, batch=16)
    assert verify_archive(clean, KEYS, complete=True).ok
    lines = clean.read_bytes().splitlines(keepends=True)
    rng = random.Random(11)
    detected = unchanged = 0
    target = tmp_path / "flipped.jsonl"
    for _ in range(250):
        index = rng.randrange(len(lines))
        line = bytearray(lines[index])
        start = line.index(b'"logRecords"')
        line[rng.randrange(start, len(line) - 4)] ^= 1 << rng.randrange(8)
        if _same_claims(bytes(line), lines[index]):
            unchanged += 1
            continue
        target.write_bytes(b"".join([*lines[:index], bytes(line), *lines[index + 1 :]]))
        assert not verify_archive(target, KEYS, complete=True).ok
        detected += 1
    assert detected > 200


def _same_claims(line: bytes, original: bytes) -> bool:
    try:
        changed = json.loads(line)["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
        before = json.loads(original)["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
        return len(changed) == len(before) and all(
            tamper.claims(a) == tamper.claims(b) and tamper.number(a) == tamper.number(b)
            for a, b in zip(changed, before, strict=True)
        )
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return False


# -- the WAL ------------------------------------------------------------------------------------------


def _frames(segment: Path) -> tuple[bytes, list[tuple[int, int, bytes]]]:
    data = segment.read_bytes()
    pos, frames = SEGMENT_HEADER_SIZE, []
    while pos < len(data):
        status, header = frame.check(data, pos, len(data))
        assert status is frame.Check.OK and header is not None
        frames.append((header.seq, header.time_ns, data[pos + frame.HEADER_SIZE : pos + header.size]))
        pos += header.size
    return data[:SEGMENT_HEADER_SIZE], frames


def _write_frames(segment: Path, header: bytes, frames: list[tuple[int, int, bytes]]) -> None:
    segment.write_bytes(header + b"".join(frame.encode(seq, t, payload) for seq, t, payload in frames))


def _record_claims(payload: bytes) -> tuple[bytes, list[tuple[str, str]]] | None:
    try:
        record = LogRecord.FromString(payload[HEADER_BYTES:])
    except DecodeError:
        return None
    integrity = sorted(
        (kv.key, str(kv.value)) for kv in record.attributes if kv.key.startswith("audit.integrity.")
    )
    return canonical_bytes(record), integrity


def test_every_tampering_of_a_wal_is_detected_even_with_valid_crcs(tmp_path: Path, streams: Streams) -> None:
    pristine = tmp_path / "pristine"
    write_wal(pristine, streams)
    assert verify_wal(pristine, KEYS, complete=True).ok
    (segment_name,) = [p.name for p in (pristine / "segments").iterdir()]
    header, frames = _frames(pristine / "segments" / segment_name)
    rng = random.Random(3)
    kinds: Counter[str] = Counter()
    for case in range(300):
        work = tmp_path / f"case-{case % 4}"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(pristine, work)
        segment = work / "segments" / segment_name
        kind = rng.choice(["raw_flip", "payload_flip", "delete", "truncate", "forge", "swap_seqs"])
        mutated = list(frames)
        if kind == "raw_flip":  # no CRC repair: the frame check catches it
            data = bytearray(segment.read_bytes())
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            segment.write_bytes(bytes(data))
        else:
            if kind == "payload_flip":  # an attacker who recomputes the CRC
                index = rng.randrange(len(mutated))
                seq, t, payload = mutated[index]
                changed = bytearray(payload)
                changed[rng.randrange(HEADER_BYTES, len(changed))] ^= 1 << rng.randrange(8)
                if _record_claims(bytes(changed)) == _record_claims(payload):
                    continue  # e.g. an unknown field added: the record claims the same
                mutated[index] = (seq, t, bytes(changed))
            elif kind == "delete":
                del mutated[rng.randrange(len(mutated))]
            elif kind == "truncate":
                del mutated[len(mutated) - rng.randint(1, 6) :]
            elif kind == "forge":
                index = rng.randrange(len(mutated))
                seq, t, payload = mutated[index]
                record = LogRecord.FromString(payload[HEADER_BYTES:])
                for kv in record.attributes:
                    if kv.key == "audit.integrity.value":
                        kv.value.string_value = "AAAA" + kv.value.string_value[4:]
                mutated[index] = (seq, t, payload[:HEADER_BYTES] + record.SerializeToString())
            else:  # two frames trade places and seqs stay ascending: WAL order is not evidence...
                a, b = sorted(rng.sample(range(len(mutated)), 2))
                (sa, ta, pa), (sb, tb, pb) = mutated[a], mutated[b]
                mutated[a], mutated[b] = (sa, ta, pb), (sb, tb, pa)
            _write_frames(segment, header, mutated)
        report = verify_wal(work, KEYS, complete=True)
        if kind == "swap_seqs":
            assert report.ok, [str(f) for f in report.findings]  # ...the chain numbers are
        else:
            assert not report.ok, kind
        kinds[kind] += 1
    assert min(kinds.values()) >= 30, kinds
