"""Verify audit streams read back from a WAL or a collector archive: chains, proofs, digests, duplicates.

Records are demultiplexed by `audit.sequence.stream_id` and checked by sequence number, never by
the order they were read in: redelivery legitimately reorders and duplicates them in an archive.

Memory: one pass, and per stream a packed 57-byte slot per sequence number (hash and link
prefixes, id fingerprints, flags, position), indexed densely by number, plus one small object per
digest record. So about 60 bytes per record: 100k records take ~6 MB, 10M ~600 MB. Inputs bigger
than memory allows are verified file by file (a stream that spans files then reports its cut
ends as notices, not problems, unless `complete`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import heapq
import os
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, cast

from google.protobuf.message import DecodeError
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs

from otel_audit.archive import (
    ArchiveStats,
    archive_files,
    is_gzip,
    numbered_lines,
    open_archive,
    requests_in_line,
)
from otel_audit.canonical import INTEGRITY_PREFIX, canonical_bytes, canonical_bytes_from_otlp_json
from otel_audit.exceptions import OtelAuditError, WALCorruptionError, WALError
from otel_audit.integrity.chain import (
    ATTR_SEQUENCE_END,
    ATTR_SEQUENCE_NUMBER,
    ATTR_SEQUENCE_PREVIOUS_HASH,
    ATTR_SEQUENCE_PREVIOUS_RECORD_ID,
    ATTR_SEQUENCE_STREAM_ID,
)
from otel_audit.integrity.digest import (
    ATTR_DIGEST_HEAD_HASH,
    ATTR_DIGEST_HEAD_NUMBER,
    ATTR_DIGEST_PREVIOUS_HASH,
    ATTR_DIGEST_PREVIOUS_NUMBER,
    ATTR_DIGEST_RECORDS,
    DIGEST_EVENT,
)
from otel_audit.integrity.signing import (
    ATTR_INTEGRITY_CANONICALIZATION,
    ATTR_INTEGRITY_SIGNER,
    ATTR_INTEGRITY_VALUE,
    CANONICALIZATION_JCS,
    RESOURCE_INTEGRITY_ALGORITHM,
    RESOURCE_INTEGRITY_CERTIFICATE,
    SIGNER_PRODUCER,
    Verifier,
)
from otel_audit.record import ATTR_LOG_RECORD_UID, ATTR_RECORD_ID

SEVERITY_PROBLEM: Final = "problem"
"""Evidence of tampering or loss: the report is not clean and `otel-audit verify` exits 1."""
SEVERITY_NOTICE: Final = "notice"
"""Worth knowing, not evidence of tampering (a crash, a redelivery, a WAL that already shipped its head)."""

# Finding kinds: stable strings for code and for `--json`; docs/integrity.md explains each.
BAD_SIGNATURE: Final = "bad_signature"
UNSIGNED: Final = "unsigned"
MODIFIED: Final = "modified"
REORDERED: Final = "reordered"
BROKEN_LINK: Final = "broken_link"
GENESIS_LINK: Final = "genesis_link"
GAP: Final = "gap"
AFTER_END: Final = "after_end"
CONFLICT: Final = "conflict"
DIGEST_MISMATCH: Final = "digest_mismatch"
UNREADABLE: Final = "unreadable"
UNCLOSED: Final = "unclosed"
HEAD_MISSING: Final = "head_missing"
REDELIVERED: Final = "redelivered"
UNSEQUENCED: Final = "unsequenced"
TORN: Final = "torn"
SIGNATURES_NOT_CHECKED: Final = "signatures_not_checked"

DEFAULT_MAX_FINDINGS: Final = 1000

ProgressCallback = Callable[[int, "int | None"], None]
"""Called as progress(done, total) now and then; units are records (WAL) or bytes (archive)."""

# One slot per sequence number: IntegrityHash prefix, previous_hash prefix, record id and
# previous_record_id fingerprints, flags, packed position. 128-bit prefixes keep second
# preimages out of reach; the id fingerprints only locate (the hashes bind).
_SLOT: Final = struct.Struct("<16s16s8s8sBQ")
_SLOT_SIZE: Final = _SLOT.size
_FLAGS_AT: Final = 48
_PRESENT, _PREV_HASH, _PREV_ID, _END, _DIGEST, _PREV_BAD, _HAS_ID = 1, 2, 4, 8, 16, 32, 64
_NO_BYTES16: Final = bytes(16)
_NO_BYTES8: Final = bytes(8)
_POSITION_BITS: Final = 40
_GROW_MIN_SLOTS: Final = 1 << 16
_HEX: Final = frozenset("0123456789abcdef")

_SEQUENCE_KEYS: Final = frozenset(
    {
        ATTR_RECORD_ID,
        ATTR_LOG_RECORD_UID,
        ATTR_SEQUENCE_STREAM_ID,
        ATTR_SEQUENCE_NUMBER,
        ATTR_SEQUENCE_PREVIOUS_HASH,
        ATTR_SEQUENCE_PREVIOUS_RECORD_ID,
        ATTR_SEQUENCE_END,
        ATTR_INTEGRITY_VALUE,
        ATTR_INTEGRITY_CANONICALIZATION,
        ATTR_INTEGRITY_SIGNER,
        ATTR_DIGEST_HEAD_NUMBER,
        ATTR_DIGEST_HEAD_HASH,
        ATTR_DIGEST_RECORDS,
        ATTR_DIGEST_PREVIOUS_NUMBER,
        ATTR_DIGEST_PREVIOUS_HASH,
    }
)

_UNKNOWN_INTEGRITY: Final = "audit.integrity.<unknown>"
"""Where the extractors note an `audit.integrity.*` key we do not write (outside the proof, so suspect)."""

Fields = dict[str, object]
"""The attributes the verifier reads, as Python values (str, int, bool, float, bytes, or None)."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing the verifier found; `kind` is stable for code, `detail` is for people."""

    kind: str
    severity: str
    detail: str
    stream_id: str | None = None
    number: int | None = None
    position: str | None = None
    count: int = 1
    """How many records this finding covers (a gap of 5 numbers, 12 redeliveries)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "stream_id": self.stream_id,
            "number": self.number,
            "position": self.position,
            "count": self.count,
            "detail": self.detail,
        }

    def __str__(self) -> str:
        where = f"{self.position}: " if self.position else ""
        return f"{where}{self.kind}: {self.detail}"


@dataclass(frozen=True, slots=True)
class StreamSummary:
    """What one stream looked like: its numbers, whether it was closed, and how much digests attest."""

    stream_id: str
    first_number: int
    last_number: int
    records: int
    """Distinct sequence numbers present."""
    redelivered: int
    """Extra copies of records already seen with the same content (benign: at-least-once delivery)."""
    closed: bool
    """A record with `audit.sequence.end` is present: the producer shut the stream down gracefully."""
    digests: int
    last_digest_number: int | None
    unattested: int
    """Records after the head of the last digest (all of them without one); 0 for a closed stream."""
    problems: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "first_number": self.first_number,
            "last_number": self.last_number,
            "records": self.records,
            "redelivered": self.redelivered,
            "closed": self.closed,
            "digests": self.digests,
            "last_digest_number": self.last_digest_number,
            "unattested": self.unattested,
            "problems": self.problems,
        }


@dataclass
class VerifyReport:
    """The outcome of one verification; `ok` is True when no finding is a problem."""

    source: str
    complete: bool
    records_read: int = 0
    signatures_checked: int = 0
    algorithms: list[str] = field(default_factory=list)
    streams: list[StreamSummary] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    """The first `max_findings` findings, in the order found; `counts` has them all."""
    counts: dict[str, int] = field(default_factory=dict)
    problems: int = 0
    notices: int = 0
    elapsed_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.problems == 0

    @property
    def truncated_findings(self) -> int:
        """Findings counted but not kept in `findings` (past `max_findings`)."""
        return max(0, self.problems + self.notices - len(self.findings))

    def kinds(self, severity: str | None = None) -> set[str]:
        """The kinds found (optionally of one severity), from the kept findings."""
        return {f.kind for f in self.findings if severity is None or f.severity == severity}

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "ok": self.ok,
            "complete": self.complete,
            "records_read": self.records_read,
            "signatures_checked": self.signatures_checked,
            "algorithms": self.algorithms,
            "problems": self.problems,
            "notices": self.notices,
            "counts": dict(sorted(self.counts.items())),
            "streams": [s.to_dict() for s in self.streams],
            "findings": [f.to_dict() for f in self.findings],
            "findings_not_listed": self.truncated_findings,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
        }


@dataclass(slots=True)
class _DigestFacts:
    position: int
    head_number: int | None
    head16: bytes | None
    records: int | None
    previous_number: int | None
    previous16: bytes | None
    malformed: str | None


class _Stream:
    """Slots of one stream, indexed densely by sequence number; far-off numbers go to a dict."""

    __slots__ = ("base", "data", "digests", "overflow", "redelivered", "stream_id")

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self.base = 0
        self.data = bytearray()
        self.overflow: dict[int, bytes] = {}
        self.redelivered = 0
        self.digests: dict[int, _DigestFacts] = {}

    def get(self, number: int) -> bytes | None:
        index = number - self.base
        if 0 <= index < len(self.data) // _SLOT_SIZE:
            at = index * _SLOT_SIZE
            if self.data[at + _FLAGS_AT] & _PRESENT:
                return bytes(self.data[at : at + _SLOT_SIZE])
        return self.overflow.get(number)

    def put(self, number: int, slot: bytes) -> bytes | None:
        """Store `slot` for `number`, or return the slot already stored there (a duplicate)."""
        data = self.data
        if not data and not self.overflow:
            self.base = number
            data.extend(slot)
            return None
        slots = len(data) // _SLOT_SIZE
        index = number - self.base
        room = max(slots, _GROW_MIN_SLOTS)
        if index < 0 and -index <= room:
            grow = max(-index, slots)  # doubling keeps a descending input linear
            data[0:0] = bytes(grow * _SLOT_SIZE)
            self.base -= grow
            index += grow
            slots += grow
        elif slots <= index <= slots + room:
            data.extend(bytes((index - slots + 1) * _SLOT_SIZE))
            slots = index + 1
        if 0 <= index < slots:
            at = index * _SLOT_SIZE
            if data[at + _FLAGS_AT] & _PRESENT:
                return bytes(data[at : at + _SLOT_SIZE])
            if self.overflow and number in self.overflow:
                return self.overflow[number]
            data[at : at + _SLOT_SIZE] = slot
            return None
        existing = self.overflow.get(number)
        if existing is None:
            self.overflow[number] = slot
        return existing

    def present(self) -> Iterator[tuple[int, bytes]]:
        """(number, slot) of every number present, ascending."""
        return heapq.merge(self._dense(), sorted(self.overflow.items()))

    def _dense(self) -> Iterator[tuple[int, bytes]]:
        data, base, size = self.data, self.base, _SLOT_SIZE
        for index in range(len(data) // size):
            at = index * size
            if data[at + _FLAGS_AT] & _PRESENT:
                yield base + index, bytes(data[at : at + size])


class ChainVerifier:
    """Accumulates records from any source, then checks every stream in `finish()`.

    Feed records with `add_proto` (WAL payloads) or `add_json` (archive lines) in any order;
    duplicates and reordering are expected. Not thread-safe; one verifier per verification.

    Args:
        keys: trusted verifiers (HMAC keys, public keys). Given any, every record must carry a
            proof that one of them accepts; the Resource's `audit.integrity.algorithm` and
            `audit.integrity.certificate` only choose which key to try first, they are never trusted.
        complete: the input holds whole streams, so a stream that does not start at 1
            (`head_missing`) or has no end record (`unclosed`) is a problem, not a notice.
        head_note: appended to a `head_missing` finding (a WAL explains where its head went).
        max_findings: findings kept with detail; the rest are counted in `VerifyReport.counts`.
    """

    def __init__(
        self,
        keys: Sequence[Verifier] = (),
        *,
        complete: bool = False,
        source: str = "",
        head_note: str = "",
        max_findings: int = DEFAULT_MAX_FINDINGS,
    ) -> None:
        self._keys = list(keys)
        self._complete = complete
        self._head_note = head_note
        self._max_findings = max_findings
        self._report = VerifyReport(source=source, complete=complete)
        self._report.algorithms = sorted({k.algorithm for k in self._keys})
        self._counts: Counter[str] = Counter()
        self._streams: dict[str, _Stream] = {}
        self._sources: list[tuple[str, str]] = []
        self._key_order: dict[tuple[str | None, str | None], list[Verifier]] = {}
        self._unsequenced: dict[str, bytes] = {}
        self._unsequenced_count = 0
        self._unsequenced_first: str | None = None
        self._signed_unchecked = 0
        self._started = time.monotonic()

    # -- input -----------------------------------------------------------------------------------

    def source(self, label: str, template: str = "{label}:{n}") -> int:
        """Register where records come from; positions print as `template` with `label` and `n`."""
        self._sources.append((label, template))
        return len(self._sources) - 1

    def position(self, source: int, n: int) -> str:
        label, template = self._sources[source]
        return template.format(label=label, n=n)

    def add_proto(
        self, record: LogRecord, source: int, n: int, resource: tuple[str | None, str | None] | None = None
    ) -> None:
        """Add a protobuf record read at position `n` (a WAL seq) of `source`.

        `resource` is the Resource's (`audit.integrity.algorithm`, `audit.integrity.certificate`).
        """
        fields: Fields = {}
        for kv in record.attributes:
            if kv.key in _SEQUENCE_KEYS:
                fields[kv.key] = _proto_value(kv.value) if kv.HasField("value") else None
            elif kv.key.startswith(INTEGRITY_PREFIX):
                fields[_UNKNOWN_INTEGRITY] = kv.key
        self._ingest(record.event_name, fields, canonical_bytes(record), source, n, resource)

    def add_json(
        self,
        record: Mapping[str, Any],
        source: int,
        n: int,
        resource: tuple[str | None, str | None] | None = None,
    ) -> None:
        """Add an OTLP/JSON record (an element of `logRecords`) read at line `n` of `source`."""
        try:
            canonical = canonical_bytes_from_otlp_json(record)
            fields = _json_fields(record.get("attributes") or [])
            event_name = record.get("eventName") or record.get("event_name") or ""
        except ValueError as exc:
            self.add_unreadable(source, n, f"a log record is not valid OTLP/JSON: {exc}")
            return
        self._ingest(str(event_name), fields, canonical, source, n, resource)

    def add_unreadable(self, source: int, n: int, detail: str) -> None:
        """Record data that could not be decoded at all: a problem (what it held cannot be checked)."""
        self._finding(UNREADABLE, SEVERITY_PROBLEM, detail, position=self.position(source, n))

    def add_notice(self, kind: str, detail: str, *, count: int = 1, position: str | None = None) -> None:
        """An input-level notice from a reader (torn archive lines, quarantined WAL frames)."""
        self._finding(kind, SEVERITY_NOTICE, detail, position=position, count=count)

    def _ingest(
        self,
        event_name: str,
        fields: Fields,
        canonical: bytes,
        source: int,
        n: int,
        resource: tuple[str | None, str | None] | None,
    ) -> None:
        report = self._report
        report.records_read += 1
        digest = hashlib.sha256(canonical).digest()
        packed = (source << _POSITION_BITS) | (n & ((1 << _POSITION_BITS) - 1))
        if self._keys:
            self._check_proof(fields, canonical, resource, source, n)
        elif ATTR_INTEGRITY_VALUE in fields:
            self._signed_unchecked += 1
        record_id = _text(fields.get(ATTR_RECORD_ID)) or _text(fields.get(ATTR_LOG_RECORD_UID))
        stream_id = fields.get(ATTR_SEQUENCE_STREAM_ID)
        number = fields.get(ATTR_SEQUENCE_NUMBER)
        if stream_id is None and number is None:
            self._unsequenced_record(record_id, digest, source, n)
            return
        if type(stream_id) is not str or not stream_id or type(number) is not int or number < 1:
            self._finding(
                UNREADABLE,
                SEVERITY_PROBLEM,
                f"malformed sequence attributes (stream_id={stream_id!r:.60}, number={number!r:.30})",
                position=self.position(source, n),
            )
            return
        flags = _PRESENT
        prev16 = _NO_BYTES16
        previous_hash = fields.get(ATTR_SEQUENCE_PREVIOUS_HASH, _MISSING)
        if previous_hash is not _MISSING:
            flags |= _PREV_HASH
            parsed = _hash16(previous_hash)
            if parsed is None:
                flags |= _PREV_BAD
            else:
                prev16 = parsed
        previd = _NO_BYTES8
        previous_id = fields.get(ATTR_SEQUENCE_PREVIOUS_RECORD_ID, _MISSING)
        if previous_id is not _MISSING:
            flags |= _PREV_ID
            previd = _fingerprint(str(previous_id))
        idfp = _NO_BYTES8
        if record_id is not None:
            flags |= _HAS_ID
            idfp = _fingerprint(record_id)
        if fields.get(ATTR_SEQUENCE_END) is True:
            flags |= _END
        if event_name == DIGEST_EVENT:
            flags |= _DIGEST
        stream = self._streams.get(stream_id)
        if stream is None:
            stream = self._streams[stream_id] = _Stream(stream_id)
        existing = stream.put(number, _SLOT.pack(digest[:16], prev16, idfp, previd, flags, packed))
        if existing is None:
            if flags & _DIGEST:
                stream.digests[number] = _digest_facts(fields, packed)
        elif existing[:16] == digest[:16]:
            stream.redelivered += 1
        else:
            first = self._unpack_position(_SLOT.unpack(existing)[5])
            self._finding(
                CONFLICT,
                SEVERITY_PROBLEM,
                f"two different records claim number {number} (the other is at {first}): one was"
                " altered, or forged into the stream",
                stream_id=stream_id,
                number=number,
                position=self.position(source, n),
            )

    def _unsequenced_record(self, record_id: str | None, digest: bytes, source: int, n: int) -> None:
        self._unsequenced_count += 1
        if self._unsequenced_first is None:
            self._unsequenced_first = self.position(source, n)
        if record_id is None:
            return
        seen = self._unsequenced.setdefault(record_id, digest[:16])
        if seen != digest[:16]:
            self._finding(
                CONFLICT,
                SEVERITY_PROBLEM,
                f"record id {record_id!r} appears with two different contents",
                position=self.position(source, n),
            )

    def _check_proof(
        self,
        fields: Fields,
        canonical: bytes,
        resource: tuple[str | None, str | None] | None,
        source: int,
        n: int,
    ) -> None:
        self._report.signatures_checked += 1
        proof_text = fields.get(ATTR_INTEGRITY_VALUE)
        stream_id = _text(fields.get(ATTR_SEQUENCE_STREAM_ID))
        number = fields.get(ATTR_SEQUENCE_NUMBER)
        number = number if type(number) is int else None

        def bad(kind: str, detail: str) -> None:
            self._finding(
                kind,
                SEVERITY_PROBLEM,
                detail,
                stream_id=stream_id,
                number=number,
                position=self.position(source, n),
            )

        if ATTR_INTEGRITY_VALUE not in fields:
            bad(
                UNSIGNED,
                "no audit.integrity.value although keys were given: the proof was removed, or never made",
            )
            return
        # The integrity attributes are outside the signed bytes, so each is checked here: only
        # what a producer writes is accepted (an absent signer or canonicalization means the
        # draft's default, producer and jcs).
        signer = fields.get(ATTR_INTEGRITY_SIGNER, SIGNER_PRODUCER)
        if signer != SIGNER_PRODUCER:
            bad(BAD_SIGNATURE, f"audit.integrity.signer {signer!r:.40} is not 'producer'")
            return
        unknown = fields.get(_UNKNOWN_INTEGRITY)
        if unknown is not None:
            bad(BAD_SIGNATURE, f"unexpected integrity attribute {unknown!r:.60} beside the producer's proof")
            return
        canonicalization = fields.get(ATTR_INTEGRITY_CANONICALIZATION, CANONICALIZATION_JCS)
        if canonicalization != CANONICALIZATION_JCS:
            bad(BAD_SIGNATURE, f"audit.integrity.canonicalization {canonicalization!r:.40} is not 'jcs'")
            return
        try:
            if type(proof_text) is not str:
                raise ValueError
            proof = base64.b64decode(proof_text, validate=True)
        except (binascii.Error, ValueError):
            bad(BAD_SIGNATURE, "audit.integrity.value is not base64")
            return
        algorithm, certificate = resource if resource is not None else (None, None)
        candidates = self._candidates(algorithm, certificate)
        if not candidates:
            bad(BAD_SIGNATURE, f"signed with {algorithm}, but no {algorithm} key was given")
            return
        for key in candidates:
            if key.verify_bytes(canonical, proof):
                return
        bad(
            BAD_SIGNATURE,
            "audit.integrity.value does not verify with the given key(s): content or proof altered",
        )

    def _candidates(self, algorithm: str | None, certificate: str | None) -> list[Verifier]:
        cached = self._key_order.get((algorithm, certificate))
        if cached is None:
            keys = [k for k in self._keys if algorithm is None or k.algorithm == algorithm]
            keys.sort(key=lambda k: getattr(k, "certificate", None) != certificate)
            cached = self._key_order[(algorithm, certificate)] = keys
        return cached

    # -- checks ----------------------------------------------------------------------------------

    def finish(self) -> VerifyReport:
        """Check every stream and return the report. Call once."""
        report = self._report
        for stream in self._streams.values():
            summary = self._check_stream(stream)
            if summary is not None:
                report.streams.append(summary)
        if self._unsequenced_count:
            self._finding(
                UNSEQUENCED,
                SEVERITY_NOTICE,
                f"{self._unsequenced_count} record(s) carry no audit.sequence.* attributes (SDK-path records or"
                " chain=False): their order and completeness cannot be checked",
                position=self._unsequenced_first,
                count=self._unsequenced_count,
            )
        if self._signed_unchecked:
            self._finding(
                SIGNATURES_NOT_CHECKED,
                SEVERITY_NOTICE,
                f"{self._signed_unchecked} record(s) carry a proof that was not checked: give --key-file"
                " (HMAC) or --public-key (EdDSA, ES256)",
                count=self._signed_unchecked,
            )
        report.counts = dict(self._counts)
        report.elapsed_seconds = time.monotonic() - self._started
        return report

    def _check_stream(self, stream: _Stream) -> StreamSummary | None:
        sid = stream.stream_id
        problems_before = self._report.problems
        first: int | None = None
        last = 0
        records = 0
        end_at: int | None = None
        after_end: list[tuple[int, int]] = []  # (number, packed position)
        previous: tuple[bytes, bytes, bytes, bytes, int, int] | None = None
        for number, raw in stream.present():
            slot = _SLOT.unpack(raw)
            flags, packed = slot[4], slot[5]
            records += 1
            if first is None:
                first = number
                if number == 1:
                    if flags & (_PREV_HASH | _PREV_ID):
                        self._finding(
                            GENESIS_LINK,
                            SEVERITY_PROBLEM,
                            "the genesis record (number 1) carries audit.sequence.previous_hash or"
                            " previous_record_id; the draft requires it to omit both",
                            stream_id=sid,
                            number=1,
                            position=self._unpack_position(packed),
                        )
                else:
                    note = f"; {self._head_note}" if self._head_note else ""
                    self._finding(
                        HEAD_MISSING,
                        SEVERITY_PROBLEM if self._complete else SEVERITY_NOTICE,
                        f"the stream starts at number {number}: records 1..{number - 1} are not in this input{note}",
                        stream_id=sid,
                        number=number,
                        position=self._unpack_position(packed),
                        count=number - 1,
                    )
                    self._require_link(sid, number, slot)
            elif previous is not None and number != last + 1:
                missing = number - last - 1
                span = (
                    f"number {last + 1} is"
                    if missing == 1
                    else f"numbers {last + 1}..{number - 1} ({missing}) are"
                )
                self._finding(
                    GAP,
                    SEVERITY_PROBLEM,
                    f"{span} missing before this record: deleted or lost",
                    stream_id=sid,
                    number=last + 1,
                    position=self._unpack_position(packed),
                    count=missing,
                )
                self._require_link(sid, number, slot)
            elif previous is not None:
                self._check_link(sid, number, previous, slot)
            if end_at is not None and number > end_at:
                after_end.append((number, packed))
            if flags & _END and end_at is None:
                end_at = number
            last = number
            previous = slot
        if first is None:
            return None
        if after_end:
            n_after, at = after_end[0]
            self._finding(
                AFTER_END,
                SEVERITY_PROBLEM,
                f"{len(after_end)} record(s), numbers {n_after}..{after_end[-1][0]}, follow the end of the stream"
                f" at number {end_at}: appended after a graceful close",
                stream_id=sid,
                number=n_after,
                position=self._unpack_position(at),
                count=len(after_end),
            )
        last_digest_head = self._check_digests(stream, first)
        closed = end_at is not None
        last_digest = max(stream.digests) if stream.digests else None
        attested_to = last_digest_head if last_digest_head is not None else first - 1
        unattested = 0 if closed else max(0, last - attested_to)
        if not closed:
            if last_digest is None:
                attest = "no digest record attests any of its records"
            else:
                attest = (
                    f"the last digest (number {last_digest}) attests records up to {attested_to};"
                    f" {unattested} record(s) after it are attested by no digest"
                )
            raw_last = stream.get(last)
            self._finding(
                UNCLOSED,
                SEVERITY_PROBLEM if self._complete else SEVERITY_NOTICE,
                f"the stream ended without a close at number {last} (crash, kill, truncation, or still being"
                f" written); {attest}",
                stream_id=sid,
                number=last,
                position=self._unpack_position(_SLOT.unpack(raw_last)[5]) if raw_last else None,
            )
        if stream.redelivered:
            self._finding(
                REDELIVERED,
                SEVERITY_NOTICE,
                f"{stream.redelivered} identical extra copies of records (at-least-once redelivery; deduplicate"
                " by audit.record.id)",
                stream_id=sid,
                count=stream.redelivered,
            )
        return StreamSummary(
            stream_id=sid,
            first_number=first,
            last_number=last,
            records=records,
            redelivered=stream.redelivered,
            closed=closed,
            digests=len(stream.digests),
            last_digest_number=last_digest,
            unattested=unattested,
            problems=self._report.problems - problems_before,
        )

    def _require_link(self, sid: str, number: int, slot: tuple[bytes, bytes, bytes, bytes, int, int]) -> None:
        flags = slot[4]
        if not flags & _PREV_HASH or flags & _PREV_BAD:
            what = "no" if not flags & _PREV_HASH else "a malformed (not 64 lowercase hex digits)"
            self._finding(
                BROKEN_LINK,
                SEVERITY_PROBLEM,
                f"record {number} has {what} audit.sequence.previous_hash; only the genesis record may omit it",
                stream_id=sid,
                number=number,
                position=self._unpack_position(slot[5]),
            )

    def _check_link(
        self,
        sid: str,
        number: int,
        before: tuple[bytes, bytes, bytes, bytes, int, int],
        slot: tuple[bytes, bytes, bytes, bytes, int, int],
    ) -> None:
        hash16, _, idfp, _, before_flags, before_at = before
        _, prev16, _, previd, flags, at = slot
        if not flags & _PREV_HASH or flags & _PREV_BAD:
            self._require_link(sid, number, slot)
        elif prev16 != hash16:
            if flags & _PREV_ID and before_flags & _HAS_ID and previd == idfp:
                self._finding(
                    MODIFIED,
                    SEVERITY_PROBLEM,
                    f"record {number - 1} does not hash to the previous_hash that record {number} (at"
                    f" {self._unpack_position(at)}) holds for it: record {number - 1} was modified",
                    stream_id=sid,
                    number=number - 1,
                    position=self._unpack_position(before_at),
                )
            else:
                self._finding(
                    REORDERED,
                    SEVERITY_PROBLEM,
                    f"record {number} names another predecessor than record {number - 1} (at"
                    f" {self._unpack_position(before_at)}): records reordered, renumbered or replaced",
                    stream_id=sid,
                    number=number,
                    position=self._unpack_position(at),
                )
        elif not flags & _PREV_ID or not before_flags & _HAS_ID or previd != idfp:
            self._finding(
                BROKEN_LINK,
                SEVERITY_PROBLEM,
                f"record {number}'s audit.sequence.previous_record_id is not the id of record {number - 1}",
                stream_id=sid,
                number=number,
                position=self._unpack_position(at),
            )

    def _check_digests(self, stream: _Stream, first: int) -> int | None:
        """Check each digest against the records it attests and the digest before it; return the last head."""
        sid = stream.stream_id
        previous: tuple[int, _DigestFacts] | None = None
        last_head: int | None = None
        for number, facts in sorted(stream.digests.items()):
            where = self._unpack_position(facts.position)

            def problem(detail: str, at: str = where, *, n: int = number) -> None:
                self._finding(DIGEST_MISMATCH, SEVERITY_PROBLEM, detail, stream_id=sid, number=n, position=at)

            if facts.malformed is not None:
                problem(f"digest record {number} is malformed: {facts.malformed}")
                continue
            head = cast(int, facts.head_number)
            if head >= number:
                problem(f"digest record {number} attests record {head}, which is not before it")
                continue
            attested = stream.get(head)
            if attested is not None and attested[:16] != facts.head16:
                problem(
                    f"record {head} does not hash to what digest record {number} attests: record {head} was modified",
                    self._unpack_position(_SLOT.unpack(attested)[5]),
                    n=head,
                )
            if previous is None:
                if facts.previous_number is not None and facts.previous_number >= first:
                    problem(
                        f"digest record {number} names digest {facts.previous_number} as its predecessor,"
                        " which is not a digest record in this input"
                    )
                elif facts.previous_number is None and facts.records != head:
                    problem(
                        f"first digest record {number} counts {facts.records} records, but attests {head}"
                    )
            else:
                before_number, before = previous
                before_slot = stream.get(before_number)
                if facts.previous_number != before_number or (
                    before_slot is not None and before_slot[:16] != facts.previous16
                ):
                    problem(
                        f"digest record {number} does not point at the previous digest (number {before_number}):"
                        " digest chain broken"
                    )
                elif before.head_number is not None and facts.records != head - before.head_number:
                    problem(
                        f"digest record {number} counts {facts.records} records since the previous digest,"
                        f" but attests {head - before.head_number}"
                    )
            previous = (number, facts)
            last_head = head if last_head is None else max(last_head, head)
        return last_head

    # -- bookkeeping -------------------------------------------------------------------------------

    def _unpack_position(self, packed: int) -> str:
        return self.position(packed >> _POSITION_BITS, packed & ((1 << _POSITION_BITS) - 1))

    def _finding(
        self,
        kind: str,
        severity: str,
        detail: str,
        *,
        stream_id: str | None = None,
        number: int | None = None,
        position: str | None = None,
        count: int = 1,
    ) -> None:
        report = self._report
        self._counts[kind] += 1
        if severity == SEVERITY_PROBLEM:
            report.problems += 1
        else:
            report.notices += 1
        if len(report.findings) < self._max_findings:
            report.findings.append(Finding(kind, severity, detail, stream_id, number, position, count))


_MISSING: Final = object()


def _text(value: object) -> str | None:
    return value if type(value) is str and value else None


def _fingerprint(text: str) -> bytes:
    # Fingerprints are compared within one process only, so the interpreter's keyed string hash
    # serves (cached on the str object, unpredictable to whoever wrote the input).
    return (hash(text) & 0xFFFF_FFFF_FFFF_FFFF).to_bytes(8, "little")


def _hash16(value: object) -> bytes | None:
    """The first 16 bytes of a hash written as 64 lowercase hex digits; None when malformed."""
    if type(value) is not str or len(value) != 64 or not _HEX.issuperset(value):
        return None
    return bytes.fromhex(value[:32])


def _digest_facts(fields: Fields, packed: int) -> _DigestFacts:
    head, head_hash = fields.get(ATTR_DIGEST_HEAD_NUMBER), fields.get(ATTR_DIGEST_HEAD_HASH)
    records = fields.get(ATTR_DIGEST_RECORDS)
    previous, previous_hash = fields.get(ATTR_DIGEST_PREVIOUS_NUMBER), fields.get(ATTR_DIGEST_PREVIOUS_HASH)
    head16 = _hash16(head_hash)
    previous16 = _hash16(previous_hash) if previous_hash is not None else None
    malformed = None
    if type(head) is not int or head16 is None:
        malformed = "audit.digest.head.number/hash missing or not an int and 64 hex digits"
    elif type(records) is not int:
        malformed = "audit.digest.records missing or not an int"
    elif (previous is None) != (previous_hash is None) or (
        previous is not None and type(previous) is not int
    ):
        malformed = (
            "audit.digest.previous.number/hash must both be set (an int and 64 hex digits) or both absent"
        )
    elif previous_hash is not None and previous16 is None:
        malformed = "audit.digest.previous.hash is not 64 lowercase hex digits"
    return _DigestFacts(
        position=packed,
        head_number=head if type(head) is int else None,
        head16=head16,
        records=records if type(records) is int else None,
        previous_number=previous if type(previous) is int else None,
        previous16=previous16,
        malformed=malformed,
    )


def _proto_value(value: Any) -> object:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind in ("array_value", "kvlist_value"):
        return kind  # a container where a scalar belongs: kept as a marker that fails the type checks
    return getattr(value, kind)


def _json_fields(key_values: object) -> Fields:
    if not isinstance(key_values, list):
        raise ValueError("attributes must be a JSON array")
    fields: Fields = {}
    for kv in key_values:
        key = kv.get("key") if isinstance(kv, dict) else None
        if key in _SEQUENCE_KEYS:
            fields[key] = _json_value(kv.get("value"))
        elif isinstance(key, str) and key.startswith(INTEGRITY_PREFIX):
            fields[_UNKNOWN_INTEGRITY] = key
    return fields


def _json_value(value: object) -> object:
    if not isinstance(value, dict) or len(value) != 1:
        return None
    ((kind, raw),) = value.items()
    if kind in ("stringValue", "string_value"):
        return raw if isinstance(raw, str) else None
    if kind in ("intValue", "int_value"):
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, str):
            try:
                return int(raw)
            except ValueError:
                return None
        return None
    if kind in ("boolValue", "bool_value"):
        return raw if isinstance(raw, bool) else None
    return kind  # another kind where a scalar belongs: a marker that fails the type checks


# -- sources ---------------------------------------------------------------------------------------


def verify_wal(
    directory: str | os.PathLike[str],
    keys: Sequence[Verifier] = (),
    *,
    complete: bool = False,
    progress: ProgressCallback | None = None,
    max_findings: int = DEFAULT_MAX_FINDINGS,
) -> VerifyReport:
    """Verify the records in a WAL directory (every shard: segments and dead letters), beside running writers.

    Reads without the LOCKs, like `otel-audit status`. A WAL root holds one WAL per writing
    process (itself, then `shards/<id>/`); all of them are read. Acknowledged segments are deleted
    by the sender, so a WAL usually holds the tail of its streams: their missing head is a notice
    unless `complete`. A damaged frame is reported (`unreadable`) and reading goes on in the next
    segment.

    Raises:
        WALError: `directory` is not a WAL directory.
    """
    from otel_audit.shards import ShardRoot
    from otel_audit.wal.reader import SEGMENTS_DIR, WALReader

    root = Path(directory)
    WALReader(root)  # raises a WALError naming the directory when it is not one
    shards = ShardRoot(root).paths()
    if not shards:
        raise WALError(f"{root} is not an otel-audit WAL (no {SEGMENTS_DIR}/ inside, no shards/)")
    verifier = ChainVerifier(
        keys,
        complete=complete,
        source=f"WAL {root}",
        head_note="the WAL deletes segments once the collector acknowledged them; verify the archive for those",
        max_findings=max_findings,
    )
    totals = [_wal_span(shard) for shard in shards] if progress is not None else []
    total = sum(totals) if progress is not None else None
    done = 0
    for shard in shards:
        label = "WAL" if shard == root else f"shard {shard.name}"

        def counted(n: int, base: int = done) -> None:
            if progress is not None:
                progress(base + n, total)

        done += _read_wal_shard(verifier, shard, label, counted if progress is not None else None)
    if progress is not None:
        progress(done, total if total is not None else done)
    return verifier.finish()


def _scan_newest_segment(
    segments_dir: Path, after: int
) -> tuple[list[tuple[int, bytes]], list[tuple[int, int]], int]:
    """Frames after seq `after` in the newest segment, reading past damage.

    Returns (intact frames after `after`, (seq, offset) of each damaged span followed by an
    intact frame, bytes at the end that are not a whole frame).
    """
    from otel_audit.wal import frame
    from otel_audit.wal.segment import HEADER_SIZE, list_segments

    segments = list_segments(segments_dir)
    if not segments:
        return [], [], 0
    try:
        data = segments[-1].path.read_bytes()
    except FileNotFoundError:
        return [], [], 0  # acknowledged and deleted meanwhile
    found: list[tuple[int, bytes]] = []
    damaged: list[tuple[int, int]] = []
    pos, size, last_seq = HEADER_SIZE, len(data), after
    while pos < size:
        status, header = frame.check(data, pos, size)
        if status is frame.Check.OK and header is not None:
            if header.seq > after:
                found.append((header.seq, data[pos + frame.HEADER_SIZE : pos + header.size]))
            last_seq = max(last_seq, header.seq)
            pos += header.size
            continue
        following = data.find(frame.FRAME_MAGIC, pos + 1)
        while following != -1 and frame.check(data, following, size)[0] is not frame.Check.OK:
            following = data.find(frame.FRAME_MAGIC, following + 1)
        if following == -1:
            return found, damaged, size - pos
        damaged.append((last_seq + 1, pos))
        pos = following
    return found, damaged, 0


def _wal_span(shard: Path) -> int:
    from otel_audit.wal.reader import SEGMENTS_DIR, WALReader
    from otel_audit.wal.segment import list_segments

    segments = list_segments(shard / SEGMENTS_DIR)
    first_seq = segments[0].first_seq if segments else 1
    return max(0, int(WALReader(shard).stats()["last_seq"]) - first_seq + 1)


def _read_wal_shard(
    verifier: ChainVerifier, shard: Path, label: str, progress: Callable[[int], None] | None
) -> int:
    """Feed one WAL's frames and dead letters to `verifier`; return the frames read."""
    from otel_audit.export.contexts import ContextStore
    from otel_audit.export.payload import decode_payload
    from otel_audit.wal import deadletter
    from otel_audit.wal.lock import holder_pid
    from otel_audit.wal.reader import QUARANTINE_DIR, SEGMENTS_DIR, WALReader
    from otel_audit.wal.segment import list_segments, parse_name

    reader = WALReader(shard)
    contexts = ContextStore(shard)
    wal_source = verifier.source(str(shard), label + " seq {n}")
    resources: dict[bytes, tuple[str | None, str | None] | None] = {}

    def resource_of(context_id: bytes) -> tuple[str | None, str | None] | None:
        if context_id not in resources:
            try:
                resources[context_id] = _resource_integrity(ResourceLogs.FromString(contexts.get(context_id)))
            except (OtelAuditError, DecodeError):
                resources[context_id] = None  # only a hint for choosing the key: try them all
        return resources[context_id]

    def add_payload(source: int, seq: int, payload: bytes) -> None:
        try:
            context_id, body = decode_payload(payload)
            record = LogRecord.FromString(bytes(body))
        except (OtelAuditError, DecodeError) as exc:
            verifier.add_unreadable(source, seq, f"payload does not decode: {exc}")
            return
        verifier.add_proto(record, source, seq, resource_of(context_id))

    segments_dir = shard / SEGMENTS_DIR
    after = 0
    done = 0
    batch_records = 256
    while True:
        cursor = reader.cursor(after)
        try:
            while batch := cursor.next_batch(batch_records, 4 << 20):
                for seq, payload in batch:
                    add_payload(wal_source, seq, payload)
                    after = seq  # the cursor's own position already counts a batch that then failed
                done += len(batch)
                if progress is not None:
                    progress(done)
            break
        except WALCorruptionError as exc:
            if batch_records > 1:
                # The damage was somewhere in that batch: read it again frame by frame, so every
                # whole frame before the damage is still checked.
                batch_records = 1
                continue
            damaged = Path(exc.segment) if exc.segment else None
            verifier.add_unreadable(
                wal_source,
                after + 1,
                f"damaged frame in {damaged} at byte {exc.offset}; the rest of that segment cannot be read"
                " (a writer opening the WAL quarantines it)",
            )
            damaged_first = (parse_name(damaged.name) or 0) if damaged is not None else after
            later = [s for s in list_segments(segments_dir) if s.first_seq > damaged_first]
            if not later:
                break
            after, batch_records = later[0].first_seq - 1, 256
        finally:
            cursor.close()
    # The cursor stops quietly at the first bad frame of the newest segment: for a live writer
    # that is a write in progress. Look past it: a whole frame further on means damage.
    found, damaged_at, torn = _scan_newest_segment(segments_dir, after)
    for seq, offset in damaged_at:
        verifier.add_unreadable(
            wal_source,
            seq,
            f"damaged bytes at offset {offset} of the newest segment, followed by intact frames",
        )
    for seq, payload in found:
        add_payload(wal_source, seq, payload)
        done += 1
    if torn and holder_pid(shard) is None:
        verifier.add_notice(
            TORN,
            f"the newest segment of {shard} ends in {torn} bytes that are not a whole frame: a write cut by a"
            " crash (never acknowledged); a writer opening the WAL cuts them",
        )
    dead_source = verifier.source(str(shard), label + " dead-letter seq {n}")
    for entry in deadletter.list_entries(shard):
        try:
            payload = deadletter.read_payload(entry)
        except (OSError, WALError) as exc:
            verifier.add_unreadable(dead_source, entry.seq, f"dead-letter entry unreadable: {exc}")
            continue
        add_payload(dead_source, entry.seq, payload)
    quarantined = _count_files(shard / QUARANTINE_DIR)
    if quarantined:
        verifier.add_notice(
            "quarantined",
            f"{shard / QUARANTINE_DIR} holds {quarantined} file(s): damaged frames a writer cut out of the"
            " WAL; their records show up as gaps",
            count=quarantined,
        )
    return done


def verify_archive(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    keys: Sequence[Verifier] = (),
    *,
    complete: bool = False,
    progress: ProgressCallback | None = None,
    max_findings: int = DEFAULT_MAX_FINDINGS,
) -> VerifyReport:
    """Verify the collector's JSON-lines archive (rotated predecessors of each path included, gzip allowed).

    A line torn by a killed collector is a notice (the sender resends what was not acknowledged);
    a complete line that is not an OTLP logs request is `unreadable`.

    Raises:
        FileNotFoundError: a path does not exist.
    """
    files: list[Path] = []
    for raw in [paths] if isinstance(paths, (str, os.PathLike)) else list(paths):
        path = Path(raw)
        if not path.is_file():
            raise FileNotFoundError(f"archive file {path} does not exist or is not a file")
        for candidate in [*archive_files(path), path]:
            if candidate not in files:
                files.append(candidate)
    verifier = ChainVerifier(
        keys,
        complete=complete,
        source="archive " + ", ".join(str(p) for p in files),
        head_note="older archive files missing, or records deleted",
        max_findings=max_findings,
    )
    stats = ArchiveStats()
    total = None if any(is_gzip(p) for p in files) else sum(p.stat().st_size for p in files)
    done = 0
    for path in files:
        source = verifier.source(str(path))
        with open_archive(path) as stream:
            for line_number, line in numbered_lines(stream, str(path), stats):
                done += len(line)
                if progress is not None and line_number % 64 == 0:
                    progress(done, total)
                if not line.strip():
                    continue
                for request in requests_in_line(line, str(path), line_number, stats):
                    _add_request(verifier, request, source, line_number)
    if stats.torn_lines:
        verifier.add_notice(
            TORN,
            f"{stats.torn_lines} torn line(s) skipped (a collector killed mid-write; the sender resends what"
            f" was not acknowledged): {'; '.join(stats.problems[:3])}",
            count=stats.torn_lines,
            position=stats.problems[0].rsplit(":", 1)[0] if stats.problems else None,
        )
    if progress is not None:
        progress(done, total if total is not None else done)
    return verifier.finish()


def _add_request(verifier: ChainVerifier, request: object, source: int, line: int) -> None:
    if not isinstance(request, dict):
        verifier.add_unreadable(source, line, f"not a JSON object but {type(request).__name__}")
        return
    resource_logs = request.get("resourceLogs", request.get("resource_logs"))
    if resource_logs is None:
        if not any(str(k).startswith("resource") for k in request):
            verifier.add_unreadable(source, line, "not an OTLP logs request (no resourceLogs)")
        return  # spans or metrics in the same file: not ours to check
    if not isinstance(resource_logs, list):
        verifier.add_unreadable(source, line, "resourceLogs is not a JSON array")
        return
    for rl in resource_logs:
        if not isinstance(rl, dict):
            verifier.add_unreadable(source, line, "a resourceLogs entry is not a JSON object")
            continue
        resource = _json_resource_integrity(rl.get("resource"))
        scope_logs = rl.get("scopeLogs", rl.get("scope_logs")) or []
        if not isinstance(scope_logs, list):
            verifier.add_unreadable(source, line, "scopeLogs is not a JSON array")
            continue
        for sl in scope_logs:
            records = sl.get("logRecords", sl.get("log_records")) if isinstance(sl, dict) else None
            if not isinstance(records, list):
                if records is not None or not isinstance(sl, dict):
                    verifier.add_unreadable(source, line, "a scopeLogs entry has no logRecords array")
                continue
            for record in records:
                if isinstance(record, dict):
                    verifier.add_json(record, source, line, resource)
                else:
                    verifier.add_unreadable(source, line, "a log record is not a JSON object")


def _resource_integrity(resource_logs: ResourceLogs) -> tuple[str | None, str | None]:
    algorithm = certificate = None
    for kv in resource_logs.resource.attributes:
        if kv.key == RESOURCE_INTEGRITY_ALGORITHM:
            algorithm = kv.value.string_value
        elif kv.key == RESOURCE_INTEGRITY_CERTIFICATE:
            certificate = kv.value.string_value
    return algorithm, certificate


def _json_resource_integrity(resource: object) -> tuple[str | None, str | None] | None:
    attributes = resource.get("attributes") if isinstance(resource, dict) else None
    if not isinstance(attributes, list):
        return None
    found: dict[str, str] = {}
    for kv in attributes:
        if isinstance(kv, dict) and kv.get("key") in (
            RESOURCE_INTEGRITY_ALGORITHM,
            RESOURCE_INTEGRITY_CERTIFICATE,
        ):
            value = _json_value(kv.get("value"))
            if isinstance(value, str):
                found[kv["key"]] = value
    return found.get(RESOURCE_INTEGRITY_ALGORITHM), found.get(RESOURCE_INTEGRITY_CERTIFICATE)


def _count_files(directory: Path) -> int:
    try:
        return sum(1 for entry in directory.iterdir() if entry.is_file())
    except OSError:
        return 0


__all__ = [
    "AFTER_END",
    "BAD_SIGNATURE",
    "BROKEN_LINK",
    "CONFLICT",
    "DIGEST_MISMATCH",
    "GAP",
    "GENESIS_LINK",
    "HEAD_MISSING",
    "MODIFIED",
    "REDELIVERED",
    "REORDERED",
    "SEVERITY_NOTICE",
    "SEVERITY_PROBLEM",
    "SIGNATURES_NOT_CHECKED",
    "TORN",
    "UNCLOSED",
    "UNREADABLE",
    "UNSEQUENCED",
    "UNSIGNED",
    "ChainVerifier",
    "Finding",
    "ProgressCallback",
    "StreamSummary",
    "VerifyReport",
    "verify_archive",
    "verify_wal",
]
