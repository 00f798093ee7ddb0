"""Durable audit logging for OpenTelemetry: a write-ahead log before export, replay after a crash."""

from otel_audit.api import Audit, AuditLogger, configure, get_audit, get_audit_logger
from otel_audit.exceptions import (
    AuditTimeoutError,
    AuditWriteError,
    ConfigError,
    ExportError,
    InvalidAuditRecordError,
    OtelAuditError,
    WALCorruptionError,
    WALError,
    WALFormatError,
    WALFullError,
    WALLockedError,
)
from otel_audit.export.exporter import WALLogRecordExporter
from otel_audit.export.processor import DurableLogRecordProcessor
from otel_audit.record import AuditReceipt
from otel_audit.shards import ShardRoot
from otel_audit.version import __version__

__all__ = [
    "Audit",
    "AuditLogger",
    "AuditReceipt",
    "AuditTimeoutError",
    "AuditWriteError",
    "ConfigError",
    "DurableLogRecordProcessor",
    "ExportError",
    "InvalidAuditRecordError",
    "OtelAuditError",
    "ShardRoot",
    "WALCorruptionError",
    "WALError",
    "WALFormatError",
    "WALFullError",
    "WALLockedError",
    "WALLogRecordExporter",
    "__version__",
    "configure",
    "get_audit",
    "get_audit_logger",
]
