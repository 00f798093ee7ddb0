"""The pipeline's metrics through the OTel metrics API: the draft's five instruments and ours beside them."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Observation

_METER_NAME = "otel_audit"

# Gauges observed from stats() at collection time: (instrument name, stats key, unit, description).
_GAUGES = (
    ("audit.queue.depth", "backlog_records", "{record}", "Records persisted but not yet acknowledged by the collector."),
    ("otel_audit.wal.backlog.bytes", "backlog_bytes", "By", "Bytes of unacknowledged records in the WAL."),
    ("otel_audit.wal.oldest_unacked.age", "oldest_unacked_age", "s", "Age of the oldest record not yet acknowledged."),
    ("otel_audit.wal.faults", "faults", "{fault}", "I/O faults the WAL met (write or fsync errors, files removed)."),
    ("otel_audit.wal.lost_frames", "lost_frames", "{frame}", "Unacknowledged frames lost to a file removed under the writer."),
)


class _Instruments:
    """One set of instruments per process, shared by every pipeline.

    The SDK returns the first instrument registered under a name and drops a later duplicate's
    callbacks, so per-pipeline gauges would observe only the first pipeline ever built. Instead the
    gauges iterate over the live pipelines, each observed with its own attributes.
    """

    def __init__(self) -> None:
        meter = metrics.get_meter(_METER_NAME)
        self.sources: weakref.WeakSet[AuditMetrics] = weakref.WeakSet()
        self.emitted: Counter = meter.create_counter(
            "audit.records.emitted", unit="{record}", description="Audit records persisted to the WAL."
        )
        self.exported: Counter = meter.create_counter(
            "audit.records.exported", unit="{record}", description="Audit records acknowledged by the collector."
        )
        self.dropped: Counter = meter.create_counter(
            "audit.records.dropped",
            unit="{record}",
            description="Audit records refused (not persisted): fail-open errors and drop_newest.",
        )
        self.dead_lettered: Counter = meter.create_counter(
            "otel_audit.records.dead_lettered",
            unit="{record}",
            description="Records the collector rejected permanently, moved to dead-letter/.",
        )
        self.retries: Counter = meter.create_counter(
            "otel_audit.export.retries", unit="{request}", description="Export attempts that failed and will be retried."
        )
        self.export_duration: Histogram = meter.create_histogram(
            "audit.export.duration", unit="s", description="Duration of one export request."
        )
        for name, key, unit, description in _GAUGES:
            meter.create_observable_gauge(name, callbacks=[self._observe(key)], unit=unit, description=description)

    def _observe(self, key: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            out = []
            for source in list(self.sources):
                value = source.stats().get(key)
                if value is not None:
                    out.append(Observation(value, source.attributes))
            return out

        return callback


_instruments: _Instruments | None = None
_instruments_lock = threading.Lock()


def _shared() -> _Instruments:
    global _instruments
    with _instruments_lock:
        if _instruments is None:
            _instruments = _Instruments()
        return _instruments


class AuditMetrics:
    """One pipeline's view of the shared instruments, labelled by its WAL directory.

    Counters are bumped on the hot path (one ``add`` each); everything derivable from the WAL or the
    sender (depth, backlog bytes, age, faults) is observed lazily from ``stats()`` at collection
    time, so it costs nothing per record.
    """

    def __init__(self, stats: Callable[[], Mapping[str, Any]], attributes: Mapping[str, str]) -> None:
        shared = _shared()
        self._attrs = dict(attributes)
        self._stats = stats
        self.emitted = shared.emitted
        self.exported = shared.exported
        self.dropped = shared.dropped
        self.dead_lettered = shared.dead_lettered
        self.retries = shared.retries
        self.export_duration = shared.export_duration
        shared.sources.add(self)
        self._shared = shared

    @property
    def attributes(self) -> dict[str, str]:
        return self._attrs

    def stats(self) -> Mapping[str, Any]:
        return self._stats()

    def close(self) -> None:
        """Stop observing this pipeline (its WAL is closed; stats() would read a dead directory)."""
        self._shared.sources.discard(self)
