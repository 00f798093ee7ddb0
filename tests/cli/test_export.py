"""`otel-audit export`: every record oldest first as JSON Lines or CSV, to stdout or a file."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

from .builders import Spec
from .conftest import RECORDS, Invoke

CLI = str(Path(sys.executable).with_name("otel-audit"))


def test_export_jsonl_streams_every_record_oldest_first(invoke: Invoke, source_args: list[str]) -> None:
    result = invoke("export", *source_args, "--format", "jsonl")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["seq"] for r in rows] == list(range(1, RECORDS + 1))
    assert [r["record_id"] for r in rows] == [Spec(i).record_id for i in range(1, RECORDS + 1)]


def test_export_csv_has_the_audit_columns(invoke: Invoke, source_args: list[str]) -> None:
    result = invoke("export", *source_args, "--format", "csv", "--outcome", "failure")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [int(r["seq"]) for r in rows] == [i for i in range(1, RECORDS + 1) if i % 4 == 0]
    row = rows[0]
    spec = Spec(4)
    assert row["record_id"] == spec.record_id
    assert row["actor_id"] == spec.user and row["action"] == "LOGIN" and row["outcome"] == "failure"
    assert row["target_id"] == spec.target and row["trace_id"] == f"{spec.trace_id:032x}"
    assert row["time"] == "2026-04-02T06:06:44.000000000Z"
    assert json.loads(row["attributes"])["http.response.status_code"] == 401
    assert json.loads(row["resource"]) == {"service.name": "billing", "host.name": "web-1"}


def test_export_since_to_a_file(invoke: Invoke, source_args: list[str], tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    result = invoke("export", *source_args, "--since", "2026-04-02T06:07:20Z", "--output", out)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert f"exported 11 records to {out}" in result.stderr
    assert [json.loads(x)["seq"] for x in out.read_text().splitlines()] == list(range(40, 51))


def test_forced_progress_bar_draws_on_stderr_only(
    invoke: Invoke, source_args: list[str], tmp_path: Path
) -> None:
    out = tmp_path / "out.csv"
    result = invoke("export", *source_args, "--format", "csv", "-o", out, "--progress")
    assert result.exit_code == 0, result.output
    assert "exporting" in result.stderr and "records" in result.stderr
    assert len(out.read_text().splitlines()) == RECORDS + 1


def test_piped_export_in_a_real_process_has_no_progress_bar(wal_dir: Path) -> None:
    proc = subprocess.run(
        [CLI, "export", "--wal", str(wal_dir), "--format", "jsonl"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert len(proc.stdout.splitlines()) == RECORDS
