"""Child process: zero-code set-up from the environment only, then one log record through the SDK Logs API."""

from __future__ import annotations

import sys

from opentelemetry._logs import get_logger_provider
from opentelemetry.util._importlib_metadata import entry_points


def main() -> None:
    [configurator] = [ep for ep in entry_points(group="opentelemetry_configurator") if ep.name == "otel_audit"]
    configurator.load()().configure()
    provider = get_logger_provider()
    processors = provider._multi_log_record_processor._log_record_processors  # type: ignore[attr-defined]
    print("processors:", ",".join(type(p).__name__ for p in processors), flush=True)
    logger = provider.get_logger("billing")
    from opentelemetry._logs import LogRecord

    logger.emit(LogRecord(body="plain log line", attributes={"k": "v"}))
    logger.emit(LogRecord(event_name="config.change", attributes={"audit.actor.id": "ops", "audit.action": "UPDATE"}))
    ok = provider.force_flush(10_000)
    print("flushed:", ok, flush=True)
    provider.shutdown()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
