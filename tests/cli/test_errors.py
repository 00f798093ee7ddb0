"""Bad input never shows a traceback: one `error:` line on stderr and a non-zero exit status."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .builders import Spec, request_line
from .conftest import RECORDS, Invoke

CLI = str(Path(sys.executable).with_name("otel-audit"))


def assert_one_line_error(result_stderr: str, fragment: str) -> None:
    assert result_stderr.startswith("error: "), result_stderr
    assert result_stderr.count("\n") == 1, result_stderr
    assert fragment in result_stderr
    assert "Traceback" not in result_stderr


@pytest.mark.parametrize(
    "command", [["list"], ["get", "1"], ["tail"], ["export"], ["status"], ["dead-letter", "list"]]
)
def test_unknown_wal_directory(invoke: Invoke, tmp_path: Path, command: list[str]) -> None:
    result = invoke(*command, "--wal", tmp_path / "missing")
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "does not exist")


def test_a_directory_that_is_not_a_wal(invoke: Invoke, tmp_path: Path) -> None:
    result = invoke("list", "--wal", tmp_path)
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "is not an otel-audit WAL (no segments/ inside)")


def test_a_file_given_as_wal(invoke: Invoke, archive: Path) -> None:
    result = invoke("list", "--wal", archive)
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "is not a directory")


def test_no_source_at_all(invoke: Invoke) -> None:
    result = invoke("list")
    assert result.exit_code == 2
    assert_one_line_error(result.stderr, "give --wal DIR or --archive FILE")


def test_corrupt_frame_inside_the_wal_names_segment_and_offset(invoke: Invoke, wal_dir: Path) -> None:
    segment = sorted((wal_dir / "segments").glob("*.wal"))[1]
    data = bytearray(segment.read_bytes())
    data[24 + 40] ^= 0xFF  # inside the first frame's payload: its CRC no longer matches
    segment.write_bytes(bytes(data))
    result = invoke("export", "--wal", wal_dir)
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, f"damaged frame in '{segment}' at position 24")
    # Pages that do not touch the damaged segment still work.
    assert invoke("list", "--wal", wal_dir, "-n", "3").exit_code == 0


def test_missing_context_file_is_a_clear_error(invoke: Invoke, wal_dir: Path) -> None:
    for blob in (wal_dir / "contexts").iterdir():
        blob.unlink()
    result = invoke("get", "--wal", wal_dir, "5")
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "is missing")


def test_a_torn_archive_line_is_skipped_with_a_warning(invoke: Invoke, archive: Path) -> None:
    torn = request_line([Spec(51)])
    with open(archive, "a") as f:
        f.write(torn[: len(torn) // 2] + "\n")  # the collector was killed mid-write, then restarted
        f.write(request_line([Spec(52)]))
    result = invoke("list", "--archive", archive, "-n", "2")
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == [str(RECORDS + 1), str(RECORDS)]
    assert "warning: skipped 1 torn line(s) in the archive" in result.stderr
    record = invoke("get", "--archive", archive, Spec(52).record_id, "--json").stdout
    assert f'"seq": {RECORDS + 1}' in record


def test_an_archive_path_that_is_a_directory(invoke: Invoke, tmp_path: Path) -> None:
    result = invoke("list", "--archive", tmp_path)
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "is a directory")


def test_errors_in_a_real_process_have_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [CLI, "list", "--wal", str(tmp_path / "nope"), "--since", "2h"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert_one_line_error(proc.stderr, "does not exist")
    proc = subprocess.run(
        [CLI, "list", "--wal", str(tmp_path), "--until", "3 fortnights"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert_one_line_error(proc.stderr, "--until: '3 fortnights' is not a time")
