"""The per-stream hash chain: sequence numbers and previous-record hashes, then the producer's signature."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otel_audit.canonical import canonical_bytes, integrity_hash, json_string
from otel_audit.exceptions import InvalidAuditRecordError, OtelAuditError
from otel_audit.integrity.signing import Signer, Verifier, apply_signature, strip_integrity
from otel_audit.record import ATTR_LOG_RECORD_UID, ATTR_RECORD_ID, AuditRecord, build_audit_log_record

ATTR_SEQUENCE_STREAM_ID: Final = "audit.sequence.stream_id"
ATTR_SEQUENCE_NUMBER: Final = "audit.sequence.number"
ATTR_SEQUENCE_PREVIOUS_HASH: Final = "audit.sequence.previous_hash"
ATTR_SEQUENCE_PREVIOUS_RECORD_ID: Final = "audit.sequence.previous_record_id"
ATTR_SEQUENCE_END: Final = "audit.sequence.end"
SEQUENCE_PREFIX: Final = "audit.sequence."

STREAM_END_EVENT: Final = "audit.stream.end"


@dataclass(frozen=True, slots=True)
class _Link:
    """The chain state after a record: what the next record points back to."""

    number: int
    hash_text: str | None  # None before the first record: the genesis record has no predecessor
    record_id: str | None
    closed: bool


_GENESIS: Final = _Link(0, None, None, False)


class StreamChain:
    """One audit stream: numbers records 1, 2, 3... and links each to the previous one's hash.

    One chain per audit logger and process start; its uuid4 `stream_id` is never reused, so a
    restarted process starts a new stream at 1 (a verifier sees the old stream end, with or
    without `audit.sequence.end`, and a new one begin).

    Ordering contract (for the caller integrating the WAL): hold the WAL's append lock around
    `seal()` and the append of the sealed record, so chain order equals WAL order. If the
    append fails, call `rollback(record)` still under that lock, before any other `seal()`;
    otherwise the next record points at a record that was never stored and every verifier
    reports a break. `seal` itself is thread-safe (an internal lock), but that alone does not
    order the WAL.
    """

    def __init__(self, signer: Signer | None = None, *, stream_id: str | None = None) -> None:
        self._signer = signer
        self.stream_id = stream_id or str(uuid.uuid4())
        self._stream_id_json = '{"stringValue":' + json_string(self.stream_id) + "}"
        self._lock = threading.Lock()
        self._link = _GENESIS
        self._previous: _Link | None = None

    @property
    def signer(self) -> Signer | None:
        """The signer applied by `seal`, or None when records are chained but not signed."""
        return self._signer

    @property
    def last_number(self) -> int:
        """The sequence number of the last sealed record (0 before the first)."""
        return self._link.number

    @property
    def last_hash_text(self) -> str | None:
        """The IntegrityHash (hex) of the last sealed record; None before the first."""
        return self._link.hash_text

    @property
    def closed(self) -> bool:
        """True once a record was sealed with `end=True`."""
        return self._link.closed

    def resource_attributes(self) -> dict[str, str]:
        """The signer's resource attributes (`audit.integrity.algorithm`, ...); empty unsigned."""
        return self._signer.resource_attributes() if self._signer is not None else {}

    def seal(self, record: AuditRecord | LogRecord, *, end: bool = False) -> bytes:
        """Append the sequence attributes, sign, and return the record's IntegrityHash.

        Adds `audit.sequence.stream_id`, `.number` (n), `.previous_hash` (hex IntegrityHash of
        record n-1, the hash its receipt carried) and `.previous_record_id`, both from n=2 only:
        the draft's genesis record omits them, and absence is how a verifier recognises it. With
        `end=True` also `.end` (true: the stream's last record). These are part of the hashed
        form; the `audit.integrity.*` attributes the signer adds are not.

        Returns:
            The 32-byte SHA-256 of the record's canonical bytes (after the sequence attributes).

        Raises:
            InvalidAuditRecordError: the record already has `audit.sequence.*` attributes.
            OtelAuditError: the stream was closed by an earlier `end=True`.
        """
        if isinstance(record, AuditRecord):
            proto, record_id = record.proto, record.record_id
            if ATTR_SEQUENCE_NUMBER in record.parts:
                raise InvalidAuditRecordError(
                    f"{ATTR_SEQUENCE_NUMBER}: the record is already sealed into a stream"
                )
        else:
            proto, record_id = record, _record_id_of(record)
            _check_unsequenced(proto)
        with self._lock:
            link = self._link
            if link.closed:
                raise OtelAuditError(
                    f"audit stream {self.stream_id} was closed after record {link.number}; start a new StreamChain"
                )
            number = link.number + 1
            add = proto.attributes.add
            add(key=ATTR_SEQUENCE_STREAM_ID).value.string_value = self.stream_id
            add(key=ATTR_SEQUENCE_NUMBER).value.int_value = number
            if link.hash_text is not None:
                add(key=ATTR_SEQUENCE_PREVIOUS_HASH).value.string_value = link.hash_text
            if link.record_id is not None:
                add(key=ATTR_SEQUENCE_PREVIOUS_RECORD_ID).value.string_value = link.record_id
            if end:
                add(key=ATTR_SEQUENCE_END).value.bool_value = True
            if isinstance(record, AuditRecord):
                parts = record.parts
                parts[ATTR_SEQUENCE_STREAM_ID] = self._stream_id_json
                parts[ATTR_SEQUENCE_NUMBER] = f'{{"intValue":"{number}"}}'
                if link.hash_text is not None:
                    parts[ATTR_SEQUENCE_PREVIOUS_HASH] = '{"stringValue":"' + link.hash_text + '"}'
                if link.record_id is not None:
                    parts[ATTR_SEQUENCE_PREVIOUS_RECORD_ID] = (
                        '{"stringValue":' + json_string(link.record_id) + "}"
                    )
                if end:
                    parts[ATTR_SEQUENCE_END] = '{"boolValue":true}'
                canonical = record.canonical_bytes()
            else:
                canonical = canonical_bytes(proto)
            digest = hashlib.sha256(canonical).digest()
            if self._signer is not None:
                # A built AuditRecord cannot hold integrity attributes (the builder refuses them).
                apply_signature(proto, canonical, self._signer, replace=not isinstance(record, AuditRecord))
            self._previous = link
            self._link = _Link(number, digest.hex(), record_id, end)
            return digest

    def rollback(self, record: AuditRecord | LogRecord) -> None:
        """Undo the last `seal` (its record was not persisted) and strip what it added.

        Must follow that `seal` directly, under the same lock as the failed append.

        Raises:
            OtelAuditError: `record` is not the last sealed record.
        """
        proto = record.proto if isinstance(record, AuditRecord) else record
        with self._lock:
            if self._previous is None or _sequence_number_of(proto) != self._link.number:
                raise OtelAuditError(
                    f"audit stream {self.stream_id}: rollback of a record that is not the last sealed one"
                )
            self._link, self._previous = self._previous, None
            strip_sequence(proto)
            strip_integrity(proto)
            if isinstance(record, AuditRecord):
                for key in [key for key in record.parts if key.startswith(SEQUENCE_PREFIX)]:
                    del record.parts[key]


def stream_end_record(reason: str = "shutdown") -> AuditRecord:
    """A record that closes a stream on graceful shutdown; seal it with `end=True`.

    Without it a verifier cannot tell a stream that ended cleanly from one whose tail was cut.
    """
    return build_audit_log_record(
        STREAM_END_EVENT,
        actor_id="otel-audit",
        actor_type="system",
        action="STOP",
        outcome="success",
        attributes={"audit.stream.end.reason": reason},
    )


@dataclass(frozen=True, slots=True)
class ChainProblem:
    """One break found by `check_chain`; `kind` is stable for code, `detail` is for people."""

    stream_id: str
    number: int | None
    record_id: str | None
    kind: str  # "unsequenced" | "gap" | "previous_hash" | "previous_record_id" | "after_end" | "signature"
    detail: str


def check_chain(records: Iterable[LogRecord], verifier: Verifier | None = None) -> list[ChainProblem]:
    """Verify streams of records given in stored order (several streams may interleave).

    A stream must start at 1 with no `previous_hash` / `previous_record_id` (the draft's
    genesis rule), number without gaps, and every later record must carry both, matching the
    record before it; nothing may follow a record marked `end`. With `verifier`, every
    record's `audit.integrity.value` is checked too. A stream whose last record lacks `end` is not a problem here (a crash ends streams so);
    callers that need more (duplicates, positions, digests) use `otel_audit.integrity.verify`.
    """
    problems: list[ChainProblem] = []
    last: dict[str, _Link] = {}
    for record in records:
        fields = {kv.key: kv.value for kv in record.attributes}
        record_id = fields[ATTR_RECORD_ID].string_value if ATTR_RECORD_ID in fields else None
        if ATTR_SEQUENCE_STREAM_ID not in fields or ATTR_SEQUENCE_NUMBER not in fields:
            problems.append(
                ChainProblem("", None, record_id, "unsequenced", "no audit.sequence.* attributes")
            )
            continue
        stream_id = fields[ATTR_SEQUENCE_STREAM_ID].string_value
        number = int(fields[ATTR_SEQUENCE_NUMBER].int_value)
        prev_hash = (
            fields[ATTR_SEQUENCE_PREVIOUS_HASH].string_value
            if ATTR_SEQUENCE_PREVIOUS_HASH in fields
            else None
        )
        prev_id = (
            fields[ATTR_SEQUENCE_PREVIOUS_RECORD_ID].string_value
            if ATTR_SEQUENCE_PREVIOUS_RECORD_ID in fields
            else None
        )

        def problem(kind: str, detail: str) -> None:
            problems.append(ChainProblem(stream_id, number, record_id, kind, detail))  # noqa: B023

        previous = last.get(stream_id, _GENESIS)
        if previous.closed:
            problem("after_end", f"record {number} follows the end of the stream at {previous.number}")
        if number != previous.number + 1:
            problem("gap", f"expected number {previous.number + 1}, found {number}")
        elif previous.hash_text is None:
            if prev_hash is not None:
                problem(
                    "previous_hash", "the genesis record (number 1) carries a previous_hash; it must omit it"
                )
            elif prev_id is not None:
                problem("previous_record_id", "the genesis record (number 1) carries a previous_record_id")
        elif prev_hash is None:
            problem("previous_hash", f"record {number} has no previous_hash; only record 1 may omit it")
        elif prev_hash != previous.hash_text:
            problem(
                "previous_hash",
                f"previous_hash {prev_hash} != IntegrityHash {previous.hash_text} of record {previous.number}",
            )
        elif prev_id != previous.record_id:
            problem("previous_record_id", f"previous_record_id {prev_id!r} != {previous.record_id!r}")
        if verifier is not None and not verifier.verify(record):
            problem("signature", f"audit.integrity.value does not verify with {verifier.algorithm}")
        ended = ATTR_SEQUENCE_END in fields and fields[ATTR_SEQUENCE_END].bool_value
        last[stream_id] = _Link(number, integrity_hash(record).hex(), record_id, ended)
    return problems


def strip_sequence(record: LogRecord) -> None:
    """Remove every `audit.sequence.*` attribute."""
    attributes = record.attributes
    for index in range(len(attributes) - 1, -1, -1):
        if attributes[index].key.startswith(SEQUENCE_PREFIX):
            del attributes[index]


def _record_id_of(record: LogRecord) -> str | None:
    uid: str | None = None
    for kv in record.attributes:
        if kv.key == ATTR_RECORD_ID:
            return str(kv.value.string_value)
        if kv.key == ATTR_LOG_RECORD_UID:
            uid = str(kv.value.string_value)
    return uid


def _sequence_number_of(record: LogRecord) -> int | None:
    for kv in record.attributes:
        if kv.key == ATTR_SEQUENCE_NUMBER:
            return int(kv.value.int_value)
    return None


def _check_unsequenced(record: LogRecord) -> None:
    for kv in record.attributes:
        if kv.key.startswith(SEQUENCE_PREFIX):
            raise InvalidAuditRecordError(f"{kv.key}: the record is already sealed into a stream")


__all__ = [
    "ATTR_SEQUENCE_END",
    "ATTR_SEQUENCE_NUMBER",
    "ATTR_SEQUENCE_PREVIOUS_HASH",
    "ATTR_SEQUENCE_PREVIOUS_RECORD_ID",
    "ATTR_SEQUENCE_STREAM_ID",
    "SEQUENCE_PREFIX",
    "STREAM_END_EVENT",
    "ChainProblem",
    "StreamChain",
    "check_chain",
    "stream_end_record",
    "strip_sequence",
]
