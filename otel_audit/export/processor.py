"""DurableLogRecordProcessor: persists in the emitting thread, so no in-memory queue can drop a record."""

from __future__ import annotations

import logging

from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult

_log = logging.getLogger("otel_audit.export")


class DurableLogRecordProcessor(LogRecordProcessor):
    """Hands every record to the exporter synchronously, in the thread that emitted it.

    With :class:`WALLogRecordExporter` the record is in the WAL when ``emit`` returns; the network is
    the background sender's job, so this costs one encode and one write, not a round trip. It never
    raises into the host (the SDK's processor contract): failures are logged and counted by the
    exporter. This is the processor the SDK's BatchLogRecordProcessor cannot be for audit data.
    """

    def __init__(self, exporter: LogRecordExporter) -> None:
        self._exporter = exporter
        self._shutdown = False

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        if self._shutdown:
            return
        try:
            result = self._exporter.export((log_record,))
        except Exception:  # noqa: BLE001 - never raise into the application
            _log.exception("audit exporter raised; the record was not persisted")
            return
        if result is not LogRecordExportResult.SUCCESS:
            _log.debug("audit exporter did not persist a record (result %s)", result)

    def shutdown(self) -> None:
        if self._shutdown:
            return
        self._shutdown = True
        try:
            self._exporter.shutdown()
        except Exception:  # noqa: BLE001
            _log.exception("audit exporter shutdown failed")

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            return self._exporter.force_flush(timeout_millis)
        except Exception:  # noqa: BLE001
            _log.exception("audit exporter force_flush failed")
            return False
