"""The real OpenTelemetry Collector as a benchmark receiver, started as tests/e2e/harness.py does."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.harness import Collector, CollectorError, resolve_binary

__all__ = ["ArchiveCounter", "Collector", "CollectorError", "resolve_binary"]


class ArchiveCounter:
    """Counts the log records the collector archived, reading only what was appended since last time.

    The collector answers an export only after its file exporter wrote the request, so the archive
    is what "received" means here. A full re-parse after each variant would grow with the run.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self._partial = b""

    def count_new(self, event_name: str | None = None) -> tuple[int, int]:
        """(records, bytes of OTLP/JSON) archived since the previous call; only ``event_name``'s if given."""
        if not self._path.exists():
            return 0, 0
        with open(self._path, "rb") as archive:
            archive.seek(self._offset)
            data = archive.read()
        self._offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()  # an unterminated last line is finished by the next write
        records = 0
        for line in lines:
            if line.strip():
                request = json.loads(line)
                for rl in request.get("resourceLogs", ()):
                    for sl in rl.get("scopeLogs", ()):
                        logs = sl.get("logRecords", ())
                        if event_name is None:
                            records += len(logs)
                        else:
                            records += sum(1 for lr in logs if lr.get("eventName") == event_name)
        return records, len(data) - len(self._partial)
