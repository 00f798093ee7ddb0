"""The pipelines under test, each behind one emit(i) call, all emitting the same audit record content."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EVENT_NAME = "user.login.success"
SERVICE_NAME = "otel-audit-bench"

# The variants every scenario knows. "sdk-*" are the baselines: the SDK's BatchLogRecordProcessor
# with the OTLP gRPC exporter. "audit-record-<mode>" is otel_audit's record(); "audit-sdk-<mode>"
# is the SDK's Logger with DurableLogRecordProcessor(WALLogRecordExporter(...)).
MODES = ("never", "interval", "always")
SDK_DEFAULT = "sdk-default"
SDK_BIG_QUEUE = "sdk-bigqueue"


def audit_record(mode: str) -> str:
    return f"audit-record-{mode}"


def audit_sdk(mode: str) -> str:
    return f"audit-sdk-{mode}"


ALL_VARIANTS = (SDK_DEFAULT, SDK_BIG_QUEUE, *map(audit_record, MODES), *map(audit_sdk, MODES))


def attributes(i: int, record_id: str) -> dict[str, str]:
    """The design's 10 attributes: the draft's mandatory ones, target, source, and the dedup ids."""
    return {
        "audit.record.id": record_id,
        "log.record.uid": record_id,
        "audit.actor.id": f"user-{i % 1000}",
        "audit.actor.type": "user",
        "audit.action": "LOGIN",
        "audit.outcome": "success",
        "audit.target.type": "http.endpoint",
        "audit.target.id": "/api/session",
        "audit.source.id": "203.0.113.42",
        "audit.source.type": "ipv4",
    }


@dataclass
class Pipeline:
    """One pipeline under test. ``emit(i)`` sends record i; ``flush`` waits for the receiver's acks."""

    name: str
    emit: Callable[[int], object]
    flush: Callable[[float], bool]
    stats: Callable[[], dict[str, Any]]


def build(
    variant: str,
    endpoint: str,
    wal_dir: Path,
    *,
    queue_size: int = 0,
    audit_options: dict[str, Any] | None = None,
) -> Pipeline:
    """Build ``variant`` exporting to ``endpoint`` (gRPC, plaintext); WALs go under ``wal_dir``."""
    if variant in (SDK_DEFAULT, SDK_BIG_QUEUE):
        return _sdk_batch(variant, endpoint, queue_size if variant == SDK_BIG_QUEUE else 0)
    kind, _, mode = variant.rpartition("-")
    if mode not in MODES or kind not in ("audit-record", "audit-sdk"):
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(ALL_VARIANTS)}")
    options = {
        "service_name": SERVICE_NAME,
        "wal_dir": wal_dir,
        "endpoint": endpoint,
        "protocol": "grpc",
        "durability": mode,
        **(audit_options or {}),
    }
    if kind == "audit-record":
        return _audit_record(variant, options)
    return _audit_sdk(variant, options)


def _sdk_logger(processor: Any) -> Any:
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk.resources import Resource

    provider = LoggerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    provider.add_log_record_processor(processor)
    return provider, provider.get_logger("otel-audit-bench")


def _emit_sdk(logger: Any) -> Callable[[int], object]:
    emit = logger.emit

    def one(i: int) -> None:
        emit(timestamp=time.time_ns(), event_name=EVENT_NAME, attributes=attributes(i, str(uuid.uuid4())))

    return one


def _sdk_batch(name: str, endpoint: str, queue_size: int) -> Pipeline:
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    exporter = OTLPLogExporter(endpoint=endpoint, insecure=True)
    processor = BatchLogRecordProcessor(exporter, max_queue_size=queue_size or None)
    provider, logger = _sdk_logger(processor)

    def flush(timeout: float) -> bool:
        return bool(provider.force_flush(int(timeout * 1000)))

    return Pipeline(name, _emit_sdk(logger), flush, dict)


def _audit_record(name: str, options: dict[str, Any]) -> Pipeline:
    import otel_audit

    audit = otel_audit.configure(**options)
    record = audit.record

    def one(i: int) -> object:
        return record(
            EVENT_NAME,
            actor_id=f"user-{i % 1000}",
            actor_type="user",
            action="LOGIN",
            outcome="success",
            target_type="http.endpoint",
            target_id="/api/session",
            source_id="203.0.113.42",
            source_type="ipv4",
        )

    return Pipeline(name, one, audit.force_flush, audit.stats)


def _audit_sdk(name: str, options: dict[str, Any]) -> Pipeline:
    import otel_audit

    exporter = otel_audit.WALLogRecordExporter(**options)
    provider, logger = _sdk_logger(otel_audit.DurableLogRecordProcessor(exporter))
    pipeline = exporter.pipeline
    return Pipeline(name, _emit_sdk(logger), pipeline.force_flush, pipeline.stats)
