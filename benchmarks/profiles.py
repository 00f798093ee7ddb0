"""Sizes of each profile: smoke (the test suite), quick (`make bench`) and full (`make bench ARGS=--full`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Profile:
    """Record counts per scenario; the scenario numbers are those of docs/performance.md."""

    name: str
    burst_records: int  # 1 and 6: records per variant, from burst_threads threads
    burst_threads: int
    latency_records: int  # 2: one emitting thread
    always_records: int  # 3: records per `always` variant
    always_threads: tuple[int, ...]
    raw_records: int  # 3: records per raw write+fsync loop
    raw_groups: tuple[int, ...]
    backlog_records: int  # 4 and 5 (record() path)
    footprint_records: int  # 5 (SDK path)
    flush_timeout_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


SMOKE = Profile("smoke", 400, 4, 200, 120, (1, 8, 32), 64, (1, 8, 32), 600, 300, 60.0)
QUICK = Profile("quick", 20_000, 4, 20_000, 4_000, (1, 8, 32), 2_000, (1, 8, 32), 50_000, 10_000, 300.0)
FULL = Profile("full", 200_000, 4, 100_000, 20_000, (1, 8, 32), 10_000, (1, 8, 32), 1_000_000, 50_000, 1800.0)

PROFILES = {p.name: p for p in (SMOKE, QUICK, FULL)}
