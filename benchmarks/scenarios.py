"""The six scenarios of issue #8: each runs its variants (fresh processes) and returns result rows."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import workload
from benchmarks.profiles import Profile
from benchmarks.receiver import Receiver
from benchmarks.runner import run_variant
from benchmarks.workload import MODES, SDK_BIG_QUEUE, SDK_DEFAULT, audit_record, audit_sdk

Row = dict[str, Any]

# Bytes written per record by the raw loops and the WAL-only run: about what a record() record
# takes on disk (frame header + payload; scenario 5 measures the real figure).
RAW_RECORD_BYTES = 720
# The backlog run lets the sender retry at most this often: with the default 30 s cap the drain
# would start up to 30 s after the receiver comes up, which measures the policy, not the drain.
BACKLOG_MAX_BACKOFF_S = 1.0


@dataclass
class Context:
    """What every scenario needs: sizes, a scratch directory, repetitions, a progress printer."""

    profile: Profile
    workdir: Path
    repeat: int = 1
    log: Callable[[str], None] = print
    _ids: Iterator[int] = field(default_factory=itertools.count)

    def run(self, spec: dict[str, Any]) -> dict[str, Any]:
        name = spec.get("variant", spec["kind"])
        spec = {**spec, "workdir": str(self.workdir / f"{next(self._ids):03d}-{name}")}
        spec.setdefault("flush_timeout", self.profile.flush_timeout_s)
        return run_variant(spec, timeout_s=self.profile.flush_timeout_s * 3 + 120)


# -- 1 and 2: bursts against the separate-process Python receiver ----------------------------


def _burst_row(result: dict[str, Any]) -> Row:
    """Rates from one burst run; end-to-end ends at the receiver's last arrival (its own clock)."""
    n = result["records"]
    received_stats = result["receiver"]
    all_records = received_stats["records"]
    # The workload's own records; the library may add others (stream digests every 1000 records).
    received = received_stats["events"].get(workload.EVENT_NAME, 0)
    e2e_s = (received_stats["last"] - result["start"]) if received else float("nan")
    return {
        "variant": result["variant"],
        "records": n,
        "threads": result["threads"],
        "emit_s": result["emit_s"],
        "emit_rate": n / result["emit_s"],
        "e2e_s": e2e_s,
        # Duplicates (at-least-once re-sends) are not throughput: count each record once.
        "e2e_rate": min(received, n) / e2e_s if received else 0.0,
        "received": received,
        "dropped": max(0, n - received),
        "duplicates": max(0, received - n),
        "other_records": all_records - received,
        "otlp_bytes_per_record": received_stats["bytes"] / all_records if all_records else 0.0,
        "rss_peak_mib": result["rss_peak_mib"],
        "latency_us": result["latency_us"],
        "pipeline": result["pipeline"],
        "library_warnings": result["library_warnings"],
    }


def _median_runs(runs: list[Row]) -> Row:
    """The run with the median end-to-end rate, carrying every run's rate for the record."""
    ordered = sorted(runs, key=lambda r: r["e2e_rate"])
    row = dict(ordered[(len(ordered) - 1) // 2])
    row["runs_e2e_rate"] = [r["e2e_rate"] for r in runs]
    row["runs_emit_rate"] = [r["emit_rate"] for r in runs]
    return row


def _bursts(
    ctx: Context, receiver: Receiver, variants: Iterable[str], records: int, threads: int, repeat: int
) -> list[Row]:
    variants = list(variants)
    runs: dict[str, list[Row]] = {v: [] for v in variants}
    # Round-robin over repetitions so a burst of load from elsewhere hits every variant alike.
    for _ in range(repeat):
        for variant in variants:
            receiver.reset()
            spec = {
                "kind": "burst",
                "variant": variant,
                "endpoint": receiver.endpoint,
                "control": receiver.control_url,
                "records": records,
                "threads": threads,
            }
            row = _burst_row(ctx.run(spec))
            ctx.log(
                f"  {variant:24} {threads:2} threads: emit {row['emit_rate']:>9,.0f}/s  "
                f"e2e {row['e2e_rate']:>9,.0f}/s  received {row['received']:,}"
            )
            runs[variant].append(row)
    return [_median_runs(runs[v]) for v in variants]


def burst(ctx: Context, receiver: Receiver) -> list[Row]:
    """Scenario 1: N records from 4 threads through every variant."""
    p = ctx.profile
    return _bursts(ctx, receiver, workload.ALL_VARIANTS, p.burst_records, p.burst_threads, ctx.repeat)


def latency(ctx: Context, receiver: Receiver) -> list[Row]:
    """Scenario 2: one thread emitting back to back while the pipeline's sender/exporter works."""
    p = ctx.profile
    return _bursts(ctx, receiver, workload.ALL_VARIANTS, p.latency_records, 1, ctx.repeat)


# -- 3: the physical limit ----------------------------------------------------------------------


def disk(ctx: Context, receiver: Receiver) -> dict[str, Any]:
    """Scenario 3: raw write+fsync per record and per group, the WAL alone, and `always` by thread count."""
    p = ctx.profile
    ctx.log("  raw os.write + os.fsync")
    raw = ctx.run(
        {
            "kind": "rawdisk",
            "record_bytes": RAW_RECORD_BYTES,
            "records": p.raw_records,
            "groups": list(p.raw_groups),
        }
    )
    ctx.log("  WAL alone, always")
    wal = ctx.run(
        {
            "kind": "walonly",
            "record_bytes": RAW_RECORD_BYTES,
            "records": p.always_records,
            "threads": list(p.always_threads),
        }
    )
    always: list[Row] = []
    for threads in p.always_threads:
        always += _bursts(
            ctx, receiver, (audit_record("always"), audit_sdk("always")), p.always_records, threads, 1
        )
    return {"raw": raw["rows"], "wal": wal["rows"], "always": always, "record_bytes": RAW_RECORD_BYTES}


# -- 4 and 5: backlog and footprint ------------------------------------------------------------


def _drain_rate(records: int, first: float | None, last: float | None, up: float) -> float:
    """Records per second over the transfer; from the receiver's start when one request carried it all."""
    if not records or first is None or last is None:
        return 0.0
    span = last - first if last > first else last - up
    return records / span if span > 0 else float("nan")


def _backlog_row(result: dict[str, Any]) -> Row:
    received = result["receiver"]
    n = result["records"]
    got = received["records"]
    # Records in the WAL: the workload's plus what the library adds (stream digests).
    stored = result["pipeline"].get("appends") or n
    return {
        "variant": result["variant"],
        "records": n,
        "write_s": result["write_s"],
        "write_rate": n / result["write_s"],
        # From the receiver coming up: the reconnect (sender backoff), then the transfer itself.
        "reconnect_s": (received["first"] - result["up"]) if got else float("nan"),
        "drain_s": (received["last"] - result["up"]) if got else float("nan"),
        "drain_rate": _drain_rate(got, received["first"], received["last"], result["up"]),
        "received": got,
        "received_workload": received["events"].get(workload.EVENT_NAME, 0),
        "stored": stored,
        "flushed": result["flushed"],
        "rss_before_mib": result["rss_before_mib"],
        "rss_written_mib": result["rss_written_mib"],
        "rss_drain_peak_mib": result["rss_drain_peak_mib"],
        "rss_growth_mib": result["rss_drain_peak_mib"] - result["rss_written_mib"],
        "disk_bytes_per_record": result["wal_file_bytes"] / stored,
        "disk_allocated_per_record": result["wal_allocated_bytes"] / stored,
        "otlp_bytes_per_record": received["bytes"] / received["records"] if received["records"] else 0.0,
        "pipeline": result["pipeline"],
        "library_warnings": result["library_warnings"],
    }


def backlog(ctx: Context, variant: str, records: int) -> Row:
    """Scenario 4: ``records`` persisted with no receiver, then one comes up and the WAL drains."""
    spec = {
        "kind": "backlog",
        "variant": variant,
        "records": records,
        "audit_options": {"retry_max_backoff": BACKLOG_MAX_BACKOFF_S},
    }
    row = _backlog_row(ctx.run(spec))
    ctx.log(
        f"  {variant:24} {records:,} records: drained in {row['drain_s']:.1f} s "
        f"({row['drain_rate']:,.0f}/s), RSS +{row['rss_growth_mib']:.1f} MiB"
    )
    return row


def footprint(ctx: Context, record_backlog: Row, sdk_baseline: Row | None) -> list[Row]:
    """Scenario 5: WAL bytes per record against the OTLP request bytes per record of the same records."""
    rows = [record_backlog, backlog(ctx, audit_sdk("interval"), ctx.profile.footprint_records)]
    out = [
        {
            "variant": r["variant"],
            "records": r["records"],
            "disk_bytes_per_record": r["disk_bytes_per_record"],
            "disk_allocated_per_record": r["disk_allocated_per_record"],
            "otlp_bytes_per_record": r["otlp_bytes_per_record"],
            "ratio": r["disk_bytes_per_record"] / r["otlp_bytes_per_record"]
            if r["otlp_bytes_per_record"]
            else float("nan"),
        }
        for r in rows
    ]
    if sdk_baseline is not None:
        out.append(
            {
                "variant": sdk_baseline["variant"],
                "records": sdk_baseline["received"],
                "disk_bytes_per_record": 0.0,
                "disk_allocated_per_record": 0.0,
                "otlp_bytes_per_record": sdk_baseline["otlp_bytes_per_record"],
                "ratio": float("nan"),
            }
        )
    return out


# -- 6: the real collector ---------------------------------------------------------------------


def collector(ctx: Context) -> dict[str, Any]:
    """Scenario 6: 1(b) and 1(c) against the real collector; "received" is what its archive holds.

    A fresh collector (ports, archive) per run: the archive of a full run would pass the 1 GiB
    rotation size of collector-config.yaml, and a big archive's page cache would tax later runs.
    """
    from benchmarks.collector import resolve_binary

    p = ctx.profile
    variants = [SDK_BIG_QUEUE, *map(audit_record, MODES), *map(audit_sdk, MODES)]
    binary = resolve_binary()
    runs: dict[str, list[Row]] = {v: [] for v in variants}
    for _ in range(ctx.repeat):
        for variant in variants:
            row = _collector_run(ctx, binary, variant, p.burst_records, p.burst_threads)
            ctx.log(
                f"  {variant:24} emit {row['emit_rate']:>9,.0f}/s  e2e {row['e2e_rate']:>9,.0f}/s  archived {row['received']:,}"
            )
            runs[variant].append(row)
    return {"binary": str(binary), "rows": [_median_runs(runs[v]) for v in variants]}


def _collector_run(ctx: Context, binary: Path, variant: str, records: int, threads: int) -> Row:
    from benchmarks.collector import ArchiveCounter, Collector

    workdir = Path(tempfile.mkdtemp(prefix="collector-", dir=ctx.workdir))
    instance = Collector(binary, workdir)
    instance.start()
    try:
        spec = {
            "kind": "burst",
            "variant": variant,
            "endpoint": instance.grpc_endpoint,
            "records": records,
            "threads": threads,
        }
        result = ctx.run(spec)
        counter = ArchiveCounter(instance.archive_path)
        received, json_bytes = counter.count_new(workload.EVENT_NAME)
        all_records, _ = ArchiveCounter(instance.archive_path).count_new()
    finally:
        instance.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    n = result["records"]
    return {
        "variant": variant,
        "records": n,
        "threads": result["threads"],
        "emit_s": result["emit_s"],
        "emit_rate": n / result["emit_s"],
        # The collector acknowledges only after archiving: a finished flush means archived.
        "e2e_s": result["flush_s"],
        "e2e_rate": min(received, n) / result["flush_s"] if received else 0.0,
        "received": received,
        "dropped": max(0, n - received),
        "duplicates": max(0, received - n),
        "other_records": all_records - received,
        "archive_json_bytes_per_record": json_bytes / all_records if all_records else 0.0,
        "rss_peak_mib": result["rss_peak_mib"],
        "latency_us": result["latency_us"],
        "pipeline": result["pipeline"],
        "library_warnings": result["library_warnings"],
    }


def find(rows: Iterable[Row], variant: str, threads: int | None = None) -> Row | None:
    for row in rows:
        if row["variant"] == variant and (threads is None or row.get("threads") == threads):
            return row
    return None


__all__ = ["SDK_DEFAULT", "Context", "backlog", "burst", "collector", "disk", "find", "footprint", "latency"]
