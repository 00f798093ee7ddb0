"""WALLogRecordExporter: an SDK LogRecordExporter that returns SUCCESS only once records are in the WAL."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from otel_audit.config import resolve_config
from otel_audit.encoding import encode_context, encode_sdk_log_record
from otel_audit.pipeline import AuditPipeline, get_pipeline

_log = logging.getLogger("otel_audit.export")

# Resource and scope objects are long-lived and shared by every record of a provider; caching their
# context id by identity saves an encode + hash per record. Bounded, since a caller could mint many.
_CONTEXT_CACHE_MAX = 256

_RECORD_ID = "audit.record.id"
_LOG_RECORD_UID = "log.record.uid"


def ensure_audit_ids(record: LogRecord) -> None:
    """Give an audit record arriving through the SDK path its dedup key, if the caller did not.

    A record with any ``audit.*`` attribute is an audit record: it gets ``audit.record.id`` (a uuid4,
    or its ``log.record.uid``) and the ``log.record.uid`` mirror, so replays deduplicate. Plain log
    records pass through untouched: this exporter also carries ordinary logs.
    """
    is_audit = False
    record_id = uid = None
    for kv in record.attributes:
        key = kv.key
        if key.startswith("audit."):
            is_audit = True
            if key == _RECORD_ID:
                record_id = kv.value.string_value
        elif key == _LOG_RECORD_UID:
            uid = kv.value.string_value
    if not is_audit:
        return
    if not record_id:
        record_id = uid or str(uuid.uuid4())
        record.attributes.add(key=_RECORD_ID).value.string_value = record_id
    if not uid:
        record.attributes.add(key=_LOG_RECORD_UID).value.string_value = record_id


class WALLogRecordExporter(LogRecordExporter):
    """Persists each batch to the durable pipeline's WAL; a background sender ships it to the collector.

    ``export`` encodes each record to OTLP protobuf once, appends the batch in one write, and returns
    SUCCESS only when it is persisted per the durability mode, FAILURE otherwise: it never raises
    (the SDK's contract). Wrap it in :class:`DurableLogRecordProcessor`, never in the SDK's
    ``BatchLogRecordProcessor``: that one queues records in memory first, evicts the oldest when its
    queue is full and ignores FAILURE, so the WAL would never see what it dropped.

    Constructed with no arguments (the ``OTEL_LOGS_EXPORTER=otel_audit`` entry point), it reads its
    settings from ``OTEL_AUDIT_*`` and ``OTEL_EXPORTER_OTLP_*``; keyword arguments are those of
    :func:`otel_audit.configure`.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._config = resolve_config(**kwargs)
        self._pipeline: AuditPipeline = get_pipeline(self._config)
        self._contexts: dict[tuple[int, int], tuple[Resource, InstrumentationScope | None, bytes]] = {}
        self._shutdown = False

    @property
    def pipeline(self) -> AuditPipeline:
        return self._pipeline

    def _context_id(self, resource: Resource, scope: InstrumentationScope | None) -> bytes:
        key = (id(resource), id(scope))
        hit = self._contexts.get(key)
        # The identity check guards against a recycled id() after the original object died.
        if hit is not None and hit[0] is resource and hit[1] is scope:
            return hit[2]
        context_id = self._pipeline.context_id(encode_context(resource, scope))
        if len(self._contexts) >= _CONTEXT_CACHE_MAX:
            self._contexts.clear()
        self._contexts[key] = (resource, scope, context_id)
        return context_id

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        if self._shutdown:
            _log.warning("export() after shutdown: %d records not persisted", len(batch))
            self._pipeline.count_dropped(len(batch))
            return LogRecordExportResult.FAILURE
        try:
            # Consecutive records usually share resource and scope: append them in one WAL write.
            groups: list[tuple[bytes, list[bytes]]] = []
            for item in batch:
                context_id = self._context_id(item.resource, item.instrumentation_scope)
                proto = encode_sdk_log_record(item)
                ensure_audit_ids(proto)
                data = proto.SerializeToString()
                if groups and groups[-1][0] == context_id:
                    groups[-1][1].append(data)
                else:
                    groups.append((context_id, [data]))
            dropped = 0
            for context_id, records in groups:
                dropped += sum(1 for seq in self._pipeline.persist(context_id, records) if seq == 0)
        except Exception:  # noqa: BLE001 - the SDK contract: an exporter used by a processor must not raise
            _log.exception("could not persist %d log records to the audit WAL", len(batch))
            self._pipeline.count_dropped(len(batch))
            return LogRecordExportResult.FAILURE
        return LogRecordExportResult.FAILURE if dropped else LogRecordExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until everything persisted so far has been acknowledged by the collector."""
        return self._pipeline.force_flush(timeout_millis / 1000.0)

    def shutdown(self) -> None:
        if self._shutdown:
            return
        self._shutdown = True
        self._pipeline.shutdown()
