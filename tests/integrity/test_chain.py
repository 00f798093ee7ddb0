"""The stream chain numbers records without gaps and links each to its predecessor's hash."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otel_audit.canonical import canonical_bytes, integrity_hash
from otel_audit.exceptions import InvalidAuditRecordError, OtelAuditError
from otel_audit.integrity.chain import StreamChain, check_chain, stream_end_record
from otel_audit.integrity.signing import HmacSha256Signer
from otel_audit.record import AuditRecord, build_audit_log_record

KEY = b"k" * 32


def make(n: int = 0) -> AuditRecord:
    return build_audit_log_record(
        "resource.file.read",
        actor_id=f"u{n}",
        actor_type="user",
        action="READ",
        outcome="success",
        attributes={"n": n},
    )


def attrs(proto: LogRecord) -> dict[str, Any]:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in proto.attributes}


def test_records_are_numbered_from_one_and_linked_by_hash() -> None:
    chain = StreamChain()
    records = [make(i) for i in range(3)]
    digests = [chain.seal(r) for r in records]
    first, second, third = (attrs(r.proto) for r in records)
    assert uuid.UUID(chain.stream_id).version == 4
    assert [
        first["audit.sequence.number"],
        second["audit.sequence.number"],
        third["audit.sequence.number"],
    ] == [1, 2, 3]
    assert {first["audit.sequence.stream_id"], third["audit.sequence.stream_id"]} == {chain.stream_id}
    assert "audit.sequence.previous_hash" not in first  # the draft's genesis rule: no magic constant
    assert "audit.sequence.previous_record_id" not in first
    assert second["audit.sequence.previous_hash"] == digests[0].hex()
    assert second["audit.sequence.previous_record_id"] == records[0].record_id
    assert third["audit.sequence.previous_hash"] == digests[1].hex()
    assert chain.last_number == 3
    assert StreamChain().last_hash_text is None
    assert chain.last_hash_text == digests[2].hex()


def test_seal_returns_the_hash_of_the_final_canonical_form() -> None:
    """The returned hash covers the sequence attributes and equals an independent recomputation."""
    chain = StreamChain(HmacSha256Signer(KEY))
    record = make()
    digest = chain.seal(record)
    assert digest == integrity_hash(record.proto)
    assert record.canonical_bytes() == canonical_bytes(record.proto)
    assert b"audit.sequence.number" in canonical_bytes(record.proto)
    assert b"audit.integrity" not in canonical_bytes(record.proto)


def test_sealed_records_are_signed_when_a_signer_is_configured() -> None:
    signer = HmacSha256Signer(KEY)
    chain = StreamChain(signer)
    record = make()
    chain.seal(record)
    assert signer.verifier().verify(record.proto)
    assert chain.resource_attributes() == {"audit.integrity.algorithm": "HMAC-SHA256"}
    assert StreamChain().resource_attributes() == {}


def test_plain_log_records_can_be_sealed_too() -> None:
    """The SDK path hands over a LogRecord; the record id is found among its attributes."""
    chain = StreamChain()
    first, second = make(1).proto, make(2).proto
    chain.seal(first)
    chain.seal(second)
    assert attrs(second)["audit.sequence.previous_record_id"] == attrs(first)["audit.record.id"]
    assert check_chain([first, second]) == []


def test_sealing_twice_is_rejected() -> None:
    chain = StreamChain()
    record = make()
    chain.seal(record)
    with pytest.raises(InvalidAuditRecordError, match="already sealed"):
        chain.seal(record)
    with pytest.raises(InvalidAuditRecordError, match="already sealed"):
        StreamChain().seal(record.proto)


def test_end_marks_the_last_record_and_closes_the_stream() -> None:
    chain = StreamChain()
    chain.seal(make())
    end = stream_end_record()
    chain.seal(end, end=True)
    assert attrs(end.proto)["audit.sequence.end"] is True
    assert end.proto.event_name == "audit.stream.end"
    assert chain.closed
    with pytest.raises(OtelAuditError, match="closed"):
        chain.seal(make())


def test_rollback_restores_the_chain_after_a_failed_append() -> None:
    """A record that was sealed but never stored must not become anyone's predecessor."""
    chain = StreamChain(HmacSha256Signer(KEY))
    kept = make(1)
    chain.seal(kept)
    lost = make(2)
    chain.seal(lost)
    chain.rollback(lost)
    assert not any(kv.key.startswith(("audit.sequence.", "audit.integrity.")) for kv in lost.proto.attributes)
    assert not any(k.startswith("audit.sequence.") for k in lost.parts)
    retried = make(3)
    chain.seal(retried)
    assert attrs(retried.proto)["audit.sequence.number"] == 2
    assert check_chain([kept.proto, retried.proto], HmacSha256Signer(KEY).verifier()) == []
    chain.seal(lost)  # the stripped record can be sealed again
    assert attrs(lost.proto)["audit.sequence.number"] == 3


def test_rollback_of_anything_but_the_last_sealed_record_is_refused() -> None:
    chain = StreamChain()
    first, second = make(1), make(2)
    chain.seal(first)
    chain.seal(second)
    with pytest.raises(OtelAuditError, match="not the last"):
        chain.rollback(first)
    chain.rollback(second)
    with pytest.raises(OtelAuditError, match="not the last"):
        chain.rollback(first)  # only one step back


def test_concurrent_seals_number_without_gaps_or_duplicates() -> None:
    chain = StreamChain()
    sealed: list[AuditRecord] = []
    lock = threading.Lock()

    def worker() -> None:
        for i in range(200):
            record = make(i)
            with lock:  # the caller's WAL lock: chain order == storage order
                chain.seal(record)
                sealed.append(record)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [attrs(r.proto)["audit.sequence.number"] for r in sealed] == list(range(1, 801))
    assert check_chain([r.proto for r in sealed]) == []


def _chain_of(count: int) -> list[LogRecord]:
    chain = StreamChain(HmacSha256Signer(KEY))
    records = [make(i) for i in range(count)]
    for record in records:
        chain.seal(record)
    return [r.proto for r in records]


def test_check_chain_accepts_an_intact_stream_and_interleaved_streams() -> None:
    a, b = _chain_of(3), _chain_of(2)
    assert check_chain([a[0], b[0], a[1], b[1], a[2]], HmacSha256Signer(KEY).verifier()) == []


def test_check_chain_reports_a_deleted_record() -> None:
    records = _chain_of(4)
    problems = check_chain([records[0], records[1], records[3]])
    assert [(p.kind, p.number) for p in problems] == [("gap", 4)]


def test_check_chain_reports_reordering() -> None:
    records = _chain_of(3)
    kinds = {p.kind for p in check_chain([records[0], records[2], records[1]])}
    assert kinds == {"gap"}


def test_check_chain_reports_an_edited_record_through_the_next_link_and_the_signature() -> None:
    records = _chain_of(3)
    records[1].attributes[2].value.string_value = "mallory"
    problems = check_chain(records, HmacSha256Signer(KEY).verifier())
    assert [(p.kind, p.number) for p in problems] == [("signature", 2), ("previous_hash", 3)]


def test_check_chain_reports_records_after_the_end() -> None:
    chain = StreamChain()
    last, forged = stream_end_record(), make()
    chain.seal(last, end=True)
    forged.proto.attributes.add(key="audit.sequence.stream_id").value.string_value = chain.stream_id
    forged.proto.attributes.add(key="audit.sequence.number").value.int_value = 2
    forged.proto.attributes.add(key="audit.sequence.previous_hash").value.string_value = integrity_hash(
        last.proto
    ).hex()
    forged.proto.attributes.add(key="audit.sequence.previous_record_id").value.string_value = last.record_id
    assert [p.kind for p in check_chain([last.proto, forged.proto])] == ["after_end"]


def test_check_chain_reports_unsequenced_records() -> None:
    assert [p.kind for p in check_chain([make().proto])] == ["unsequenced"]


def _forge_sequence(record: AuditRecord, stream_id: str, number: int, **links: str) -> LogRecord:
    add = record.proto.attributes.add
    add(key="audit.sequence.stream_id").value.string_value = stream_id
    add(key="audit.sequence.number").value.int_value = number
    for name, value in links.items():
        add(key=f"audit.sequence.{name}").value.string_value = value
    return record.proto


def test_check_chain_reports_a_genesis_record_that_carries_a_previous_hash() -> None:
    """The draft: absence is the genesis signal; the old empty-string hash is now a violation."""
    empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    old_style = _forge_sequence(make(), "s-1", 1, previous_hash=empty)
    assert [(p.kind, p.number) for p in check_chain([old_style])] == [("previous_hash", 1)]
    with_id = _forge_sequence(make(), "s-2", 1, previous_record_id="x")
    assert [(p.kind, p.number) for p in check_chain([with_id])] == [("previous_record_id", 1)]


def test_check_chain_reports_a_later_record_without_previous_hash() -> None:
    records = _chain_of(2)
    second = records[1]
    for index in range(len(second.attributes) - 1, -1, -1):
        if second.attributes[index].key == "audit.sequence.previous_hash":
            del second.attributes[index]
    problems = check_chain(records)
    assert [(p.kind, p.number) for p in problems] == [("previous_hash", 2)]
    assert "only record 1 may omit it" in problems[0].detail
