"""The pipeline's metrics through the OTel metrics API: the draft's five instruments and ours beside them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

_METER_NAME = "otel_audit"


class AuditMetrics:
    """Instruments for one pipeline, labelled by its WAL directory so several pipelines stay apart.

    Counters are bumped on the hot path (one ``add`` each); everything derivable from the WAL or the
    sender (depth, backlog bytes, age) is observed lazily from ``stats()`` at collection time instead,
    so it costs nothing per record.
    """

    def __init__(self, stats: Callable[[], Mapping[str, Any]], attributes: Mapping[str, str]) -> None:
        meter = metrics.get_meter(_METER_NAME)
        self._attrs = dict(attributes)
        self._stats = stats
        self.emitted = meter.create_counter(
            "audit.records.emitted", unit="{record}", description="Audit records persisted to the WAL."
        )
        self.exported = meter.create_counter(
            "audit.records.exported", unit="{record}", description="Audit records acknowledged by the collector."
        )
        self.dropped = meter.create_counter(
            "audit.records.dropped",
            unit="{record}",
            description="Audit records refused (not persisted): fail-open errors and drop_newest.",
        )
        self.dead_lettered = meter.create_counter(
            "otel_audit.records.dead_lettered",
            unit="{record}",
            description="Records the collector rejected permanently, moved to dead-letter/.",
        )
        self.retries = meter.create_counter(
            "otel_audit.export.retries", unit="{request}", description="Export attempts that failed and will be retried."
        )
        self.export_duration = meter.create_histogram(
            "audit.export.duration", unit="s", description="Duration of one export request."
        )
        self.fsync_duration = meter.create_histogram(
            "otel_audit.wal.fsync.duration", unit="s", description="Duration of a WAL fsync."
        )
        meter.create_observable_gauge(
            "audit.queue.depth",
            callbacks=[self._observe("backlog_records")],
            unit="{record}",
            description="Records persisted but not yet acknowledged by the collector.",
        )
        meter.create_observable_gauge(
            "otel_audit.wal.backlog.bytes",
            callbacks=[self._observe("backlog_bytes")],
            unit="By",
            description="Bytes of unacknowledged records in the WAL.",
        )
        meter.create_observable_gauge(
            "otel_audit.wal.oldest_unacked.age",
            callbacks=[self._observe("oldest_unacked_age")],
            unit="s",
            description="Age of the oldest record not yet acknowledged.",
        )

    @property
    def attributes(self) -> dict[str, str]:
        return self._attrs

    def _observe(self, key: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            value = self._stats().get(key)
            if value is None:
                return []
            return [Observation(value, self._attrs)]

        return callback
