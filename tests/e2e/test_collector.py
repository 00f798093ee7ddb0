"""The real collector with collector-config.yaml: config validity, archive fidelity, restarts."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import LogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from .harness import Collector

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def _request(ids: list[str]) -> ExportLogsServiceRequest:
    """A minimal OTLP logs request, one record per id, built with the proto classes."""
    now = time.time_ns()
    records = [
        LogRecord(
            time_unix_nano=now,
            observed_time_unix_nano=now,
            event_name="test.event",
            attributes=[KeyValue(key="audit.record.id", value=AnyValue(string_value=i))],
        )
        for i in ids
    ]
    return ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=records)])])


def _send_acknowledged(collector: Collector, batches: int, per_batch: int) -> list[str]:
    """Send requests over raw gRPC; return the ids of those the collector acknowledged (OK)."""
    sent: list[str] = []
    with grpc.insecure_channel(collector.grpc_address) as channel:
        stub = LogsServiceStub(channel)  # type: ignore[no-untyped-call]
        for _ in range(batches):
            ids = [str(uuid.uuid4()) for _ in range(per_batch)]
            stub.Export(_request(ids), timeout=10)
            sent.extend(ids)
    return sent


def test_collector_config_passes_validate(collector_factory: Callable[..., Collector]) -> None:
    """`otelcol validate` accepts collector-config.yaml with our variables set, and with none set."""
    instance = collector_factory(start=False)
    command = [str(instance.binary), "validate", "--config", str(ROOT / "collector-config.yaml")]

    with_env = subprocess.run(
        command, env=instance.environment(), capture_output=True, text=True, timeout=60, check=False
    )
    defaults = subprocess.run(command, env={}, capture_output=True, text=True, timeout=60, check=False)

    assert with_env.returncode == 0, with_env.stderr
    assert defaults.returncode == 0, defaults.stderr


def test_validate_rejects_a_broken_config(
    collector_factory: Callable[..., Collector], tmp_path: Path
) -> None:
    """The validate check can fail: an unknown exporter name is refused."""
    instance = collector_factory(start=False)
    broken = tmp_path / "broken.yaml"
    broken.write_text((ROOT / "collector-config.yaml").read_text().replace("[file/audit]", "[otlp/nope]"))

    result = subprocess.run(
        [str(instance.binary), "validate", "--config", str(broken)],
        env=instance.environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode != 0
    assert "otlp/nope" in result.stderr


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_sdk_exporter_records_arrive_intact_in_the_archive(collector: Collector, protocol: str) -> None:
    """Records from the stock SDK exporters keep body, attributes, event name and trace context."""
    exporter: LogRecordExporter
    if protocol == "grpc":
        exporter = GrpcLogExporter(endpoint=collector.grpc_endpoint, insecure=True, timeout=10)
    else:
        exporter = HttpLogExporter(endpoint=collector.http_logs_url, timeout=10)
    provider = LoggerProvider(resource=Resource.create({"service.name": "e2e"}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = provider.get_logger("e2e.scope", "1.0")
    tracer = TracerProvider().get_tracer("e2e")
    expected: dict[str, tuple[int, str, str, int]] = {}
    for n in range(20):
        record_id = str(uuid.uuid4())
        with tracer.start_as_current_span(f"op-{n}") as span:
            timestamp = time.time_ns()
            logger.emit(
                timestamp=timestamp,
                body={"note": f"record {n}", "items": [1, 2.5, True]},
                attributes={
                    "audit.record.id": record_id,
                    "audit.action": "UPDATE",
                    "audit.sequence.number": 2**53 + n,
                    "user.roles": ("admin", "ops"),
                },
                event_name="config.change",
            )
            context = span.get_span_context()
            expected[record_id] = (n, f"{context.trace_id:032x}", f"{context.span_id:016x}", timestamp)
    provider.shutdown()

    records = collector.wait_for_records(20, timeout_s=15)

    assert sorted(r.record_id or "" for r in records) == sorted(expected)
    for record in records:
        n, trace_id, span_id, timestamp = expected[record.record_id or ""]
        assert record.attributes["audit.sequence.number"] == 2**53 + n
        assert (record.trace_id, record.span_id) == (trace_id, span_id)
        assert record.time_unix_nano == timestamp
        assert record.observed_time_unix_nano >= timestamp
        assert record.event_name == "config.change"
        assert record.body == {"note": f"record {n}", "items": [1, 2.5, True]}
        assert record.attributes["audit.action"] == "UPDATE"
        assert record.attributes["user.roles"] == ["admin", "ops"]
        assert record.resource["service.name"] == "e2e"
        assert (record.scope_name, record.scope_version) == ("e2e.scope", "1.0")
    assert collector.archive_stats().torn_lines == 0


def test_stop_and_restart_keep_ports_and_archive(collector: Collector) -> None:
    """A graceful stop closes the port; a restart listens on it again and appends to the archive."""
    first = _send_acknowledged(collector, batches=2, per_batch=5)

    assert collector.stop() == 0
    with (
        pytest.raises(grpc.RpcError) as refused,
        grpc.insecure_channel(collector.grpc_address) as channel,
    ):
        LogsServiceStub(channel).Export(  # type: ignore[no-untyped-call]
            _request(["x"]), timeout=2
        )
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

    collector.start()
    second = _send_acknowledged(collector, batches=2, per_batch=5)

    records = collector.wait_for_records(20, timeout_s=10)
    assert [r.record_id for r in records] == first + second
    assert collector.starts == 2


def test_sigkilled_collector_keeps_every_acknowledged_record(collector: Collector) -> None:
    """With rotation set the file exporter writes before acking: a SIGKILL right after loses nothing."""
    acknowledged = _send_acknowledged(collector, batches=30, per_batch=10)
    collector.kill()

    archived = [r.record_id for r in collector.records()]

    assert archived == acknowledged
    collector.start()
    more = _send_acknowledged(collector, batches=1, per_batch=3)
    assert [r.record_id for r in collector.wait_for_records(303, timeout_s=10)] == acknowledged + more


def test_two_collectors_run_side_by_side(collector_factory: Callable[..., Collector]) -> None:
    """Every listening port comes from the environment, so parallel collectors do not clash."""
    first, second = collector_factory(), collector_factory()
    ids_first = _send_acknowledged(first, 1, 2)
    ids_second = _send_acknowledged(second, 1, 3)

    assert [r.record_id for r in first.records()] == ids_first
    assert [r.record_id for r in second.records()] == ids_second
    assert len({first.grpc_port, second.grpc_port, first.health_port, second.health_port}) == 4
