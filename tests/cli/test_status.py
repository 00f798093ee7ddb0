"""`otel-audit status`: backlog numbers, the writer's pid, the sender's last error, and --max-age for checks."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from otel_audit.wal import WAL

from .conftest import RECORDS, Invoke


def test_status_reports_the_backlog(invoke: Invoke, wal_dir: Path) -> None:
    result = invoke("status", "--wal", wal_dir)
    assert result.exit_code == 0, result.output
    lines = {line.split("  ", 1)[0]: line.split("  ", 1)[1].strip() for line in result.stdout.splitlines()}
    assert lines["backlog"].startswith(f"{RECORDS} records, ")
    assert lines["first seq"] == "1" and lines["last seq"] == str(RECORDS) and lines["acked seq"] == "0"
    assert lines["writer"] == "not running (no process holds LOCK)"
    assert lines["last export error"] == "unknown"
    assert lines["dead letters"] == "0"


def test_status_json_after_an_ack(invoke: Invoke, wal_dir: Path) -> None:
    with WAL.open(wal_dir, durability="never", segment_bytes=4096) as wal:
        wal.ack(20)
    data = json.loads(invoke("status", "--wal", wal_dir, "--json").stdout)
    assert data["acked_seq"] == 20
    assert data["backlog_records"] == RECORDS - 20
    assert data["last_seq"] == RECORDS
    assert data["writer_running"] is False and data["lock_holder_pid"] is None
    assert data["sender"] is None
    assert data["oldest_unacked_age"] >= 0


def test_status_names_the_pid_of_a_running_writer(invoke: Invoke, wal_dir: Path) -> None:
    with WAL.open(wal_dir, durability="never"):
        data = json.loads(invoke("status", "--wal", wal_dir, "--json").stdout)
        text = invoke("status", "--wal", wal_dir).stdout
    assert data["lock_holder_pid"] == os.getpid() and data["writer_running"] is True
    assert f"running (pid {os.getpid()})" in text


def test_status_shows_the_senders_last_error_when_recorded(invoke: Invoke, wal_dir: Path) -> None:
    (wal_dir / "state").mkdir()
    (wal_dir / "state" / "sender.json").write_text(
        json.dumps(
            {"last_error": "UNAVAILABLE: connection refused", "last_error_time": "2026-04-02T06:07:00Z"}
        )
    )
    result = invoke("status", "--wal", wal_dir)
    assert "UNAVAILABLE: connection refused (at 2026-04-02T06:07:00Z)" in result.stdout


def test_max_age_exits_2_when_the_backlog_is_older(invoke: Invoke, wal_dir: Path) -> None:
    time.sleep(0.05)
    result = invoke("status", "--wal", wal_dir, "--max-age", "0.01")
    assert result.exit_code == 2
    assert "more than --max-age 0.01s" in result.stderr
    assert invoke("status", "--wal", wal_dir, "--max-age", "3600").exit_code == 0


def test_max_age_passes_when_everything_is_acked(invoke: Invoke, wal_dir: Path) -> None:
    with WAL.open(wal_dir, durability="never", segment_bytes=4096) as wal:
        wal.ack(RECORDS)
    result = invoke("status", "--wal", wal_dir, "--max-age", "0", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["backlog_records"] == 0


def test_status_of_an_archive_counts_records_and_torn_lines(invoke: Invoke, archive: Path) -> None:
    with open(archive, "a") as f:
        f.write('{"resourceLogs":[{"resource":{"attri')  # a collector killed mid-line
    data = json.loads(invoke("status", "--archive", archive, "--json").stdout)
    assert data["records"] == RECORDS and data["torn_lines"] == 1
    assert data["newest_time_unix_nano"] == 1_775_110_000_000_000_000 + RECORDS * 1_000_000_000


def test_max_age_on_an_archive_is_refused(invoke: Invoke, archive: Path) -> None:
    result = invoke("status", "--archive", archive, "--max-age", "5")
    assert result.exit_code == 2
    assert "--max-age applies to a WAL" in result.stderr
