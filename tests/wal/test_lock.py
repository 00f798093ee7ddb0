"""One writer per directory, across processes and across fork()."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from otel_audit.exceptions import ConfigError, WALError, WALLockedError
from otel_audit.wal import WAL, WALReader

from .conftest import payload_for

REPO = Path(__file__).resolve().parents[2]

HOLDER = """
import sys
from otel_audit.wal import WAL
wal = WAL.open(sys.argv[1])
wal.append(b"from holder")
print("ready", flush=True)
sys.stdin.readline()
"""

TRY_OPEN = """
import sys
from otel_audit.wal import WAL, WALLockedError
try:
    WAL.open(sys.argv[1]).close()
    print("opened")
except WALLockedError as exc:
    print("locked", exc.pid)
"""


def test_second_writer_in_another_process_gets_locked_error_with_pid(wal_dir: Path) -> None:
    """WAL.open on a locked directory names the holder's pid; the lock goes when the holder dies."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(wal_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"ready"
        with pytest.raises(WALLockedError, match=f"pid {holder.pid}") as info:
            WAL.open(wal_dir)
        assert info.value.pid == holder.pid
        assert WALReader(wal_dir).stats()["lock_holder_pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait()
    assert WALReader(wal_dir).stats()["lock_holder_pid"] is None
    with WAL.open(wal_dir) as w:
        assert [p for _, p in w.read()] == [b"from holder"]


def test_second_wal_object_in_the_same_process_is_refused(wal_dir: Path) -> None:
    """The lock conflicts inside one process too, and a reader there does not drop it."""
    with WAL.open(wal_dir) as w:
        assert WALReader(wal_dir).stats()["lock_holder_pid"] == os.getpid()
        with pytest.raises(WALLockedError, match="this process"):
            WAL.open(wal_dir)
        w.append(b"still the writer")
    with WAL.open(wal_dir) as w:
        assert w.last_seq == 1


def test_forked_child_cannot_use_the_wal_and_parent_keeps_its_lock(wal_dir: Path) -> None:
    """In a real os.fork() child the WAL refuses appends; closing it there leaves the parent's lock."""
    w = WAL.open(wal_dir, durability="always")
    try:
        w.append(payload_for(1))
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                os.close(read_end)
                try:
                    w.append(b"from child")
                    msg = "appended"
                except WALError as exc:
                    msg = str(exc)
                w.close()  # must not unlock or close the parent's files
                try:
                    WAL.open(wal_dir)
                    msg += "|opened"
                except WALLockedError as exc:
                    msg += f"|locked {exc.pid}"
                os.write(write_end, msg.encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write_end)
        with os.fdopen(read_end, "rb") as r:
            message = r.read().decode()
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert f"opened in pid {os.getpid()} cannot be used in forked child {pid}" in message
        assert message.endswith(f"|locked {os.getpid()}")
        # The parent still holds the lock after the child closed and exited...
        probe = subprocess.run(
            [sys.executable, "-c", TRY_OPEN, str(wal_dir)], capture_output=True, cwd=REPO, check=True
        )
        assert probe.stdout.split() == [b"locked", str(os.getpid()).encode()]
        # ...and keeps appending to its own files; nothing from the child reached them.
        assert w.append(payload_for(2)) == 2
        assert list(w.read()) == [(1, payload_for(1)), (2, payload_for(2))]
    finally:
        w.close()


def test_lock_file_holds_the_writer_pid(wal_dir: Path) -> None:
    """LOCK names its holder, for humans and for WALReader."""
    with WAL.open(wal_dir):
        assert (wal_dir / "LOCK").read_text().strip() == str(os.getpid())


def test_read_only_directory_is_a_clear_error(tmp_path: Path) -> None:
    """A directory on a read-only filesystem fails at open with the path and errno."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mnt)], check=True)
    try:
        with pytest.raises(ConfigError, match=rf"{mnt / 'wal'}.*errno 30"):
            WAL.open(mnt / "wal")
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
