"""Digest records fall due by count or time, chain to each other, and are checked by the verifier."""

from __future__ import annotations

from typing import Any

import pytest

from otel_audit.exceptions import ConfigError, InvalidAuditRecordError
from otel_audit.integrity.chain import StreamChain, check_chain, stream_end_record
from otel_audit.integrity.digest import DigestPolicy, StreamDigester
from otel_audit.integrity.verify import ChainVerifier
from otel_audit.record import AuditRecord, build_audit_log_record

from .builders import SIGNER, make_record


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def attrs(record: AuditRecord) -> dict[str, Any]:
    return {kv.key: getattr(kv.value, str(kv.value.WhichOneof("value"))) for kv in record.proto.attributes}


def run(
    chain: StreamChain, digester: StreamDigester, count: int, clock: Clock | None = None
) -> list[AuditRecord]:
    """Emit `count` records the way the pipeline integrates the digester; return everything sealed."""
    sealed: list[AuditRecord] = []

    def persist(record: AuditRecord, *, end: bool = False) -> None:
        digest = chain.seal(record, end=end)
        sealed.append(record)
        due = digester.after_persist(record, digest)
        if due is not None:
            persist(due)

    for n in range(count):
        if clock is not None:
            clock.now += 1
        persist(make_record(n))
    persist(stream_end_record(), end=True)
    return sealed


def test_a_digest_follows_every_n_records_and_points_at_the_previous_one() -> None:
    chain = StreamChain(SIGNER)
    sealed = run(chain, StreamDigester(DigestPolicy(every_records=10, every_seconds=None)), 35)
    digests = [r for r in sealed if r.proto.event_name == "audit.stream.digest"]
    assert len(digests) == 3
    first, second = attrs(digests[0]), attrs(digests[1])
    assert first["audit.digest.head.number"] == 10 and first["audit.sequence.number"] == 11
    assert first["audit.digest.records"] == 10
    assert "audit.digest.previous.number" not in first and "audit.digest.previous.hash" not in first
    head = next(r for r in sealed if attrs(r)["audit.sequence.number"] == 10)
    from otel_audit.canonical import integrity_hash

    assert first["audit.digest.head.hash"] == integrity_hash(head.proto).hex()
    assert second["audit.digest.previous.number"] == 11
    assert second["audit.digest.previous.hash"] == integrity_hash(digests[0].proto).hex()
    assert second["audit.digest.head.number"] == 20 and second["audit.digest.records"] == 10
    assert first["audit.digest.policy.every_records"] == 10
    assert SIGNER.verifier().verify(digests[0].proto)
    assert check_chain([r.proto for r in sealed]) == []
    verifier = ChainVerifier([SIGNER.verifier()], complete=True)
    source = verifier.source("t")
    for index, record in enumerate(sealed):
        verifier.add_proto(record.proto, source, index)
    report = verifier.finish()
    assert report.ok and report.findings == []
    assert report.streams[0].digests == 3 and report.streams[0].last_digest_number == 31


def test_the_time_trigger_fires_on_the_next_record_and_poll_covers_a_quiet_stream() -> None:
    clock = Clock()
    chain = StreamChain()
    digester = StreamDigester(DigestPolicy(every_records=None, every_seconds=10), clock=clock)
    record = make_record(1)
    assert digester.after_persist(record, chain.seal(record)) is None
    assert digester.poll() is None
    clock.now += 10
    due = digester.poll()
    assert due is not None and attrs(due)["audit.digest.head.number"] == 1
    assert digester.poll() is None  # one outstanding digest at a time
    digester.after_persist(due, chain.seal(due))
    clock.now += 60
    assert digester.poll() is None  # nothing new to attest: an idle stream gets no digest
    later = make_record(2)
    due = digester.after_persist(later, chain.seal(later))
    assert due is not None and attrs(due)["audit.digest.head.number"] == 3


def test_an_abandoned_or_lost_digest_is_rebuilt() -> None:
    chain = StreamChain()
    digester = StreamDigester(DigestPolicy(every_records=2, every_seconds=None))
    built = []
    for n in range(12):
        record = make_record(n)
        due = digester.after_persist(record, chain.seal(record))
        if due is not None:
            built.append(due)
            if len(built) == 1:
                digester.abandon(due)  # its append failed
    # The first was abandoned (a new one at once), the second is never reported back (lost).
    assert len(built) >= 3
    assert len({attrs(b)["audit.digest.head.number"] for b in built}) == len(built)


def test_no_digest_follows_the_end_record() -> None:
    chain = StreamChain()
    digester = StreamDigester(DigestPolicy(every_records=1, every_seconds=None))
    end = stream_end_record()
    assert digester.after_persist(end, chain.seal(end, end=True)) is None
    assert digester.poll() is None


def test_unsealed_records_and_a_disabled_policy_produce_nothing() -> None:
    assert StreamDigester(DigestPolicy()).after_persist(make_record(1), b"\0" * 32) is None
    chain = StreamChain()
    record = make_record(1)
    assert StreamDigester(DigestPolicy(None, None)).after_persist(record, chain.seal(record)) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("records=500,seconds=30", DigestPolicy(500, 30.0)),
        ("records=10", DigestPolicy(10, None)),
        (" seconds=2.5 ", DigestPolicy(None, 2.5)),
        ("off", DigestPolicy(None, None)),
    ],
)
def test_policy_text_is_parsed(text: str, expected: DigestPolicy) -> None:
    assert DigestPolicy.parse(text) == expected


@pytest.mark.parametrize("text", ["records=0", "records=x", "every=3", "seconds=-1", ","])
def test_a_bad_policy_is_a_config_error_naming_the_variable(text: str) -> None:
    with pytest.raises(ConfigError, match="OTEL_AUDIT_DIGEST|every_"):
        DigestPolicy.parse(text)


def test_policy_from_env_defaults_to_1000_records_or_60_seconds() -> None:
    assert DigestPolicy.from_env({}) == DigestPolicy(1000, 60.0)
    assert DigestPolicy.from_env({"OTEL_AUDIT_DIGEST": "records=5"}) == DigestPolicy(5, None)


def test_callers_cannot_forge_digest_attributes() -> None:
    with pytest.raises(InvalidAuditRecordError, match="reserved"):
        build_audit_log_record(
            "x.y",
            actor_id="a",
            actor_type="user",
            action="READ",
            outcome="success",
            attributes={"audit.digest.head.number": 5},
        )
