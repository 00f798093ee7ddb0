"""Fixtures for the CLI tests: a real WAL, a collector-style archive, and a runner that invokes `otel-audit`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from otel_audit.cli.app import main

from .builders import write_archive, write_wal

RECORDS = 50

Invoke = Callable[..., Result]


@pytest.fixture
def wal_dir(tmp_path: Path) -> Path:
    """50 records (seq 1..50, record i = Spec(i)) over several small segments."""
    directory = tmp_path / "wal"
    write_wal(directory, range(1, RECORDS + 1), segment_bytes=4096, batch=3)
    assert len(list((directory / "segments").glob("*.wal"))) > 3
    return directory


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    """The same 50 records as the collector's file exporter would write them, 7 per request line."""
    path = tmp_path / "audit.jsonl"
    write_archive(path, list(range(1, RECORDS + 1)))
    return path


@pytest.fixture
def invoke(monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """Run `otel-audit ARGS...` in-process; stdout and stderr are kept apart."""
    monkeypatch.delenv("OTEL_AUDIT_WAL_DIR", raising=False)
    runner = CliRunner()

    def run(*args: str | Path, env: dict[str, str] | None = None) -> Result:
        return runner.invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)

    return run


@pytest.fixture(params=["wal", "archive"])
def source_args(request: pytest.FixtureRequest, wal_dir: Path, archive: Path) -> list[str]:
    """The same 50 records from either source: every command must behave the same on both."""
    if request.param == "wal":
        return ["--wal", str(wal_dir)]
    return ["--archive", str(archive)]
