"""Small measuring tools shared by the variants: percentiles, RSS now and at peak, bytes on disk."""

from __future__ import annotations

import os
import resource
import threading
from pathlib import Path

_PAGE = os.sysconf("SC_PAGE_SIZE")


def percentiles_us(latencies_ns: list[int]) -> dict[str, float]:
    """p50, p99, p99.9 and max in microseconds (nearest-rank on the sorted sample)."""
    if not latencies_ns:
        return {"p50": 0.0, "p99": 0.0, "p999": 0.0, "max": 0.0}
    values = sorted(latencies_ns)
    n = len(values)

    def rank(q: float) -> float:
        return values[min(n - 1, int(q * n))] / 1000.0

    return {"p50": rank(0.5), "p99": rank(0.99), "p999": rank(0.999), "max": values[-1] / 1000.0}


def rss_mib() -> float:
    """Resident set size of this process now (from /proc, no dependency)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE / (1 << 20)


def peak_rss_mib() -> float:
    """The kernel's high-water mark of this process's RSS since exec (VmHWM).

    Not ``ru_maxrss``: Linux carries that across fork+exec, so a child started by a big parent
    reports the parent's size.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def dir_bytes(path: Path) -> tuple[int, int]:
    """(sum of file sizes, bytes allocated on disk) of every file under ``path``."""
    size = allocated = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                st = os.stat(os.path.join(root, name))
            except FileNotFoundError:
                continue
            size += st.st_size
            allocated += st.st_blocks * 512
    return size, allocated


class RssSampler:
    """Samples RSS every ``period_s`` in a thread; ``peak`` is the highest seen since start."""

    def __init__(self, period_s: float = 0.02) -> None:
        self.peak = rss_mib()
        self._period = period_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            self.peak = max(self.peak, rss_mib())

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mib())
        return self.peak
