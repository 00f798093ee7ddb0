"""The verifier finds each kind of tampering at its position, and nothing in clean, redelivered input."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from otel_audit.integrity.chain import StreamChain
from otel_audit.integrity.signing import Ed25519Signer, Es256Signer, HmacSha256Signer, load_public_key
from otel_audit.integrity.verify import ChainVerifier, VerifyReport, _Stream, verify_archive, verify_wal
from otel_audit.wal import WAL

from .builders import SIGNER, Streams, make_record, make_streams, request_line, write_archive, write_wal

HMAC = [SIGNER.verifier()]
Record = dict[str, Any]


@pytest.fixture(scope="module")
def streams() -> Streams:
    return make_streams(60, streams=2, digest_every=10)


def archive_records(streams: Streams) -> list[Record]:
    """The records as OTLP/JSON objects, the form a collector archive holds."""
    return [
        json.loads(request_line([r], streams.resource))["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
        for r in streams.records
    ]


def write_records(path: Path, streams: Streams, records: list[Record], batch: int = 10) -> Path:
    resource = json.loads(request_line([], streams.resource))["resourceLogs"][0]["resource"]
    with open(path, "w") as out:
        for start in range(0, len(records), batch):
            request = {
                "resourceLogs": [
                    {
                        "resource": resource,
                        "scopeLogs": [{"scope": {}, "logRecords": records[start : start + batch]}],
                    }
                ]
            }
            out.write(json.dumps(request, separators=(",", ":")) + "\n")
    return path


def attr(record: Record, key: str) -> dict[str, Any]:
    return next(kv["value"] for kv in record["attributes"] if kv["key"] == key)


def number_of(record: Record) -> int:
    return int(attr(record, "audit.sequence.number")["intValue"])


def stream_of(record: Record) -> str:
    return str(attr(record, "audit.sequence.stream_id")["stringValue"])


def verify_records(tmp_path: Path, streams: Streams, records: list[Record], **kw: Any) -> VerifyReport:
    return verify_archive(
        write_records(tmp_path / "archive.jsonl", streams, records), HMAC, complete=True, **kw
    )


def problems(report: VerifyReport) -> list[tuple[str, int | None]]:
    return [(f.kind, f.number) for f in report.findings if f.severity == "problem"]


# -- clean input ----------------------------------------------------------------------------------


def test_a_clean_wal_and_its_archive_verify_with_every_stream_closed_and_digested(
    tmp_path: Path, streams: Streams
) -> None:
    write_wal(tmp_path / "wal", streams)
    for report in (
        verify_wal(tmp_path / "wal", HMAC, complete=True),
        verify_archive(write_archive(tmp_path / "a.jsonl", streams), HMAC, complete=True),
    ):
        assert report.ok, [str(f) for f in report.findings]
        assert report.findings == []
        assert report.records_read == len(streams.records) == report.signatures_checked
        assert sorted(s.stream_id for s in report.streams) == sorted(streams.stream_ids)
        assert all(
            s.closed and s.first_number == 1 and s.digests == 3 and s.unattested == 0 for s in report.streams
        )


def test_archive_order_and_identical_copies_are_not_evidence(tmp_path: Path, streams: Streams) -> None:
    """Redelivery reorders and repeats lines: shuffled, repeated records verify clean (notice only)."""
    records = archive_records(streams)
    shuffled = records + random.Random(7).sample(records, 15)
    random.Random(8).shuffle(shuffled)
    report = verify_records(tmp_path, streams, shuffled)
    assert report.ok, [str(f) for f in report.findings]
    assert sum(s.redelivered for s in report.streams) == 15
    assert report.kinds() == {"redelivered"}


def test_json_variants_of_the_same_record_verify(tmp_path: Path, streams: Streams) -> None:
    """ints as numbers, base64 ids, snake_case names: OTLP/JSON allows them, the hash does not change."""
    records = archive_records(streams)
    for record in records:
        record["time_unix_nano"] = int(record.pop("timeUnixNano"))
        for kv in record["attributes"]:
            if "intValue" in kv["value"]:
                kv["value"]["intValue"] = int(kv["value"]["intValue"])
        if "traceId" in record:
            import base64

            record["traceId"] = base64.b64encode(bytes.fromhex(record["traceId"])).decode()
    assert verify_records(tmp_path, streams, records).ok


# -- each kind of tampering -------------------------------------------------------------------------


def test_a_deleted_record_is_a_gap_at_the_next_record(tmp_path: Path, streams: Streams) -> None:
    records = archive_records(streams)
    victim = next(r for r in records if number_of(r) == 7)
    records.remove(victim)
    report = verify_records(tmp_path, streams, records)
    gap = next(f for f in report.findings if f.kind == "gap")
    assert (gap.number, gap.stream_id, gap.count) == (7, stream_of(victim), 1)
    assert gap.position is not None and gap.position.startswith(str(tmp_path / "archive.jsonl") + ":")
    assert problems(report) == [("gap", 7)]


def test_a_modified_record_is_named_by_its_signature_and_by_the_next_link(
    tmp_path: Path, streams: Streams
) -> None:
    records = archive_records(streams)
    target = next(r for r in records if number_of(r) == 5 and r["eventName"] == "document.update")
    attr(target, "audit.actor.id")["stringValue"] = "mallory"
    report = verify_records(tmp_path, streams, records)
    assert sorted(problems(report)) == [("bad_signature", 5), ("modified", 5)]
    unsigned = verify_archive(write_records(tmp_path / "u.jsonl", streams, records), complete=True)
    assert problems(unsigned) == [("modified", 5)]


def test_renumbered_records_are_reported_as_reordering(tmp_path: Path, streams: Streams) -> None:
    records = archive_records(streams)
    sid = stream_of(records[0])
    four, five = (next(r for r in records if stream_of(r) == sid and number_of(r) == n) for n in (4, 5))
    attr(four, "audit.sequence.number")["intValue"] = "5"
    attr(five, "audit.sequence.number")["intValue"] = "4"
    report = verify_records(tmp_path, streams, records)
    kinds = {kind for kind, _ in problems(report)}
    assert "reordered" in kinds and "bad_signature" in kinds
    assert verify_archive(write_records(tmp_path / "u.jsonl", streams, records), complete=True).kinds(
        "problem"
    ) >= {"reordered"}


def test_records_after_the_end_are_a_violation(tmp_path: Path) -> None:
    chain = StreamChain(SIGNER)
    from otel_audit.integrity.chain import stream_end_record

    sealed = [make_record(1), stream_end_record()]
    chain.seal(sealed[0])
    chain.seal(sealed[1], end=True)
    # A key holder appends behind the close: a valid link, a valid proof, still a violation.
    extra = make_record(2)
    add = extra.proto.attributes.add
    add(key="audit.sequence.stream_id").value.string_value = chain.stream_id
    add(key="audit.sequence.number").value.int_value = 3
    add(key="audit.sequence.previous_hash").value.string_value = chain.last_hash_text or ""
    add(key="audit.sequence.previous_record_id").value.string_value = sealed[1].record_id
    from otel_audit.integrity.signing import sign_record

    sign_record(extra.proto, SIGNER)
    s = Streams(records=[r.proto for r in sealed] + [extra.proto])
    s.resource = make_streams(1).resource
    report = verify_archive(write_archive(tmp_path / "a.jsonl", s), HMAC)
    assert problems(report) == [("after_end", 3)]


def test_same_number_with_other_content_is_a_conflict_not_a_redelivery(
    tmp_path: Path, streams: Streams
) -> None:
    records = archive_records(streams)
    copy = json.loads(json.dumps(records[10]))
    attr(copy, "audit.outcome")["stringValue"] = (
        "success" if attr(copy, "audit.outcome")["stringValue"] != "success" else "failure"
    )
    report = verify_records(tmp_path, streams, [*records, copy])
    assert {kind for kind, _ in problems(report)} == {"conflict", "bad_signature"}


def test_a_cut_tail_is_an_unclosed_stream_with_its_unattested_records(
    tmp_path: Path, streams: Streams
) -> None:
    records = archive_records(streams)
    sid = stream_of(records[0])
    last = max(number_of(r) for r in records if stream_of(r) == sid)
    kept = [r for r in records if stream_of(r) != sid or number_of(r) <= last - 3]
    lenient = verify_archive(write_records(tmp_path / "a.jsonl", streams, kept), HMAC)
    assert lenient.ok and lenient.kinds() == {"unclosed"}
    summary = next(s for s in lenient.streams if s.stream_id == sid)
    assert not summary.closed and summary.last_digest_number is not None
    assert summary.unattested == summary.last_number - (summary.last_digest_number - 1)
    assert "attested by no digest" in lenient.findings[0].detail
    assert problems(verify_records(tmp_path, streams, kept)) == [("unclosed", last - 3)]


def test_a_stream_without_its_head_is_a_notice_unless_complete(tmp_path: Path, streams: Streams) -> None:
    records = [r for r in archive_records(streams) if number_of(r) > 3]
    report = verify_archive(write_records(tmp_path / "a.jsonl", streams, records), HMAC)
    assert report.ok and report.kinds() == {"head_missing"}
    assert {f.number for f in report.findings} == {4}
    assert {kind for kind, _ in problems(verify_records(tmp_path, streams, records))} == {"head_missing"}


def test_proofs_are_checked_against_the_given_keys_only(tmp_path: Path, streams: Streams) -> None:
    path = write_archive(tmp_path / "a.jsonl", streams)
    wrong = verify_archive(path, [HmacSha256Signer(b"x" * 32).verifier()])
    assert wrong.counts == {"bad_signature": len(streams.records)}
    stripped = archive_records(streams)
    for record in stripped:
        record["attributes"] = [
            kv for kv in record["attributes"] if not kv["key"].startswith("audit.integrity.")
        ]
    report = verify_records(tmp_path, streams, stripped)
    assert report.counts == {"unsigned": len(streams.records)}
    no_keys = verify_archive(path)
    assert no_keys.ok and no_keys.kinds() == {"signatures_not_checked"}


def test_the_signer_tier_and_canonicalization_are_checked_though_outside_the_proof(
    tmp_path: Path, streams: Streams
) -> None:
    records = archive_records(streams)
    attr(records[3], "audit.integrity.signer")["stringValue"] = "collector"
    attr(records[4], "audit.integrity.canonicalization")["stringValue"] = "none"
    report = verify_records(tmp_path, streams, records)
    assert report.counts == {"bad_signature": 2}


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256"])
def test_public_keys_verify_and_rotation_picks_the_key_by_fingerprint(tmp_path: Path, algorithm: str) -> None:
    def signer() -> Ed25519Signer | Es256Signer:
        if algorithm == "EdDSA":
            return Ed25519Signer(ed25519.Ed25519PrivateKey.generate())
        return Es256Signer(ec.generate_private_key(ec.SECP256R1()))

    old, new = signer(), signer()
    archive = tmp_path / "a.jsonl"
    with open(archive, "w") as out:
        for key in (old, new):  # a restart with a rotated key: a new stream, a new Resource
            s = make_streams(12, streams=1, signer=key, digest_every=5)
            out.write(request_line(s.records, s.resource) + "\n")
    pems = []
    for index, key in enumerate((old, new)):
        pem = tmp_path / f"key{index}.pem"
        pem.write_bytes(
            key.verifier()._key.public_bytes(  # noqa: SLF001
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        pems.append(load_public_key(pem))
    assert [p.certificate for p in pems] == [old.certificate, new.certificate]
    report = verify_archive(archive, pems, complete=True)
    assert report.ok and report.findings == [] and len(report.streams) == 2
    only_new = verify_archive(archive, pems[1:])
    assert only_new.counts["bad_signature"] == 12 + 2 + 1  # records, digests, end of the old stream


def test_a_digest_that_attests_another_hash_is_reported(tmp_path: Path, streams: Streams) -> None:
    records = archive_records(streams)
    digest = next(r for r in records if r["eventName"] == "audit.stream.digest")
    attr(digest, "audit.digest.head.hash")["stringValue"] = "0" * 64
    report = verify_archive(write_records(tmp_path / "a.jsonl", streams, records), complete=True)
    assert {kind for kind, _ in problems(report)} == {"digest_mismatch", "modified"}


def test_a_genesis_record_with_a_previous_hash_is_reported(tmp_path: Path, streams: Streams) -> None:
    records = archive_records(streams)
    first = next(r for r in records if number_of(r) == 1)
    first["attributes"].append({"key": "audit.sequence.previous_hash", "value": {"stringValue": "e" * 64}})
    assert {kind for kind, _ in problems(verify_records(tmp_path, streams, records))} >= {"genesis_link"}


def test_lines_that_are_not_otlp_are_unreadable_and_torn_lines_are_notices(
    tmp_path: Path, streams: Streams
) -> None:
    path = write_archive(tmp_path / "a.jsonl", streams)
    text = path.read_text()
    path.write_text('{"resourceLogs": 5}\n' + text + text.splitlines()[0][:100])
    report = verify_archive(path, HMAC)
    assert {(f.kind, f.severity) for f in report.findings} == {("unreadable", "problem"), ("torn", "notice")}
    assert next(f for f in report.findings if f.kind == "unreadable").position == f"{path}:1"


# -- the WAL ----------------------------------------------------------------------------------------


def test_a_wal_whose_head_was_acknowledged_and_deleted_verifies_with_a_notice(tmp_path: Path) -> None:
    streams = make_streams(400, streams=1, digest_every=50)
    seqs = write_wal(tmp_path / "wal", streams, segment_bytes=16 << 10)
    with WAL.open(tmp_path / "wal", durability="never", segment_bytes=16 << 10) as wal:
        wal.ack(seqs[len(seqs) // 2])  # the sender's ack deletes fully delivered segments
    report = verify_wal(tmp_path / "wal", HMAC)
    assert report.ok and report.kinds() == {"head_missing"}
    assert "verify the archive" in report.findings[0].detail
    assert report.streams[0].first_number > 1 and report.streams[0].closed


def test_a_damaged_wal_frame_is_unreadable_and_reading_goes_on_in_the_next_segment(tmp_path: Path) -> None:
    streams = make_streams(300, streams=1, digest_every=None)
    write_wal(tmp_path / "wal", streams, segment_bytes=16 << 10)
    segments = sorted((tmp_path / "wal" / "segments").iterdir())
    assert len(segments) >= 3
    data = bytearray(segments[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    segments[0].write_bytes(bytes(data))
    report = verify_wal(tmp_path / "wal", HMAC)
    kinds = {kind for kind, _ in problems(report)}
    assert kinds == {"unreadable", "gap"}
    assert report.streams[0].last_number == len(streams.records)  # later segments were read


def test_every_shard_of_a_wal_root_is_verified(tmp_path: Path) -> None:
    """Each process writes its own WAL under the root (multiprocess.md); verify reads them all."""
    first, second = make_streams(10, streams=1), make_streams(10, streams=1)
    write_wal(tmp_path / "wal", first)
    write_wal(tmp_path / "wal" / "shards" / "0a1b2c3d4e5f6a7b", second)
    report = verify_wal(tmp_path / "wal", HMAC, complete=True)
    assert report.ok and len(report.streams) == 2
    assert report.records_read == len(first.records) + len(second.records)
    seen: list[str] = []
    progress = verify_wal(tmp_path / "wal", HMAC, progress=lambda done, total: seen.append(f"{done}/{total}"))
    assert progress.ok and seen[-1] == f"{report.records_read}/{report.records_read}"
    victim = write_wal(tmp_path / "gap" / "shards" / "ff", make_streams(5, streams=1))
    assert victim
    segment = next((tmp_path / "gap" / "shards" / "ff" / "segments").iterdir())
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF  # mid-segment: damage, not a write in progress
    segment.write_bytes(bytes(data))
    damaged = verify_wal(tmp_path / "gap", HMAC)
    assert any(
        f.kind == "unreadable" and (f.position or "").startswith("shard ff seq") for f in damaged.findings
    )


def test_dead_lettered_records_are_part_of_their_stream(tmp_path: Path) -> None:
    from otel_audit.encoding import encode_context
    from otel_audit.export.contexts import ContextStore
    from otel_audit.export.payload import encode_payload

    streams = make_streams(20, streams=1, digest_every=None)
    with WAL.open(tmp_path / "wal", durability="never") as wal:
        context = ContextStore(tmp_path / "wal").put(encode_context(streams.resource, None))
        seqs = wal.append_many([encode_payload(context, r.SerializeToString()) for r in streams.records])
        wal.dead_letter(seqs[5], encode_payload(context, streams.records[5].SerializeToString()), "400 bad")
        wal.ack(seqs[5])  # the sender acks a poison record once it is dead-lettered
    report = verify_wal(tmp_path / "wal", HMAC, complete=True)
    assert report.ok, [str(f) for f in report.findings]


# -- the slot store -----------------------------------------------------------------------------------


def test_slots_take_about_sixty_bytes_per_record_in_any_arrival_order() -> None:
    ascending, descending, shuffled = _Stream("a"), _Stream("d"), _Stream("s")
    numbers = list(range(1, 100_001))
    slot = bytes(48) + b"\x01" + bytes(8)
    for n in numbers:
        ascending.put(n, slot)
    for n in reversed(numbers):
        descending.put(n, slot)
    random.Random(3).shuffle(numbers)
    for n in numbers:
        shuffled.put(n, slot)
    for stream in (ascending, descending, shuffled):
        assert sys.getsizeof(stream.data) < 100_000 * 57 * 2.2
        assert [n for n, _ in stream.present()] == list(range(1, 100_001))
        assert len(stream.overflow) < 1000  # early arrivals far from the first number


def test_a_forged_huge_number_does_not_allocate_the_range_up_to_it() -> None:
    stream = _Stream("x")
    slot = bytes(48) + b"\x01" + bytes(8)
    stream.put(1, slot)
    stream.put(2**62, slot)
    stream.put(2, slot)
    assert len(stream.data) < 1 << 20 and 2**62 in stream.overflow
    assert [n for n, _ in stream.present()] == [1, 2, 2**62]
    assert stream.put(2**62, slot) == slot


def test_the_report_is_json_serializable_and_caps_its_findings(tmp_path: Path, streams: Streams) -> None:
    records = [r for r in archive_records(streams) if number_of(r) % 2]
    report = verify_archive(write_records(tmp_path / "a.jsonl", streams, records), HMAC, max_findings=3)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False and len(data["findings"]) == 3
    assert data["findings_not_listed"] == report.problems + report.notices - 3 > 0
    assert data["counts"]["gap"] == report.counts["gap"]


def test_chain_verifier_takes_protos_and_json_alike() -> None:
    streams = make_streams(10, streams=1)
    from_protos, from_json = ChainVerifier(HMAC, complete=True), ChainVerifier(HMAC, complete=True)
    a, b = from_protos.source("p"), from_json.source("j")
    for index, (proto, record) in enumerate(zip(streams.records, archive_records(streams), strict=True)):
        from_protos.add_proto(proto, a, index)
        from_json.add_json(record, b, index, ("HMAC-SHA256", None))
    assert from_protos.finish().ok and from_json.finish().ok
