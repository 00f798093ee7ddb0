"""WAL append throughput and latency per durability mode, beside a raw os.write+os.fsync loop."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from otel_audit.wal import WAL

PAYLOAD = b"p" * 256


def _percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def raw_write_fsync(directory: Path, count: int) -> tuple[float, list[float]]:
    """The floor: one os.write of a 284-byte frame-sized buffer plus os.fsync per record."""
    fd = os.open(directory / "raw.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    buf = b"h" * 28 + PAYLOAD
    lat = []
    start = time.perf_counter()
    for _ in range(count):
        t0 = time.perf_counter()
        os.write(fd, buf)
        os.fsync(fd)
        lat.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    os.close(fd)
    return count / elapsed, lat


def raw_write(directory: Path, count: int) -> tuple[float, list[float]]:
    """os.write alone (page cache), the cost of surviving SIGKILL but not power loss."""
    fd = os.open(directory / "raw2.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    buf = b"h" * 28 + PAYLOAD
    lat = []
    start = time.perf_counter()
    for _ in range(count):
        t0 = time.perf_counter()
        os.write(fd, buf)
        lat.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    os.close(fd)
    return count / elapsed, lat


def wal_appends(directory: Path, mode: str, threads: int, per_thread: int) -> tuple[float, list[float], dict]:
    wal = WAL.open(directory, durability=mode)
    lats: list[list[float]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def work(i: int) -> None:
        out = lats[i]
        barrier.wait()
        for _ in range(per_thread):
            t0 = time.perf_counter()
            wal.append(PAYLOAD)
            out.append(time.perf_counter() - t0)

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - start
    stats = wal.stats()
    wal.close()
    return threads * per_thread / elapsed, [x for lat in lats for x in lat], stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer records, for CI smoke runs")
    parser.add_argument(
        "--dir", default=None, help="parent directory for the test WALs (default: system temp)"
    )
    args = parser.parse_args()
    scale = 0.2 if args.quick else 1.0
    base = Path(tempfile.mkdtemp(prefix="otel-audit-wal-bench-", dir=args.dir))
    try:
        n_sync = int(3000 * scale)
        n_fast = int(50000 * scale)
        raw_rate, raw_lat = raw_write_fsync(base, n_sync)
        raw_w_rate, raw_w_lat = raw_write(base, n_fast)
        rows = []
        for mode in ("always", "interval", "never"):
            for threads in (1, 8):
                total = n_sync if mode == "always" else n_fast
                rate, lat, stats = wal_appends(
                    base / f"{mode}-{threads}", mode, threads, max(1, total // threads)
                )
                rows.append((mode, threads, rate, lat, stats))
        lat_sorted = sorted(raw_lat)
        print(f"WAL append benchmark, {len(PAYLOAD)}-byte payloads, directory {base}")
        print()
        print("| mode | threads | appends/s | p50 µs | p99 µs | fsyncs/append | vs raw write+fsync |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        print(
            f"| raw os.write+os.fsync | 1 | {raw_rate:,.0f} | {_percentile(lat_sorted, 0.5) * 1e6:.0f} "
            f"| {_percentile(lat_sorted, 0.99) * 1e6:.0f} | 1.00 | 1.00x |"
        )
        w_sorted = sorted(raw_w_lat)
        print(
            f"| raw os.write only | 1 | {raw_w_rate:,.0f} | {_percentile(w_sorted, 0.5) * 1e6:.1f} "
            f"| {_percentile(w_sorted, 0.99) * 1e6:.1f} | 0 | {raw_w_rate / raw_rate:.2f}x |"
        )
        for mode, threads, rate, lat, stats in rows:
            s = sorted(lat)
            print(
                f"| WAL {mode} | {threads} | {rate:,.0f} | {_percentile(s, 0.5) * 1e6:.1f} "
                f"| {_percentile(s, 0.99) * 1e6:.1f} | {stats['fsyncs'] / max(1, stats['appends']):.3f} "
                f"| {rate / raw_rate:.2f}x |"
            )
        last = rows[-1][4]
        print()
        print(
            f"bytes on disk per record: {last['bytes_on_disk'] / last['appends']:.1f} "
            f"for a {len(PAYLOAD)}-byte payload (28-byte frame header, 24-byte segment header)"
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
