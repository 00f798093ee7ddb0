"""`python -m benchmarks [--full]`: run the scenarios of docs/performance.md, print the tables, write results.json."""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import report, scenarios
from benchmarks.profiles import PROFILES
from benchmarks.receiver import Receiver
from benchmarks.runner import ROOT
from benchmarks.workload import audit_record

DEFAULT_OUT = ROOT / "benchmarks" / "results.json"
DOCS = ROOT / "docs" / "performance.md"


def _markers(profile: str) -> tuple[str, str]:
    """The comments around a profile's table in docs/performance.md; --write-docs replaces what is between."""
    return (
        f"<!-- benchmark results, {profile} profile: start (written by `python -m benchmarks --write-docs`) -->",
        f"<!-- benchmark results, {profile} profile: end -->",
    )


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--full", action="store_true", help="the long profile (200k-record bursts, a 1M-record backlog)"
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), help="smoke, quick (default) or full")
    parser.add_argument(
        "--only", default="", help=f"comma-separated scenarios to run, of: {','.join(report.SECTIONS)}"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per burst variant, round-robin; the median is reported"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="where results.json goes (default: %(default)s)"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="parent of the scratch WAL directories (default: system temp)",
    )
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help=f"also replace the profile's results section of {DOCS.relative_to(ROOT)}",
    )
    parser.add_argument(
        "--render",
        type=Path,
        default=None,
        metavar="RESULTS_JSON",
        help="run nothing: print (and with --write-docs, publish) the tables of an earlier results.json",
    )
    args = parser.parse_args(argv)
    args.profile = args.profile or ("full" if args.full else "quick")
    args.only = [s for s in args.only.split(",") if s] or list(report.SECTIONS)
    unknown = set(args.only) - set(report.SECTIONS)
    if unknown:
        parser.error(f"unknown scenario(s) {sorted(unknown)}; known: {', '.join(report.SECTIONS)}")
    return args


def _fs_type(path: Path) -> str:
    best, kind = "", "unknown"
    with open("/proc/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) > 2 and str(path).startswith(fields[1]) and len(fields[1]) > len(best):
                best, kind = fields[1], fields[2]
    return kind


def _revision() -> str:
    """The commit measured, and whether the library's files differ from it; "unknown" outside git."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "otel_audit"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("OTEL_AUDIT_BENCH_REVISION", "unknown")
    return head + (" with uncommitted changes in otel_audit/" if dirty else "")


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    profile = PROFILES[args.profile]
    workdir = Path(tempfile.mkdtemp(prefix="otel-audit-bench-", dir=args.workdir))
    results: dict[str, Any] = {
        "profile": profile.as_dict(),
        "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m benchmarks " + " ".join(sys.argv[1:]),
        "repeat": args.repeat,
        "revision": _revision(),
        "machine": {
            "cpus": os.cpu_count(),
            "load_before": _load(),
            "kernel": platform.release(),
            "python": platform.python_version(),
            "sdk": importlib.metadata.version("opentelemetry-sdk"),
            "fs_type": _fs_type(workdir),
        },
        "scenarios": {},
    }
    errors: list[str] = []
    ctx = scenarios.Context(
        profile, workdir, repeat=args.repeat, log=lambda m: print(m, file=sys.stderr, flush=True)
    )
    s = results["scenarios"]

    def attempt(name: str, action: Any, wanted: bool | None = None) -> None:
        if not (name in args.only if wanted is None else wanted):
            return
        print(f"[{name}]", file=sys.stderr, flush=True)
        start = time.monotonic()
        try:
            s[name] = action()
        except Exception as exc:  # noqa: BLE001 - one broken scenario must not hide the others' results
            errors.append(f"{name}: {exc}")
            print(f"[{name}] FAILED: {exc}", file=sys.stderr, flush=True)
        results.setdefault("durations_s", {})[name] = round(time.monotonic() - start, 1)

    try:
        with Receiver() as receiver:
            attempt("burst", lambda: scenarios.burst(ctx, receiver))
            attempt("latency", lambda: scenarios.latency(ctx, receiver))
            attempt("disk", lambda: scenarios.disk(ctx, receiver))
        # Scenario 5 reads the WAL that scenario 4 filled.
        wanted = "backlog" in args.only or "footprint" in args.only
        attempt(
            "backlog",
            lambda: scenarios.backlog(ctx, audit_record("interval"), profile.backlog_records),
            wanted,
        )
        if "backlog" in s:
            sdk_row = scenarios.find(s.get("burst") or [], report.BASELINE)
            attempt("footprint", lambda: scenarios.footprint(ctx, s["backlog"], sdk_row))
        attempt("collector", lambda: scenarios.collector(ctx))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["machine"]["load_after"] = _load()
    results["targets"] = report.targets(results)
    results["errors"] = errors
    return results, errors


def _write_docs(table: str, profile: str) -> None:
    start_marker, end_marker = _markers(profile)
    text = DOCS.read_text()
    head, start, rest = text.partition(start_marker)
    _, end, tail = rest.partition(end_marker)
    if not start or not end:
        raise SystemExit(
            f"{DOCS} lacks the markers {start_marker!r} ... {end_marker!r}; add them where the table goes"
        )
    DOCS.write_text(f"{head}{start_marker}\n\n{table}\n{end_marker}{tail}")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.render is not None:
        results = json.loads(args.render.read_text())
        results["targets"] = report.targets(results)
        errors: list[str] = results.get("errors") or []
    else:
        results, errors = run(args)
    table = report.render(results)
    print(table)
    if args.render is None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**results, "table": table}, indent=1, allow_nan=True) + "\n")
        print(f"results written to {args.out}", file=sys.stderr)
    if args.write_docs:
        _write_docs(table, results["profile"]["name"])
        print(f"table written to {DOCS}", file=sys.stderr)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
