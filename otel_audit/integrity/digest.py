"""Digest records: signed, periodic statements of a stream's chain head, so a cut tail has a bound."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otel_audit import config
from otel_audit.exceptions import ConfigError
from otel_audit.integrity.chain import ATTR_SEQUENCE_END, ATTR_SEQUENCE_NUMBER
from otel_audit.record import ATTR_RECORD_ID, AuditRecord, build_audit_log_record

_logger = logging.getLogger(__name__)

DIGEST_EVENT: Final = "audit.stream.digest"
DIGEST_ACTION: Final = "ATTEST"
DIGEST_PREFIX: Final = "audit.digest."
ATTR_DIGEST_HEAD_NUMBER: Final = "audit.digest.head.number"
"""int: the sequence number of the newest record this digest attests (always below its own)."""
ATTR_DIGEST_HEAD_HASH: Final = "audit.digest.head.hash"
"""string: that record's IntegrityHash, lowercase hex (the text its receipt carried)."""
ATTR_DIGEST_RECORDS: Final = "audit.digest.records"
"""int: records attested by this digest and not by the previous one (head number minus its head)."""
ATTR_DIGEST_PREVIOUS_NUMBER: Final = "audit.digest.previous.number"
"""int: the sequence number of the stream's previous digest record; absent on the first digest."""
ATTR_DIGEST_PREVIOUS_HASH: Final = "audit.digest.previous.hash"
"""string: the previous digest record's IntegrityHash; absent on the first digest."""
ATTR_DIGEST_EVERY_RECORDS: Final = "audit.digest.policy.every_records"
ATTR_DIGEST_EVERY_SECONDS: Final = "audit.digest.policy.every_seconds"

ENV_DIGEST: Final = config.OTEL_AUDIT_DIGEST
"""`records=N,seconds=T` (either may be left out), or `off`. Default: `records=1000,seconds=60`."""

DEFAULT_EVERY_RECORDS: Final = 1000
DEFAULT_EVERY_SECONDS: Final = 60.0


@dataclass(frozen=True, slots=True)
class DigestPolicy:
    """When a stream is due a digest: after `every_records` records or `every_seconds`, whichever first.

    None switches a trigger off; both None switches digests off. The time trigger fires on the
    first record persisted after the interval, or on `StreamDigester.poll()` from a timer for a
    stream that went quiet (a digest attests only records that exist, so an idle stream with
    nothing new gets none).
    """

    every_records: int | None = DEFAULT_EVERY_RECORDS
    every_seconds: float | None = DEFAULT_EVERY_SECONDS

    def __post_init__(self) -> None:
        if self.every_records is not None and (type(self.every_records) is not int or self.every_records < 1):
            raise ConfigError(
                f"digest every_records must be a positive int or None, got {self.every_records!r}"
            )
        if self.every_seconds is not None and not self.every_seconds > 0:
            raise ConfigError(f"digest every_seconds must be positive or None, got {self.every_seconds!r}")

    @property
    def enabled(self) -> bool:
        return self.every_records is not None or self.every_seconds is not None

    @classmethod
    def parse(cls, text: str) -> DigestPolicy:
        """Parse `records=1000,seconds=60`, `records=500`, `seconds=30` or `off`.

        Raises:
            ConfigError: naming the part that is wrong.
        """
        text = text.strip()
        if text.lower() in ("off", "none", "false", "0"):
            return cls(None, None)
        records: int | None = None
        seconds: float | None = None
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, value = part.partition("=")
            name = name.strip().lower()
            try:
                if sep and name == "records":
                    records = int(value)
                elif sep and name == "seconds":
                    seconds = float(value)
                else:
                    raise ValueError
            except ValueError:
                raise ConfigError(
                    f"{ENV_DIGEST}: {part!r} is not records=<int> or seconds=<number>"
                    " (example: records=1000,seconds=60, or off)"
                ) from None
        if records is None and seconds is None:
            raise ConfigError(
                f"{ENV_DIGEST}: {text!r} sets neither records= nor seconds=; use off to disable"
            )
        return cls(records, seconds)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DigestPolicy:
        """The policy in OTEL_AUDIT_DIGEST, or the default (1000 records / 60 s) when unset."""
        raw = (os.environ if environ is None else environ).get(ENV_DIGEST)
        return cls() if raw is None or not raw.strip() else cls.parse(raw)


@dataclass(frozen=True, slots=True)
class _Attested:
    number: int
    hash_text: str


class StreamDigester:
    """Decides when one stream is due a digest and builds the digest record. Thread-safe, no I/O.

    Call `after_persist` after every record of the stream is persisted, the digests included:
    it returns a digest AuditRecord when one is due, which the caller seals into the same chain
    and persists like any record, then passes back to `after_persist`. At most one digest is
    outstanding; if persisting it fails, call `abandon` (or the next one is built once a
    further `every_records` records or `every_seconds` went by).
    """

    def __init__(self, policy: DigestPolicy, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._lock = threading.Lock()
        self._head: _Attested | None = None  # newest persisted record (not a digest)
        self._attested = 0  # head number attested by the last persisted digest
        self._last_digest: _Attested | None = None
        self._last_time = clock()
        self._pending: tuple[str, int, float] | None = None  # (record id, head number, built at)
        self._closed = False  # an end record was persisted: nothing may follow it in the chain

    def after_persist(
        self, record: AuditRecord | LogRecord, integrity_hash: bytes | str
    ) -> AuditRecord | None:
        """Note a persisted, sealed record; return a digest record to seal and persist when one is due.

        Returns None once the stream's end record was persisted (a digest cannot follow it).

        Args:
            record: the record as sealed (it carries `audit.sequence.number`); unsealed records
                are ignored.
            integrity_hash: its IntegrityHash (raw 32 bytes as `seal` returns, or the receipt's hex).
        """
        number, end = _sequence_of(record)
        if number is None or not self.policy.enabled:
            return None
        hash_text = integrity_hash.hex() if isinstance(integrity_hash, bytes) else integrity_hash
        record_id = record.record_id if isinstance(record, AuditRecord) else _record_id(record)
        now = self._clock()
        with self._lock:
            if end:
                self._closed = True
            if self._closed:
                return None
            pending = self._pending
            if pending is not None and record_id == pending[0]:
                self._last_digest = _Attested(number, hash_text)
                self._attested = max(self._attested, pending[1])
                self._last_time = now
                self._pending = None
                return None
            if self._head is None or number > self._head.number:
                self._head = _Attested(number, hash_text)
            return self._due_digest(now)

    def poll(self) -> AuditRecord | None:
        """For a timer: a digest when `every_seconds` passed and records exist that none attests yet."""
        with self._lock:
            return None if self._closed else self._due_digest(self._clock())

    def abandon(self, digest: AuditRecord) -> None:
        """The digest `after_persist` returned was not persisted; the next call may build another."""
        with self._lock:
            if self._pending is not None and self._pending[0] == digest.record_id:
                self._pending = None

    def _due_digest(self, now: float) -> AuditRecord | None:
        head = self._head
        if head is None or head.number <= self._attested:
            return None
        policy = self.policy
        unattested = head.number - self._attested
        if self._pending is not None:
            # Outstanding: wait for it, unless it was evidently lost (persist failed, caller forgot
            # to abandon) for as long as it takes a new one to fall due.
            _, pending_head, built_at = self._pending
            lost = (
                policy.every_records is not None and head.number - pending_head >= policy.every_records
            ) or (policy.every_seconds is not None and now - built_at >= policy.every_seconds)
            if not lost:
                return None
            _logger.warning(
                "audit digest for record %d was never persisted; building a new one", pending_head
            )
        due = (policy.every_records is not None and unattested >= policy.every_records) or (
            policy.every_seconds is not None and now - self._last_time >= policy.every_seconds
        )
        if not due:
            return None
        digest = self._build(head, unattested)
        self._pending = (digest.record_id, head.number, now)
        return digest

    def _build(self, head: _Attested, unattested: int) -> AuditRecord:
        digest = build_audit_log_record(
            DIGEST_EVENT, actor_id="otel-audit", actor_type="system", action=DIGEST_ACTION, outcome="success"
        )
        digest.add_value(ATTR_DIGEST_HEAD_NUMBER, AnyValue(int_value=head.number))
        digest.add_string(ATTR_DIGEST_HEAD_HASH, head.hash_text)
        digest.add_value(ATTR_DIGEST_RECORDS, AnyValue(int_value=unattested))
        if self._last_digest is not None:
            digest.add_value(ATTR_DIGEST_PREVIOUS_NUMBER, AnyValue(int_value=self._last_digest.number))
            digest.add_string(ATTR_DIGEST_PREVIOUS_HASH, self._last_digest.hash_text)
        if self.policy.every_records is not None:
            digest.add_value(ATTR_DIGEST_EVERY_RECORDS, AnyValue(int_value=self.policy.every_records))
        if self.policy.every_seconds is not None:
            digest.add_value(
                ATTR_DIGEST_EVERY_SECONDS, AnyValue(double_value=float(self.policy.every_seconds))
            )
        return digest


def _sequence_of(record: AuditRecord | LogRecord) -> tuple[int | None, bool]:
    """(audit.sequence.number, audit.sequence.end) of a sealed record; (None, False) unsealed."""
    proto = record.proto if isinstance(record, AuditRecord) else record
    number, end = None, False
    for kv in reversed(proto.attributes):  # the chain appends its attributes last
        if kv.key == ATTR_SEQUENCE_NUMBER:
            number = int(kv.value.int_value)
        elif kv.key == ATTR_SEQUENCE_END:
            end = bool(kv.value.bool_value)
    return number, end


def _record_id(record: LogRecord) -> str | None:
    for kv in record.attributes:
        if kv.key == ATTR_RECORD_ID:
            return str(kv.value.string_value)
    return None


__all__ = [
    "ATTR_DIGEST_EVERY_RECORDS",
    "ATTR_DIGEST_EVERY_SECONDS",
    "ATTR_DIGEST_HEAD_HASH",
    "ATTR_DIGEST_HEAD_NUMBER",
    "ATTR_DIGEST_PREVIOUS_HASH",
    "ATTR_DIGEST_PREVIOUS_NUMBER",
    "ATTR_DIGEST_RECORDS",
    "DIGEST_ACTION",
    "DIGEST_EVENT",
    "DIGEST_PREFIX",
    "ENV_DIGEST",
    "DigestPolicy",
    "StreamDigester",
]
