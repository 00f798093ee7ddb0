"""The card's shape: WALLogRecordExporter behind DurableLogRecordProcessor in a user's LoggerProvider."""

from __future__ import annotations

from pathlib import Path

from opentelemetry._logs import LogRecord
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.resources import Resource

import otel_audit
from otel_audit.testing import FakeCollector


def _provider(tmp_path: Path, collector: FakeCollector, **kwargs: object) -> tuple[LoggerProvider, otel_audit.WALLogRecordExporter]:
    provider = LoggerProvider(resource=Resource.create({"service.name": "billing"}))
    exporter = otel_audit.WALLogRecordExporter(
        wal_dir=tmp_path / "wal", endpoint=collector.grpc_endpoint, retry_max_backoff=0.2, **kwargs
    )
    provider.add_log_record_processor(otel_audit.DurableLogRecordProcessor(exporter))
    return provider, exporter


def test_records_from_sdk_loggers_are_persisted_then_delivered_in_order(tmp_path: Path) -> None:
    with FakeCollector() as collector:
        collector.down()
        provider, exporter = _provider(tmp_path, collector)
        logger = provider.get_logger("billing.payments", "1.2.0")
        for i in range(200):
            logger.emit(LogRecord(body=f"line {i}", attributes={"i": i}))
        # Persisted before emit returned: the backlog is on disk while the receiver is down.
        assert exporter.pipeline.stats()["backlog_records"] == 200
        collector.start()
        assert provider.force_flush(20_000)
        assert [r.body.string_value for r in collector.records] == [f"line {i}" for i in range(200)]
        [request] = collector.accepted[:1]
        scope = request.resource_logs[0].scope_logs[0].scope
        assert (scope.name, scope.version) == ("billing.payments", "1.2.0")
        provider.shutdown()


def test_the_processor_never_raises_into_the_host_when_the_wal_refuses(tmp_path: Path) -> None:
    with FakeCollector() as collector:
        collector.down()
        provider, exporter = _provider(
            tmp_path, collector, max_bytes=64 << 10, segment_bytes=16 << 10, full_policy="raise"
        )
        logger = provider.get_logger("billing")
        for _ in range(2_000):
            logger.emit(LogRecord(body="x" * 300))  # must not raise although the WAL fills up
        stats = exporter.pipeline.stats()
        assert 0 < stats["last_seq"] < 2_000
        provider.shutdown()
