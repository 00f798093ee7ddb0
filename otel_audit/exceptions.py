"""Every public error of otel-audit, so callers can catch one family and ask it, not parse messages."""

from __future__ import annotations


class OtelAuditError(Exception):
    """Base of every error raised by otel-audit."""


class ConfigError(OtelAuditError, ValueError):
    """A configuration value is wrong; raised at the boundary, before anything is written."""


class InvalidAuditRecordError(OtelAuditError, ValueError):
    """An audit record breaks the OTel audit data model (missing mandatory attribute, bad enum, bad type).

    Always raised, in every failure mode: a malformed audit record is a programming error,
    not an outage, and swallowing it would hide the bug from the caller.
    """


class WALError(OtelAuditError):
    """The write-ahead log could not do what was asked."""


class WALLockedError(WALError):
    """Another process holds the WAL directory's LOCK."""

    def __init__(self, message: str, *, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


class WALFullError(WALError):
    """The WAL reached max_bytes (or the disk is full) and the full policy refused the append."""


class WALCorruptionError(WALError):
    """Bytes on disk do not decode as a valid frame (bad magic, length or CRC)."""

    def __init__(self, message: str, *, segment: str | None = None, offset: int | None = None) -> None:
        super().__init__(message)
        self.segment = segment
        self.offset = offset


class WALFormatError(WALError):
    """The directory holds a WAL of an unknown format version."""


class AuditWriteError(OtelAuditError):
    """An audit record could not be persisted within the configured bound (fail-closed mode)."""

    def __init__(self, message: str, *, record_id: str | None = None) -> None:
        super().__init__(message)
        self.record_id = record_id


class AuditTimeoutError(OtelAuditError, TimeoutError):
    """wait="delivered" ran out of time; the record is persisted and will still be delivered."""

    def __init__(self, message: str, *, record_id: str | None = None) -> None:
        super().__init__(message)
        self.record_id = record_id


class ExportError(OtelAuditError):
    """A transport failed to deliver a request; `retryable` tells the sender what to do with it."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        status: str | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


class WALContextError(WALCorruptionError):
    """A record names a resource/scope context file that is missing or does not match its id.

    The records that refer to it cannot be rebuilt into a request; the sender moves them to
    dead-letter/ with this message instead of blocking the queue behind them.
    """

    def __init__(self, message: str, *, context_id: str, path: str) -> None:
        super().__init__(message)
        self.context_id = context_id
        self.path = path


__all__ = [
    "AuditTimeoutError",
    "AuditWriteError",
    "ConfigError",
    "ExportError",
    "InvalidAuditRecordError",
    "OtelAuditError",
    "WALContextError",
    "WALCorruptionError",
    "WALError",
    "WALFormatError",
    "WALFullError",
    "WALLockedError",
]


class WALRecordTooLargeError(WALError, ValueError):
    """A payload can never be appended, however long one waits: it exceeds the frame or max_bytes limit.

    Retrying is pointless; route the record to dead-letter or reject it to the caller.
    """


__all__ += ["WALRecordTooLargeError"]
