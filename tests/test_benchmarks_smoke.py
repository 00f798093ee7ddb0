"""`python -m benchmarks` runs end to end at tiny sizes and reports every scenario, variant and target."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
# benchmarks/ is not an installed package: `make bench` runs it from the repository root.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.collector import ArchiveCounter  # noqa: E402
from benchmarks.workload import ALL_VARIANTS, MODES, SDK_BIG_QUEUE, audit_record, audit_sdk  # noqa: E402

SECTIONS = ("### 1.", "### 2.", "### 3.", "### 4.", "### 5.", "### 6.", "### Targets")


@pytest.fixture(scope="module")
def smoke(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--profile", "smoke", "--out", str(out), "--workdir", str(tmp)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"benchmark failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc, {**json.loads(out.read_text()), "_path": str(out)}


def test_smoke_run_prints_every_table(smoke: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
    """The printed report has one table per scenario and the targets, as results.json holds it."""
    proc, results = smoke
    for heading in SECTIONS:
        assert heading in proc.stdout, f"{heading!r} missing from the printed report"
    assert results["table"].strip() == proc.stdout.strip()
    assert not results["errors"]


def test_smoke_run_measures_every_variant(
    smoke: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    """Scenarios 1, 2 and 6 have a row per variant; 3 has every thread count; 5 both write paths."""
    _, results = smoke
    s = results["scenarios"]
    assert [r["variant"] for r in s["burst"]] == list(ALL_VARIANTS)
    assert [r["variant"] for r in s["latency"]] == list(ALL_VARIANTS)
    assert [r["variant"] for r in s["collector"]["rows"]] == [
        SDK_BIG_QUEUE,
        *map(audit_record, MODES),
        *map(audit_sdk, MODES),
    ]
    profile = results["profile"]
    assert sorted({r["threads"] for r in s["disk"]["always"]}) == sorted(profile["always_threads"])
    assert [r["group"] for r in s["disk"]["raw"]] == list(profile["raw_groups"])
    assert [r["variant"] for r in s["footprint"]][:2] == [audit_record("interval"), audit_sdk("interval")]
    assert s["backlog"]["received"] >= profile["backlog_records"]


def test_smoke_run_loses_no_audit_record(
    smoke: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    """Every otel-audit variant delivered every record to both receivers (duplicates allowed)."""
    _, results = smoke
    s = results["scenarios"]
    rows = s["burst"] + s["latency"] + s["collector"]["rows"] + s["disk"]["always"]
    for row in rows:
        if row["variant"].startswith("audit-"):
            assert row["dropped"] == 0 and row["received"] >= row["records"], row


def test_smoke_run_checks_every_target(
    smoke: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    """Each target of issue #8 appears with a measured value (met or not: tiny sizes prove nothing)."""
    _, results = smoke
    names = " ".join(t["target"] for t in results["targets"])
    for fragment in ("(1)", "(2)", "(3)", "(4)", "(5)", "(6)"):
        assert fragment in names, f"no target from scenario {fragment}"
    assert all(isinstance(t["value"], (int, float)) for t in results["targets"])


def test_render_reprints_a_run_without_running_it(
    smoke: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    """`--render results.json` prints the very table of that run (how docs are refreshed from a run)."""
    _, results = smoke
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--render", results["_path"]],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert proc.stdout.strip() == results["table"].strip()


def test_archive_counter_waits_for_a_line_to_be_complete(tmp_path: Path) -> None:
    """A request line the collector is still writing is counted once it is finished, not before."""
    archive = tmp_path / "audit.jsonl"
    line = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [{}, {}, {}]}]}]})
    archive.write_text(line + "\n" + line[:10])
    counter = ArchiveCounter(archive)
    assert counter.count_new()[0] == 3
    with open(archive, "a") as f:
        f.write(line[10:] + "\n")
    assert counter.count_new()[0] == 3
    assert counter.count_new()[0] == 0
