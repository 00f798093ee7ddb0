"""Zero-code set-up: a configurator that puts our exporter behind the durable processor, not the batch one."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk._configuration import _OTelSDKConfigurator
from opentelemetry.sdk._logs import LogRecordProcessor
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter

from otel_audit.export.exporter import WALLogRecordExporter
from otel_audit.export.processor import DurableLogRecordProcessor


def processor_for(exporter: LogRecordExporter, *args: Any, **kwargs: Any) -> LogRecordProcessor:
    """Our exporter gets the durable processor; any other exporter keeps the SDK's batch processor.

    The SDK's auto-configuration wraps every ``OTEL_LOGS_EXPORTER`` exporter in a
    BatchLogRecordProcessor, whose in-memory queue evicts the oldest record when full: with
    ``OTEL_LOGS_EXPORTER=otel_audit`` alone, records could be dropped before they reach the WAL.
    Selecting this configurator (``OTEL_PYTHON_CONFIGURATOR=otel_audit``) closes that trap.
    """
    if isinstance(exporter, WALLogRecordExporter):
        return DurableLogRecordProcessor(exporter)
    return BatchLogRecordProcessor(exporter, *args, **kwargs)


class AuditConfigurator(_OTelSDKConfigurator):
    """The SDK's own configurator, with the durable processor chosen for the audit exporter."""

    def _configure(self, **kwargs: Any) -> None:
        kwargs.setdefault("export_log_record_processor", processor_for)
        super()._configure(**kwargs)  # type: ignore[no-untyped-call]
