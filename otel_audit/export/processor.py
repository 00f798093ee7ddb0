"""DurableLogRecordProcessor: persists in the emitting thread, so no in-memory queue can drop a record."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import cast

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, get_value, set_value
from opentelemetry.sdk._logs import LogRecordProcessor, ReadableLogRecord, ReadWriteLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult

_log = logging.getLogger("otel_audit.export")

# Our own diagnostics go through stdlib logging; if the host bridges logging into OTel, a warning
# logged while persisting would come back here. Past this depth we stop instead of looping.
_RECURSION_KEY = "otel_audit.processor.depth"
_MAX_DEPTH = 3


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
        depth = cast(int, get_value(_RECURSION_KEY) or 0)
        if depth >= _MAX_DEPTH:
            return
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True, set_value(_RECURSION_KEY, depth + 1)))
        try:
            # Our exporter encodes ReadWriteLogRecord directly; copying into a ReadableLogRecord
            # (as the SDK's SimpleLogRecordProcessor does) would cost a dataclass per record.
            result = self._exporter.export(cast(Sequence[ReadableLogRecord], (log_record,)))
            if result is not LogRecordExportResult.SUCCESS:
                _log.debug("audit exporter did not persist a record (result %s)", result)
        except Exception:  # noqa: BLE001 - never raise into the application
            _log.exception("audit exporter raised; the record was not persisted")
        finally:
            detach(token)

    def shutdown(self) -> None:
        if self._shutdown:
            return
        self._shutdown = True
        try:
            self._exporter.shutdown()  # type: ignore[no-untyped-call]
        except Exception:  # noqa: BLE001
            _log.exception("audit exporter shutdown failed")

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        try:
            return self._exporter.force_flush(timeout_millis)
        except Exception:  # noqa: BLE001
            _log.exception("audit exporter force_flush failed")
            return False
