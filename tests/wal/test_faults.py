"""I/O faults injected through ``otel_audit.wal.fileio``, and files removed under a live writer.

What every test here pins down: after an fsync or write error the WAL never trusts the
failed file again (no retry-and-trust, PostgreSQL's "fsyncgate"); appends fail closed with
a WALError while reads and acks go on; after a back-off it copies the active segment into a
fresh, fsynced file and appends resume, with every record it had acknowledged still there.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from otel_audit.exceptions import WALError, WALFullError
from otel_audit.wal import WAL, fileio
from otel_audit.wal import wal as wal_module

from .conftest import payload_for


@dataclass
class Rule:
    operation: str
    err: int
    path: str  # substring of the file's path
    times: int
    short: bool = False  # write: write half for real first, then fail the rest


class Faults(fileio.Layer):
    """Fails chosen calls with an errno; remembers which inodes were fsynced, in order."""

    def __init__(self) -> None:
        self.rules: list[Rule] = []
        self.fsynced: list[int] = []  # st_ino of every successful fsync
        self.failed_inodes: set[int] = set()
        self._paths: dict[int, str] = {}
        self._lock = threading.Lock()

    def fail(self, operation: str, err: int, *, path: str = "", times: int = 1, short: bool = False) -> None:
        with self._lock:
            self.rules.append(Rule(operation, err, path, times, short))

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def _match(self, operation: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.operation == operation and rule.path in path and rule.times != 0:
                    rule.times -= 1
                    return rule
        return None

    def open(self, path: str | os.PathLike[str], flags: int, mode: int = 0o777) -> int:
        if rule := self._match("open", os.fspath(path)):
            raise OSError(rule.err, os.strerror(rule.err), os.fspath(path))
        fd = os.open(path, flags, mode)
        self._paths[fd] = os.fspath(path)
        return fd

    def dup(self, fd: int) -> int:
        new = os.dup(fd)
        self._paths[new] = self._paths.get(fd, "")
        return new

    def write(self, fd: int, data: bytes | memoryview) -> int:
        if rule := self._match("write", self._paths.get(fd, "")):
            if rule.short and len(data) > 1:
                written = os.write(fd, data[: len(data) // 2])
                self.fail("write", rule.err, path=rule.path, times=1)
                return written
            raise OSError(rule.err, os.strerror(rule.err))
        return os.write(fd, data)

    def fsync(self, fd: int) -> None:
        if rule := self._match("fsync", self._paths.get(fd, "")):
            self.failed_inodes.add(os.fstat(fd).st_ino)
            raise OSError(rule.err, os.strerror(rule.err))
        os.fsync(fd)
        self.fsynced.append(os.fstat(fd).st_ino)

    def close(self, fd: int) -> None:
        os.close(fd)
        self._paths.pop(fd, None)

    def mkdir(self, path: str | os.PathLike[str], mode: int = 0o777) -> None:
        if rule := self._match("mkdir", os.fspath(path)):
            raise OSError(rule.err, os.strerror(rule.err), os.fspath(path))
        os.mkdir(path, mode)


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> Iterator[Faults]:
    """A fault layer under the WAL; the recovery back-off shortened so tests need not sleep long."""
    monkeypatch.setattr(wal_module, "_RECOVERY_FIRST_DELAY_SECONDS", 0.05)
    layer = Faults()
    with fileio.interposed(layer):
        yield layer


def _wait_for(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.01)


def _active_inode(wal_dir: Path) -> int:
    return max((wal_dir / "segments").iterdir()).stat().st_ino


def _reopened(wal_dir: Path) -> tuple[list[tuple[int, bytes]], dict[str, object]]:
    with WAL.open(wal_dir, durability="never") as w:
        return list(w.read()), w.stats()


def test_fsync_eio_fails_closed_keeps_reads_and_resumes_in_a_fresh_file(
    wal_dir: Path, faults: Faults
) -> None:
    """always: the append whose fsync failed raises; so does the next; reads go on; then appends resume."""
    with WAL.open(wal_dir, durability="always") as w:
        for i in range(1, 6):
            assert w.append(payload_for(i)) == i
        old_inode = _active_inode(wal_dir)
        faults.fail("fsync", errno.EIO, path=".wal")
        with pytest.raises(WALError, match=r"fsync of .*00000000000000000001\.wal.* failed.*errno 5"):
            w.append(payload_for(6))
        with pytest.raises(WALError, match="Appends are refused"):
            w.append(payload_for(7))  # inside the back-off: fail closed at once
        assert [s for s, _ in w.read()] == [1, 2, 3, 4, 5, 6], "reads go on; 6 is in doubt, not gone"
        assert w.stats()["failed"] is not None and w.stats()["faults"] == 1
        time.sleep(0.06)
        assert w.append(payload_for(7)) == 7
        assert w.stats()["failed"] is None and w.stats()["recoveries"] == 1
        assert _active_inode(wal_dir) != old_inode, "appends resumed in a fresh file"
        assert faults.failed_inodes == {old_inode}
    got, stats = _reopened(wal_dir)
    assert got == [(i, payload_for(i)) for i in range(1, 8)]
    assert stats["quarantine_count"] == 0


def test_a_failed_file_is_never_fsynced_again(wal_dir: Path, faults: Faults) -> None:
    """No retry-and-trust: after its fsync failed, the old inode never appears in a successful fsync."""
    with WAL.open(wal_dir, durability="always") as w:
        w.append_many([payload_for(i) for i in range(1, 4)])
        faults.fail("fsync", errno.EIO, path=".wal")
        with pytest.raises(WALError):
            w.append(payload_for(4))
        (failed_inode,) = faults.failed_inodes
        before = len(faults.fsynced)
        time.sleep(0.06)
        for i in range(5, 15):
            w.append(payload_for(i))
        assert failed_inode not in faults.fsynced[before:]
        assert len(faults.fsynced) > before


def test_interval_mode_recovers_on_its_own_and_keeps_acknowledged_records_lost_by_the_page_cache(
    wal_dir: Path, faults: Faults
) -> None:
    """interval: the fsync thread fails, rebuilds by itself; the unsynced tail comes from memory, not the disk."""
    with WAL.open(wal_dir, durability="interval", fsync_interval=0.02) as w:
        w.append_many([payload_for(i) for i in range(1, 11)])
        _wait_for(lambda: w.stats()["fsyncs"] >= 1)
        faults.fail("fsync", errno.EIO, path=".wal", times=3)  # the first recovery attempts fail too
        w.append_many([payload_for(i) for i in range(11, 21)])  # acknowledged: in interval mode, written
        _wait_for(lambda: w.stats()["faults"] == 1)
        # What Linux may do after a failed writeback: the pages are dropped, the file reads back
        # stale. Wipe the unsynced frames on disk; the rebuild must not depend on them.
        seg = max((wal_dir / "segments").iterdir())
        size = seg.stat().st_size
        with open(seg, "r+b") as f:
            f.seek(size - 10 * (28 + 40))
            f.write(b"\0" * (10 * (28 + 40)))
        with pytest.raises(WALError):
            w.append(payload_for(21))
        _wait_for(lambda: w.stats()["failed"] is None)  # the fsync thread recovered, no append needed
        assert w.stats()["recoveries"] == 1
        assert w.append(payload_for(21)) == 21
    got, stats = _reopened(wal_dir)
    assert got == [(i, payload_for(i)) for i in range(1, 22)]
    assert stats["quarantine_count"] == 0


def test_short_write_then_eio_cuts_the_partial_frame_and_fails_closed(wal_dir: Path, faults: Faults) -> None:
    """Half a batch reached the file before EIO: it is cut off, readers never see it, the seqs are reused."""
    with WAL.open(wal_dir, durability="always") as w:
        w.append_many([payload_for(i) for i in range(1, 4)])
        size = max((wal_dir / "segments").iterdir()).stat().st_size
        faults.fail("write", errno.EIO, path=".wal", short=True)
        with pytest.raises(WALError, match="errno 5"):
            w.append_many([payload_for(i, 200) for i in range(4, 8)])
        assert max((wal_dir / "segments").iterdir()).stat().st_size == size, "partial frame cut off"
        assert [s for s, _ in w.read()] == [1, 2, 3]
        time.sleep(0.06)
        assert w.append_many([payload_for(i) for i in range(4, 6)]) == [4, 5]
    got, stats = _reopened(wal_dir)
    assert got == [(i, payload_for(i)) for i in range(1, 6)]
    assert stats["quarantine_count"] == 0


def test_enospc_mid_frame_is_a_full_wal_not_a_fault(wal_dir: Path, faults: Faults) -> None:
    """ENOSPC half-way through a frame: cut back, WALFullError (policy raise), and the very next append works."""
    with WAL.open(wal_dir, durability="always", full_policy="raise") as w:
        w.append(payload_for(1))
        faults.fail("write", errno.ENOSPC, path=".wal", short=True)
        with pytest.raises(WALFullError, match="disk full"):
            w.append(payload_for(2, 500))
        assert w.stats()["faults"] == 0
        assert w.append(payload_for(2)) == 2
    assert _reopened(wal_dir)[0] == [(1, payload_for(1)), (2, payload_for(2))]


def test_erofs_keeps_failing_with_growing_backoff_until_writable_again(wal_dir: Path, faults: Faults) -> None:
    """EROFS on write: every recovery attempt fails while it lasts, the back-off doubles; it resumes after."""
    with WAL.open(wal_dir, durability="always") as w:
        w.append(payload_for(1))
        faults.fail("write", errno.EROFS, times=-1)
        faults.fail("open", errno.EROFS, times=-1)
        with pytest.raises(WALError, match="errno 30"):
            w.append(payload_for(2))
        attempts = 0
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            with pytest.raises(WALError):
                w.append(payload_for(2))
            attempts += 1
        assert w._recovery_delay > wal_module._RECOVERY_FIRST_DELAY_SECONDS * 2, "back-off did not grow"
        assert [s for s, _ in w.read()] == [1]
        faults.clear()
        _wait_for(lambda: _try_append(w, payload_for(2)) == 2, timeout=10)
    assert _reopened(wal_dir)[0] == [(1, payload_for(1)), (2, payload_for(2))]


def _try_append(w: WAL, payload: bytes) -> int:
    try:
        return w.append(payload)
    except WALError:
        return -1


def test_fsync_failure_while_rolling_keeps_the_old_segment_and_its_tail(
    wal_dir: Path, faults: Faults
) -> None:
    """The fsync that closes a segment fails: no new segment appears, the old one is rebuilt, then rolling goes on."""
    with WAL.open(wal_dir, durability="always", segment_bytes=1024) as w:
        seqs = [w.append(payload_for(i, 100), sync=False) for i in range(1, 8)]  # 7 x 128 bytes: one segment
        assert len(list((wal_dir / "segments").iterdir())) == 1
        faults.fail("fsync", errno.EIO, path=".wal")
        with pytest.raises(WALError, match="fsync"):
            w.append(payload_for(8, 100))  # needs a roll: the old segment's fsync fails
        assert len(list((wal_dir / "segments").iterdir())) == 1, "no segment may follow an unsynced one"
        time.sleep(0.06)
        assert w.append(payload_for(8, 100)) == 8
        w.sync_to(8)
        assert seqs == list(range(1, 8))
    got, _ = _reopened(wal_dir)
    assert got == [(i, payload_for(i, 100)) for i in range(1, 9)]


def test_fsync_enospc_from_delayed_allocation_is_a_fault_like_eio(wal_dir: Path, faults: Faults) -> None:
    """ENOSPC reported by fsync (delayed allocation, thin provisioning) loses data like EIO does."""
    with WAL.open(wal_dir, durability="always") as w:
        w.append(payload_for(1))
        faults.fail("fsync", errno.ENOSPC, path=".wal")
        with pytest.raises(WALError, match="errno 28") as info:
            w.append(payload_for(2))
        assert not isinstance(info.value, WALFullError)
        time.sleep(0.06)
        assert w.append(payload_for(3)) == 3
    assert [s for s, _ in _reopened(wal_dir)[0]] == [1, 2, 3]


def test_checkpoint_write_error_refuses_the_ack_and_keeps_every_segment(
    wal_dir: Path, faults: Faults
) -> None:
    """EIO writing the checkpoint: ack raises, acked_seq and the segments stay; appends are not affected."""
    with WAL.open(wal_dir, durability="always", segment_bytes=1024) as w:
        for i in range(1, 30):
            w.append(payload_for(i, 100))
        segments = sorted((wal_dir / "segments").iterdir())
        faults.fail("fsync", errno.EIO, path="checkpoint")
        with pytest.raises(WALError, match="the ack was not recorded"):
            w.ack(20)
        assert w.acked_seq == 0
        assert sorted((wal_dir / "segments").iterdir()) == segments
        assert w.append(payload_for(30)) == 30
        w.ack(20)
        assert w.acked_seq == 20


def test_reads_and_acks_go_on_while_appends_are_refused(wal_dir: Path, faults: Faults) -> None:
    """The sender keeps delivering what is on disk and acking it during a fault."""
    with WAL.open(wal_dir, durability="always", segment_bytes=1024) as w:
        for i in range(1, 21):
            w.append(payload_for(i, 100))
        faults.fail("fsync", errno.EIO, path=".wal", times=-1)
        faults.fail("open", errno.EIO, path=".wal", times=-1)
        with pytest.raises(WALError):
            w.append(payload_for(21, 100))
        with w.cursor(after=0) as cur:
            batch = cur.next_batch(100, 1 << 20)
        assert [s for s, _ in batch] == list(range(1, 22))
        w.ack(15)
        assert w.acked_seq == 15
        assert w.stats()["failed"] is not None
        faults.clear()


def test_close_while_failed_rewrites_the_in_doubt_records(wal_dir: Path, faults: Faults) -> None:
    """Closing right after a fault still tries the rebuild: the records written since the last fsync survive."""
    with WAL.open(wal_dir, durability="interval", fsync_interval=10.0) as w:
        w.append_many([payload_for(i) for i in range(1, 6)])
        faults.fail("write", errno.EIO, path=".wal")
        with pytest.raises(WALError):
            w.append(payload_for(6))
    assert _reopened(wal_dir)[0] == [(i, payload_for(i)) for i in range(1, 6)]


# -- files removed or replaced by another program (real, no injection) ------------------------------


@pytest.fixture
def quick_recovery(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wal_module, "_RECOVERY_FIRST_DELAY_SECONDS", 0.05)


def test_wal_directory_deleted_under_the_writer_is_recreated_with_the_active_segment(
    wal_dir: Path, quick_recovery: None
) -> None:
    """rm -rf of the directory: detected at the next fsync; LOCK, checkpoint and the active segment come back."""
    with WAL.open(wal_dir, durability="always", segment_bytes=1024) as w:
        for i in range(1, 21):
            w.append(payload_for(i, 100))
        w.ack(5)
        active_first = int(max((wal_dir / "segments").iterdir()).name[:20])
        shutil.rmtree(wal_dir)
        with pytest.raises(WALError, match="deleted by another program"):
            w.append(payload_for(21, 100))
        time.sleep(0.06)
        assert w.append(payload_for(22, 100)) == 22
        stats = w.stats()
        assert stats["recoveries"] == 1
        assert stats["lost_frames"] == active_first - 1 - 5, "unacked records of deleted segments are counted"
        assert (wal_dir / "LOCK").read_text().strip() == str(os.getpid())
    got, _ = _reopened(wal_dir)
    assert [s for s, _ in got] == list(range(active_first, 23))
    assert all(p == payload_for(s, 100) for s, p in got)
    with WAL.open(wal_dir) as w:
        assert w.acked_seq == 5


def test_directory_deletion_is_noticed_without_any_fsync_in_never_mode(
    wal_dir: Path, quick_recovery: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """never mode has no fsync to notice it: appends check the file's identity once a second."""
    monkeypatch.setattr(wal_module, "_FILES_CHECK_NS", 0)
    with WAL.open(wal_dir, durability="never") as w:
        w.append_many([payload_for(i) for i in range(1, 6)])
        shutil.rmtree(wal_dir)
        with pytest.raises(WALError, match="deleted by another program"):
            w.append(payload_for(6))
        time.sleep(0.06)
        assert w.append(payload_for(6)) == 6
    assert _reopened(wal_dir)[0] == [(i, payload_for(i)) for i in range(1, 7)]


def test_active_segment_replaced_by_another_file_is_noticed_and_rewritten(
    wal_dir: Path, quick_recovery: None
) -> None:
    """Another file renamed over the active segment: our records win back the name."""
    with WAL.open(wal_dir, durability="always") as w:
        w.append_many([payload_for(i) for i in range(1, 4)])
        seg = max((wal_dir / "segments").iterdir())
        intruder = seg.with_name("intruder")
        intruder.write_bytes(b"not a segment")
        os.replace(intruder, seg)
        with pytest.raises(WALError, match="replaced by another program"):
            w.append(payload_for(4))  # refused before or after its write, depending on the check
        time.sleep(0.06)
        nxt = w.last_seq + 1
        assert w.append(payload_for(nxt)) == nxt
    assert _reopened(wal_dir)[0] == [(i, payload_for(i)) for i in range(1, nxt + 1)]


def test_deleted_lock_is_taken_again(
    wal_dir: Path, quick_recovery: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LOCK removed by a cleanup script: appends stop (someone could take the directory), then the lock is retaken."""
    monkeypatch.setattr(wal_module, "_FILES_CHECK_NS", 0)
    with WAL.open(wal_dir, durability="always") as w:
        w.append(payload_for(1))
        (wal_dir / "LOCK").unlink()
        with pytest.raises(WALError, match="LOCK was deleted or replaced"):
            w.append(payload_for(2))
        time.sleep(0.06)
        assert w.append(payload_for(2)) == 2
        assert (wal_dir / "LOCK").exists()
        with pytest.raises(WALError, match="locked"):
            WAL.open(wal_dir)


def test_lock_replaced_by_another_writer_abandons_the_directory_for_good(
    wal_dir: Path, quick_recovery: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If another WAL took the directory meanwhile, the first never writes there again, even after it left."""
    monkeypatch.setattr(wal_module, "_FILES_CHECK_NS", 0)
    first = WAL.open(wal_dir, durability="always")
    try:
        first.append(payload_for(1))
        (wal_dir / "LOCK").unlink()
        with WAL.open(wal_dir, durability="always") as second:
            assert second.append(payload_for(2)) == 2
        with pytest.raises(WALError):
            first.append(payload_for(3))
        time.sleep(0.06)
        with pytest.raises(WALError, match="will not write there again"):
            first.append(payload_for(3))
        time.sleep(0.12)
        with pytest.raises(WALError, match="will not write there again"):
            first.append(payload_for(3))
    finally:
        first.close()
    assert [s for s, _ in _reopened(wal_dir)[0]] == [1, 2]


def test_open_on_a_disk_too_full_for_the_first_checkpoint_still_opens(wal_dir: Path, faults: Faults) -> None:
    """No room for checkpoint.tmp at the first open: the WAL opens and appends; acks resume when space returns."""
    faults.fail("open", errno.ENOSPC, path="checkpoint.tmp", times=-1)
    with WAL.open(wal_dir, durability="always") as w:
        assert w.append(payload_for(1)) == 1
        with pytest.raises(WALError, match="the ack was not recorded"):
            w.ack(1)
        faults.clear()
        w.ack(1)
        assert w.acked_seq == 1
    with WAL.open(wal_dir) as w:
        assert (w.acked_seq, w.last_seq) == (1, 1)


def test_no_space_to_create_the_directory_is_a_full_wal_error(tmp_path: Path, faults: Faults) -> None:
    """ENOSPC while creating the WAL's directories is reported as WALFullError, not a stray FileNotFoundError."""
    faults.fail("mkdir", errno.ENOSPC, times=-1)
    with pytest.raises(WALFullError, match="no space to create the WAL directory"):
        WAL.open(tmp_path / "wal")
