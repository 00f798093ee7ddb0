"""A WAL that others could read or change is reported (warn) or refused, per the configured policy."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from otel_audit.exceptions import ConfigError
from otel_audit.integrity.permissions import check_wal_permissions, find_permission_problems

from .builders import make_streams, write_wal


@pytest.fixture
def wal_dir(tmp_path: Path) -> Path:
    write_wal(tmp_path / "wal", make_streams(5, streams=1))
    return tmp_path / "wal"


def test_a_wal_written_by_the_wal_module_is_private(wal_dir: Path) -> None:
    assert find_permission_problems(wal_dir) == []
    assert check_wal_permissions(wal_dir, "refuse") == []


def test_loose_modes_are_named_with_who_can_do_what(wal_dir: Path) -> None:
    segment = next((wal_dir / "segments").iterdir())
    wal_dir.chmod(0o755)
    segment.chmod(0o664)
    problems = {p.path: p.reason for p in find_permission_problems(wal_dir)}
    assert problems == {wal_dir: "group and others can read it", segment: "group and others can write it"}


def test_warn_logs_once_with_the_fix_and_refuse_raises(
    wal_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (wal_dir / "checkpoint").touch(0o644)
    (wal_dir / "checkpoint").chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="otel_audit"):
        assert len(check_wal_permissions(wal_dir, environ={})) == 1
    assert [r.getMessage().count("chmod -R go-rwx") for r in caplog.records] == [1]
    with pytest.raises(
        ConfigError, match=r"checkpoint .*others can read it.*OTEL_AUDIT_WAL_PERMISSIONS=warn"
    ):
        check_wal_permissions(wal_dir, environ={"OTEL_AUDIT_WAL_PERMISSIONS": "refuse"})
    assert check_wal_permissions(wal_dir, "ignore") == []
    with pytest.raises(ConfigError, match="not one of"):
        check_wal_permissions(wal_dir, "lenient")


def test_foreign_owners_and_symlinks_are_problems(wal_dir: Path, tmp_path: Path) -> None:
    segment = next((wal_dir / "segments").iterdir())
    os.chown(segment, 4242, -1)
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (wal_dir / "dead-letter" / "link").symlink_to(tmp_path / "elsewhere")
    reasons = sorted(p.reason for p in find_permission_problems(wal_dir))
    assert reasons[0].startswith("a symbolic link")
    assert reasons[1].startswith("owned by uid 4242")


def test_a_missing_directory_has_no_problems(tmp_path: Path) -> None:
    assert find_permission_problems(tmp_path / "not-yet") == []
