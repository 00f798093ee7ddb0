"""One measurement in a fresh process: ``python -m benchmarks.variant '<json spec>'`` prints one JSON line.

A fresh process per variant keeps peak RSS, the SDK's global state and warmed caches from leaking
between variants. The process ends with ``os._exit`` right after reporting: no shutdown hooks, so
no stream-end record or shutdown flush lands in the receiver after the measurement.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks import workload
from benchmarks.measure import RssSampler, dir_bytes, peak_rss_mib, percentiles_us, rss_mib
from benchmarks.receiver import Receiver, fetch_stats


class LogCounter(logging.Handler):
    """Counts otel_audit's warnings and errors during a run (a retry, a sender restart) and keeps the first."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.first = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if not self.first:
            cause = (
                f" ({record.exc_info[0].__name__}: {record.exc_info[1]})"
                if record.exc_info and record.exc_info[1]
                else ""
            )
            self.first = (record.getMessage() + cause)[:400]

    def report(self) -> dict[str, Any]:
        return {"count": self.count, "first": self.first}


LOGS = LogCounter()

_WAL_STATS = (
    "appends",
    "fsyncs",
    "dropped",
    "bytes_on_disk",
    "backlog_records",
    "sender_retries",
    "sender_requests",
)


def burst(spec: dict[str, Any]) -> dict[str, Any]:
    """``records`` emitted by ``threads`` threads as fast as they go, then flushed to the receiver."""
    n, threads = int(spec["records"]), int(spec["threads"])
    pipeline = workload.build(
        spec["variant"],
        spec["endpoint"],
        Path(spec["workdir"]) / "wal",
        queue_size=max(n, 2048),
        audit_options=spec.get("audit_options"),
    )
    shares = [n // threads + (1 if t < n % threads else 0) for t in range(threads)]
    latencies: list[list[int]] = [[] for _ in range(threads)]
    errors: list[str] = []
    barrier = threading.Barrier(threads + 1)

    def work(t: int) -> None:
        emit, out, clock = pipeline.emit, latencies[t].append, time.perf_counter_ns
        first = sum(shares[:t])
        barrier.wait()
        try:
            for i in range(first, first + shares[t]):
                t0 = clock()
                emit(i)
                out(clock() - t0)
        except Exception as exc:  # noqa: BLE001 - reported, the run is then marked failed
            errors.append(f"{type(exc).__name__}: {exc}")

    pool = [threading.Thread(target=work, args=(t,), name=f"bench-emit-{t}") for t in range(threads)]
    for thread in pool:
        thread.start()
    rss_start = rss_mib()
    barrier.wait()
    start = time.monotonic()
    for thread in pool:
        thread.join()
    emitted = time.monotonic()
    flushed_ok = pipeline.flush(float(spec.get("flush_timeout", 600)))
    flushed = time.monotonic()
    receiver = fetch_stats(spec["control"]) if spec.get("control") else None
    stats = pipeline.stats()
    return {
        "kind": "burst",
        "variant": spec["variant"],
        "records": n,
        "threads": threads,
        "start": start,
        "emit_s": emitted - start,
        "flush_s": flushed - start,
        "flushed": flushed_ok,
        "latency_us": percentiles_us([x for lat in latencies for x in lat]),
        "rss_start_mib": rss_start,
        "rss_peak_mib": peak_rss_mib(),
        "pipeline": {k: stats[k] for k in _WAL_STATS if k in stats},
        "receiver": receiver,
        "errors": errors[:5],
        "library_warnings": LOGS.report(),
    }


def backlog(spec: dict[str, Any]) -> dict[str, Any]:
    """``records`` persisted while no receiver listens; then one comes up and the backlog drains."""
    n = int(spec["records"])
    port = _free_port()
    wal_dir = Path(spec["workdir"]) / "wal"
    pipeline = workload.build(
        spec["variant"], f"http://127.0.0.1:{port}", wal_dir, audit_options=spec.get("audit_options")
    )
    rss_before = rss_mib()
    start = time.monotonic()
    emit = pipeline.emit
    for i in range(n):
        emit(i)
    written = time.monotonic()
    stats = pipeline.stats()
    size, allocated = dir_bytes(wal_dir)
    rss_written = rss_mib()
    sampler = RssSampler()
    with Receiver(port) as receiver:
        up = time.monotonic()
        flushed_ok = pipeline.flush(float(spec.get("flush_timeout", 1800)))
        done = time.monotonic()
        received = receiver.stats()
    rss_peak = sampler.stop()
    return {
        "kind": "backlog",
        "variant": spec["variant"],
        "records": n,
        "write_s": written - start,
        "up": up,
        "flush_s": done - up,
        "flushed": flushed_ok,
        "wal_file_bytes": size,
        "wal_allocated_bytes": allocated,
        "pipeline": {k: stats[k] for k in _WAL_STATS if k in stats},
        "rss_before_mib": rss_before,
        "rss_written_mib": rss_written,
        "rss_drain_peak_mib": rss_peak,
        "rss_peak_mib": peak_rss_mib(),
        "receiver": received,
        "library_warnings": LOGS.report(),
    }


def rawdisk(spec: dict[str, Any]) -> dict[str, Any]:
    """The disk's own limit: ``os.write`` of a record-sized buffer, one ``os.fsync`` per ``group`` records."""
    size, count = int(spec["record_bytes"]), int(spec["records"])
    path = Path(spec["workdir"]) / "raw.bin"
    buf = os.urandom(size)
    rows = []
    for group in spec["groups"]:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        syncs = max(1, count // group)
        lat: list[int] = []
        start = time.perf_counter()
        for _ in range(syncs):
            t0 = time.perf_counter_ns()
            for _ in range(group):
                os.write(fd, buf)
            os.fsync(fd)
            lat.append(time.perf_counter_ns() - t0)
        elapsed = time.perf_counter() - start
        os.close(fd)
        rows.append(
            {
                "group": group,
                "records": syncs * group,
                "rate": syncs * group / elapsed,
                "fsync_us": percentiles_us(lat),
            }
        )
    return {"kind": "rawdisk", "record_bytes": size, "rows": rows}


def walonly(spec: dict[str, Any]) -> dict[str, Any]:
    """The WAL alone in ``always`` mode (benchmarks/wal.py's loop): what group commit gives below the API."""
    from benchmarks import wal as wal_bench

    # wal_appends reads the module's PAYLOAD at call time: size it like the records under test.
    wal_bench.PAYLOAD = b"p" * int(spec["record_bytes"])
    rows = []
    for threads in spec["threads"]:
        directory = Path(spec["workdir"]) / f"wal-{threads}"
        per_thread = max(1, int(spec["records"]) // threads)
        rate, lat, stats = wal_bench.wal_appends(directory, "always", threads, per_thread)
        rows.append(
            {
                "threads": threads,
                "records": per_thread * threads,
                "rate": rate,
                "fsyncs": stats["fsyncs"],
                "latency_us": percentiles_us([int(x * 1e9) for x in lat]),
            }
        )
    return {"kind": "walonly", "record_bytes": int(spec["record_bytes"]), "rows": rows}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_KINDS = {"burst": burst, "backlog": backlog, "rawdisk": rawdisk, "walonly": walonly}


def main() -> None:
    spec = json.loads(sys.argv[1])
    # The SDK warns once per dropped record ("Queue full"); drops are counted at the receiver instead.
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("otel_audit").addHandler(LOGS)
    workdir = Path(spec["workdir"])
    workdir.mkdir(parents=True, exist_ok=True)
    code = 0
    try:
        result = _KINDS[spec["kind"]](spec)
    except Exception as exc:  # noqa: BLE001 - the orchestrator reports it with the variant's name
        logging.getLogger("benchmarks").exception("variant %s failed", spec.get("variant", spec["kind"]))
        result = {"kind": spec["kind"], "error": f"{type(exc).__name__}: {exc}"}
        code = 1
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    shutil.rmtree(workdir, ignore_errors=True)
    os._exit(code)


if __name__ == "__main__":
    main()
