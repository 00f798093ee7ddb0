"""Markdown tables and the target checks, built from the results dictionary alone."""

from __future__ import annotations

import math
from typing import Any

from benchmarks.scenarios import find
from benchmarks.workload import MODES, SDK_BIG_QUEUE, SDK_DEFAULT, audit_record, audit_sdk

Row = dict[str, Any]

BASELINE = SDK_BIG_QUEUE
SECTIONS = ("burst", "latency", "disk", "backlog", "footprint", "collector")


def _n(value: float, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def _x(value: float, base: float) -> str:
    if not base or value is None or math.isnan(value) or math.isnan(base):
        return "n/a"
    return f"{value / base:.2f}x"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    align = ["---"] + ["---:"] * (len(header) - 1)
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(align) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def _label(variant: str) -> str:
    labels = {
        SDK_DEFAULT: "SDK BatchLogRecordProcessor, default queue (2048)",
        BASELINE: "SDK BatchLogRecordProcessor, queue >= N",
    }
    if variant in labels:
        return labels[variant]
    kind, _, mode = variant.rpartition("-")
    return f"otel-audit `{mode}`, " + (
        "`audit.record()`" if kind == "audit-record" else "SDK Logger + DurableLogRecordProcessor"
    )


def _burst_table(rows: list[Row], with_drops: bool = True) -> list[str]:
    base = find(rows, BASELINE)
    b = base or {"emit_rate": float("nan"), "e2e_rate": float("nan"), "rss_peak_mib": float("nan")}
    header = [
        "pipeline",
        "emit rec/s",
        "vs SDK",
        "end-to-end rec/s",
        "vs SDK",
        "dropped",
        "received",
        "peak RSS MiB",
        "vs SDK",
    ]
    body = [
        [
            _label(r["variant"]),
            _n(r["emit_rate"]),
            _x(r["emit_rate"], b["emit_rate"]),
            _n(r["e2e_rate"]),
            _x(r["e2e_rate"], b["e2e_rate"]),
            _n(r["dropped"]),
            _n(r["received"]),
            _n(r["rss_peak_mib"], 1),
            _x(r["rss_peak_mib"], b["rss_peak_mib"]),
        ]
        for r in rows
    ]
    return _table(header, body)


def _latency_table(rows: list[Row]) -> list[str]:
    base = find(rows, BASELINE)
    b = base["latency_us"] if base else {"p50": float("nan"), "p99": float("nan")}
    header = ["pipeline", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "p50 vs SDK", "p99 vs SDK"]
    body = []
    for r in rows:
        lat = r["latency_us"]
        body.append(
            [
                _label(r["variant"]),
                _n(lat["p50"], 1),
                _n(lat["p99"], 1),
                _n(lat["p999"], 1),
                _n(lat["max"], 1),
                _x(lat["p50"], b["p50"]),
                _x(lat["p99"], b["p99"]),
            ]
        )
    return _table(header, body)


def _disk_table(disk: dict[str, Any], sdk_e2e: float) -> list[str]:
    raw1 = disk["raw"][0]["rate"]
    header = [
        "what",
        "threads",
        "records/s persisted",
        "vs raw fsync/record",
        "end-to-end rec/s",
        "vs SDK end-to-end",
        "fsyncs/record",
        "p50 µs",
        "p99 µs",
    ]
    body = []
    for r in disk["raw"]:
        g = r["group"]
        body.append(
            [
                f"raw os.write + os.fsync, {g} record{'s' if g > 1 else ''} per fsync",
                "1",
                _n(r["rate"]),
                _x(r["rate"], raw1),
                "",
                "",
                f"{1 / g:.3f}",
                _n(r["fsync_us"]["p50"]),
                _n(r["fsync_us"]["p99"]),
            ]
        )
    for r in disk["wal"]:
        body.append(
            [
                "WAL alone (`WAL.append`), `always`",
                str(r["threads"]),
                _n(r["rate"]),
                _x(r["rate"], raw1),
                "",
                "",
                f"{r['fsyncs'] / max(1, r['records']):.3f}",
                _n(r["latency_us"]["p50"]),
                _n(r["latency_us"]["p99"]),
            ]
        )
    for r in disk["always"]:
        pipe = r["pipeline"]
        body.append(
            [
                _label(r["variant"]),
                str(r["threads"]),
                _n(r["emit_rate"]),
                _x(r["emit_rate"], raw1),
                _n(r["e2e_rate"]),
                _x(r["e2e_rate"], sdk_e2e),
                f"{pipe.get('fsyncs', 0) / max(1, pipe.get('appends', 1)):.3f}",
                _n(r["latency_us"]["p50"]),
                _n(r["latency_us"]["p99"]),
            ]
        )
    return _table(header, body)


def _backlog_table(r: Row, sdk_e2e: float) -> list[str]:
    header = [
        "records",
        "written in s",
        "receiver up → first record s",
        "drain s",
        "drain rec/s",
        "vs SDK end-to-end",
        "RSS after writing MiB",
        "peak RSS while draining MiB",
        "growth MiB",
    ]
    body = [
        [
            _n(r["records"]),
            _n(r["write_s"], 1),
            _n(r["reconnect_s"], 2),
            _n(r["drain_s"], 1),
            _n(r["drain_rate"]),
            _x(r["drain_rate"], sdk_e2e),
            _n(r["rss_written_mib"], 1),
            _n(r["rss_drain_peak_mib"], 1),
            _n(r["rss_growth_mib"], 1),
        ]
    ]
    return _table(header, body)


def _footprint_table(rows: list[Row]) -> list[str]:
    header = [
        "records of",
        "records",
        "WAL bytes/record",
        "allocated bytes/record",
        "OTLP request bytes/record",
        "WAL ÷ OTLP",
    ]
    body = []
    for r in rows:
        on_disk = bool(r["disk_bytes_per_record"])
        body.append(
            [
                _label(r["variant"]),
                _n(r["records"]),
                _n(r["disk_bytes_per_record"], 1) if on_disk else "(memory only)",
                _n(r["disk_allocated_per_record"], 1) if on_disk else "",
                _n(r["otlp_bytes_per_record"], 1),
                f"{r['ratio']:.2f}x" if on_disk else "",
            ]
        )
    return _table(header, body)


# -- targets -----------------------------------------------------------------------------------


def targets(results: dict[str, Any]) -> list[Row]:
    """Every target of issue #8 that this run measured: what, the figure, the bound, pass or miss."""
    s = results["scenarios"]
    out: list[Row] = []

    def add(name: str, value: float, bound: float, unit: str, ok: bool) -> None:
        out.append({"target": name, "value": value, "bound": bound, "unit": unit, "met": bool(ok)})

    burst = s.get("burst")
    if burst:
        sdk = find(burst, BASELINE)
        default = find(burst, SDK_DEFAULT)
        for variant in (audit_record("interval"), audit_sdk("interval")):
            row = find(burst, variant)
            if row and sdk:
                ratio = row["e2e_rate"] / sdk["e2e_rate"]
                add(f"{_label(variant)}: end-to-end vs SDK big queue (1)", ratio, 1.0, "x", ratio >= 1.0)
                add(
                    f"{_label(variant)}: records dropped (1; SDK default dropped {default['dropped'] if default else '?'})",
                    row["dropped"],
                    0,
                    "",
                    row["dropped"] == 0,
                )
    disk = s.get("disk")
    if disk and burst and find(burst, BASELINE):
        sdk_e2e = find(burst, BASELINE)["e2e_rate"]  # type: ignore[index]
        for variant in (audit_record("always"), audit_sdk("always")):
            row = find(disk["always"], variant, 8)
            if row:
                ratio = row["e2e_rate"] / sdk_e2e
                add(
                    f"{_label(variant)}, 8 threads: end-to-end vs SDK big queue (3)",
                    ratio,
                    0.7,
                    "x",
                    ratio >= 0.7,
                )
    lat = s.get("latency")
    if lat and find(lat, BASELINE):
        sdk_p99 = find(lat, BASELINE)["latency_us"]["p99"]  # type: ignore[index]
        for variant in (audit_record("interval"), audit_sdk("interval")):
            row = find(lat, variant)
            if row:
                ratio = row["latency_us"]["p99"] / sdk_p99
                add(f"{_label(variant)}: p99 of one call vs SDK emit p99 (2)", ratio, 2.0, "x", ratio <= 2.0)
    backlog = s.get("backlog")
    if backlog:
        add(
            "backlog drain: sender RSS growth (4)",
            backlog["rss_growth_mib"],
            100.0,
            "MiB",
            backlog["rss_growth_mib"] <= 100.0,
        )
        workload_received = backlog.get("received_workload", backlog["received"])
        add(
            "backlog drained completely (4)",
            workload_received,
            backlog["records"],
            "records",
            workload_received >= backlog["records"],
        )
    for row in s.get("footprint") or ():
        if row["disk_bytes_per_record"]:
            add(
                f"{_label(row['variant'])}: WAL bytes vs OTLP bytes per record (5)",
                row["ratio"],
                1.3,
                "x",
                row["ratio"] <= 1.3,
            )
    coll = s.get("collector")
    if coll and find(coll["rows"], BASELINE):
        sdk = find(coll["rows"], BASELINE)
        for variant in (audit_record("interval"), audit_sdk("interval")):
            row = find(coll["rows"], variant)
            if row and sdk:
                ratio = row["e2e_rate"] / sdk["e2e_rate"]
                add(
                    f"{_label(variant)}: end-to-end vs SDK big queue, real collector (6)",
                    ratio,
                    1.0,
                    "x",
                    ratio >= 1.0,
                )
    return out


def _targets_table(rows: list[Row]) -> list[str]:
    body = []
    for t in rows:
        op = ">=" if "vs SDK big queue" in t["target"] or t["unit"] == "records" else "<="
        if t["unit"] == "" and t["bound"] == 0:
            op = "="
        digits = 2 if t["unit"] == "x" else (1 if t["unit"] == "MiB" else 0)
        body.append(
            [
                t["target"],
                f"{_n(t['value'], digits)}{t['unit'] if t['unit'] == 'x' else ''}",
                f"{op} {_n(t['bound'], digits)}{t['unit'] if t['unit'] != 'records' else ''}",
                "met" if t["met"] else "**missed**",
            ]
        )
    return _table(["target", "measured", "bound", ""], body)


def _notes(results: dict[str, Any]) -> list[str]:
    """Anything a reader of the tables should know: duplicates delivered, warnings the library logged."""
    s = results["scenarios"]
    rows: list[tuple[str, Row]] = []
    for name in ("burst", "latency", "collector"):
        data = s.get(name)
        rows += [(name, r) for r in (data["rows"] if isinstance(data, dict) else data or [])]
    if s.get("disk"):
        rows += [("disk", r) for r in s["disk"]["always"]]
    if s.get("backlog"):
        rows.append(("backlog", s["backlog"]))
    notes = []
    for scenario, r in rows:
        warnings = r.get("library_warnings") or {}
        extra = []
        if r.get("duplicates"):
            extra.append(f"{r['duplicates']} duplicate deliveries (at-least-once; dedup by `log.record.uid`)")
        if r.get("other_records"):
            extra.append(
                f"{r['other_records']} records of other events written by the library (stream digests) also arrived"
            )
        if warnings.get("count"):
            extra.append(f"otel_audit logged {warnings['count']} warning(s), first: {warnings['first']!r}")
        if extra:
            notes.append(
                f"- {scenario}, {_label(r['variant'])}, {r.get('threads', 1)} thread(s): " + "; ".join(extra)
            )
    for error in results.get("errors") or ():
        notes.append(f"- error: {error.splitlines()[0]}")
    return notes


def render(results: dict[str, Any]) -> str:
    """The whole report as Markdown: one table per scenario that ran, then the targets."""
    s = results["scenarios"]
    p = results["profile"]
    lines: list[str] = []
    m = results["machine"]
    lines += [
        f"Profile `{p['name']}`, {results['started']}, revision {results.get('revision', 'unknown')}, runs per variant {results.get('repeat', 1)}, {m['cpus']} CPUs, load average {m['load_before']} before / {m['load_after']} after, "
        f"WAL directory on {m['fs_type']}, Python {m['python']}, SDK {m['sdk']}.",
        "",
    ]
    burst = s.get("burst")
    sdk_e2e = find(burst, BASELINE)["e2e_rate"] if burst and find(burst, BASELINE) else float("nan")  # type: ignore[index]
    if burst:
        lines += [
            f"### 1. Burst: {p['burst_records']:,} records from {p['burst_threads']} threads, Python receiver in its own process",
            "",
            *_burst_table(burst),
            "",
        ]
    if s.get("latency"):
        lines += [
            f"### 2. Latency of one call: {p['latency_records']:,} calls from 1 thread while the exporter/sender works",
            "",
            *_latency_table(s["latency"]),
            "",
        ]
    if s.get("disk"):
        lines += [
            f"### 3. The physical limit: {s['disk']['record_bytes']}-byte records, fsync per record or per group",
            "",
            *_disk_table(s["disk"], sdk_e2e),
            "",
        ]
    if s.get("backlog"):
        lines += [
            "### 4. Backlog: written with the receiver down, then it comes up",
            "",
            *_backlog_table(s["backlog"], sdk_e2e),
            "",
        ]
    if s.get("footprint"):
        lines += [
            "### 5. Footprint: bytes on disk per record against the OTLP encoding",
            "",
            *_footprint_table(s["footprint"]),
            "",
        ]
    if s.get("collector"):
        lines += [
            f"### 6. Against the real collector: {p['burst_records']:,} records from {p['burst_threads']} threads",
            "",
            *_burst_table(s["collector"]["rows"]),
            "",
        ]
    lines += ["### Targets", "", *_targets_table(results.get("targets", [])), ""]
    notes = _notes(results)
    if notes:
        lines += ["### Notes", "", *notes, ""]
    return "\n".join(lines)


__all__ = ["MODES", "SECTIONS", "render", "targets"]
