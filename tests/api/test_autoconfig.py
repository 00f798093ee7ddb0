"""Zero-code set-up: OTEL_LOGS_EXPORTER=otel_audit with our configurator gets the durable processor."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, InMemoryLogRecordExporter
from opentelemetry.util._importlib_metadata import entry_points

from otel_audit.autoconfig import processor_for
from otel_audit.export.processor import DurableLogRecordProcessor
from otel_audit.testing import FakeCollector

CHILD = Path(__file__).with_name("autoconfig_child.py")


def test_the_exporter_entry_point_names_our_exporter() -> None:
    [ep] = [ep for ep in entry_points(group="opentelemetry_logs_exporter") if ep.name == "otel_audit"]
    assert ep.value == "otel_audit.export.exporter:WALLogRecordExporter"


def test_other_exporters_keep_the_sdk_batch_processor() -> None:
    processor = processor_for(InMemoryLogRecordExporter())
    assert isinstance(processor, BatchLogRecordProcessor)
    processor.shutdown()


def test_environment_alone_builds_a_durable_pipeline_that_delivers(tmp_path: Path) -> None:
    with FakeCollector() as collector:
        env = {
            **os.environ,
            "OTEL_LOGS_EXPORTER": "otel_audit",
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_SERVICE_NAME": "billing",
            "OTEL_AUDIT_WAL_DIR": str(tmp_path / "wal"),
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": collector.grpc_endpoint,
        }
        done = subprocess.run(
            [sys.executable, str(CHILD)], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        assert f"processors: {DurableLogRecordProcessor.__name__}" in done.stdout
        assert collector.wait_for(2, 10)
        plain, audit = collector.records
        assert plain.body.string_value == "plain log line"
        assert {kv.key for kv in plain.attributes} == {"k"}
        attrs = {kv.key: kv.value.string_value for kv in audit.attributes}
        # An audit record on the SDK path gets its dedup key and the log.record.uid mirror.
        assert attrs["audit.record.id"] and attrs["log.record.uid"] == attrs["audit.record.id"]
