"""Real kernel faults under a live WAL: no inodes left, EROFS, EIO, and a power cut simulated by ext4 itself.

The power cut: ``EXT4_IOC_SHUTDOWN`` with ``EXT4_GOING_FLAGS_NOLOGFLUSH`` stops the file
system at once without writing back dirty pages or the journal (what xfstests calls
"godown"); unmounting and mounting the image again replays the journal, so the disk
holds exactly what had reached it: what an fsync made durable, and whatever writeback
had happened to send. EROFS comes from ``/sys/fs/ext4/<dev>/trigger_fs_error`` on a
file system mounted ``errors=remount-ro``: ext4 remounts itself read-only under the
open files, which ``mount -o remount,ro`` refuses to do while a file is open for write.
The tests run as root (mount, loop devices), as CI and these machines do.
"""

from __future__ import annotations

import fcntl
import os
import random
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from otel_audit.exceptions import WALError, WALFullError
from otel_audit.wal import WAL

from .conftest import payload_for

EXT4_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32)
EXT4_GOING_FLAGS_DEFAULT = 0  # flush everything, then stop: later I/O fails with EIO
EXT4_GOING_FLAGS_NOLOGFLUSH = 2  # stop now: neither dirty pages nor the journal are written


@dataclass
class Ext4:
    """A small ext4 image on a loop device (the image itself lives on tmpfs, for speed)."""

    image: Path
    mnt: Path

    def device(self) -> str:
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, where, *_ = line.split()
            if where == str(self.mnt):
                return dev
        raise AssertionError(f"{self.mnt} is not mounted")

    def mount(self) -> None:
        subprocess.run(
            ["mount", "-o", "loop,errors=remount-ro", str(self.image), str(self.mnt)],
            check=True,
            capture_output=True,
        )

    def umount(self) -> None:
        if subprocess.run(["umount", str(self.mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(self.mnt)], check=True, capture_output=True)

    def shutdown(self, flags: int) -> None:
        fd = os.open(self.mnt, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", flags))
        finally:
            os.close(fd)

    def trigger_error(self) -> None:
        name = os.path.basename(self.device())
        Path(f"/sys/fs/ext4/{name}/trigger_fs_error").write_text("otel-audit test: remount read-only\n")

    def remount(self) -> None:
        """Unmount and mount again: after a shutdown, the journal is replayed from what reached the disk."""
        self.umount()
        subprocess.run(["e2fsck", "-fy", str(self.image)], capture_output=True)  # exit 1: fixed, fine
        self.mount()


@pytest.fixture
def ext4(tmp_path: Path) -> Iterator[Ext4]:
    base = Path(
        tempfile.mkdtemp(prefix="otel-audit-ext4-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    )
    fs = Ext4(base / "disk.img", tmp_path / "mnt")
    fs.mnt.mkdir()
    with open(fs.image, "wb") as f:
        f.truncate(48 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(fs.image)], check=True, capture_output=True)
    fs.mount()
    try:
        yield fs
    finally:
        fs.umount()
        fs.image.unlink()
        base.rmdir()


# -- a power cut ------------------------------------------------------------------------------------


@dataclass
class CutResult:
    acknowledged: dict[int, float]  # seq -> monotonic time its append returned
    present: list[int]
    cut_at: float
    appender_error: BaseException | None

    @property
    def lost(self) -> list[int]:
        """Acknowledged before the cut and gone after it.

        A real power cut is instantaneous; the shutdown ioctl that stands in for it is not, and an
        fsync racing with it can still return. An append that returned after the cut began was
        not acknowledged before the power went, so it cannot count as lost.
        """
        kept = set(self.present)
        return sorted(s for s, t in self.acknowledged.items() if t < self.cut_at and s not in kept)

    def lost_age_max(self) -> float:
        """How long before the cut the oldest lost record had been acknowledged (0 if none lost)."""
        return max((self.cut_at - self.acknowledged[s] for s in self.lost), default=0.0)


def _power_cut(
    fs: Ext4, mode: str, *, interval: float, seconds: float, seed: int, acks: bool = True
) -> CutResult:
    """Append from a thread at a steady pace, cut the power, boot, and see what survived."""
    rng = random.Random(seed)
    d = fs.mnt / "wal"
    w = WAL.open(d, durability=mode, fsync_interval=interval, segment_bytes=64 << 10)
    acknowledged: dict[int, float] = {}
    error: list[BaseException] = []
    stop = threading.Event()

    def appender() -> None:
        seq = 0
        while not stop.is_set():
            try:
                seq = w.append(payload_for(seq + 1, 200))
            except BaseException as exc:  # noqa: BLE001 - reported to the test
                error.append(exc)
                return
            acknowledged[seq] = time.monotonic()
            if acks and seq % 500 == 0:
                try:
                    w.ack(seq - 250)
                except WALError as exc:
                    error.append(exc)
                    return
            time.sleep(0.0002)

    t = threading.Thread(target=appender)
    t.start()
    time.sleep(seconds + rng.uniform(0, 0.2))
    cut_at = time.monotonic()
    fs.shutdown(EXT4_GOING_FLAGS_NOLOGFLUSH)
    deadline = time.monotonic() + 5
    while t.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    t.join()
    try:
        w.close()
    except WALError:
        pass  # the file system is gone: close cannot fsync, and says so
    fs.remount()
    with WAL.open(d, durability="never", segment_bytes=64 << 10) as w2:
        got = list(w2.read(after=w2.acked_seq))
        acked = w2.acked_seq
    for seq, payload in got:
        assert payload == payload_for(seq, 200), f"seq {seq} came back damaged"
    seqs = [s for s, _ in got]
    assert seqs == sorted(set(seqs))
    present = list(range(1, acked + 1)) + seqs  # acked records were delivered: not lost
    return CutResult(
        {s: t for s, t in acknowledged.items() if s > 0}, present, cut_at, error[0] if error else None
    )


def test_power_cut_in_always_mode_keeps_every_acknowledged_record(ext4: Ext4) -> None:
    """Two cuts at random moments: nothing whose append returned is lost; appends after the cut fail closed."""
    for round_no in range(2):
        result = _power_cut(ext4, "always", interval=0.2, seconds=0.4, seed=round_no)
        assert len(result.acknowledged) > 200, "the appender should have made progress"
        assert not result.lost, f"round {round_no}: acknowledged records lost: {result.lost[:10]}"
        assert isinstance(result.appender_error, WALError), result.appender_error
        assert "errno 5" in str(result.appender_error), "the caller sees the real EIO"
        _wipe(ext4)


def test_power_cut_in_interval_mode_loses_at_most_the_last_interval(ext4: Ext4) -> None:
    """interval: what a cut loses was acknowledged within fsync_interval (plus one fsync) before it."""
    worst = 0.0
    for round_no, interval in enumerate((0.05, 0.2, 0.2)):
        # No acks here: an ack's checkpoint fsync commits the ext4 journal, which also writes
        # the segment's new blocks (data=ordered) and would hide the interval's own bound.
        result = _power_cut(ext4, "interval", interval=interval, seconds=0.5, seed=10 + round_no, acks=False)
        age = result.lost_age_max()
        worst = max(worst, age)
        print(
            f"interval={interval}s: {len(result.acknowledged)} acknowledged, {len(result.lost)} lost, "
            f"oldest lost acknowledged {age * 1000:.0f} ms before the cut"
        )
        assert age <= interval + 0.25, f"lost a record acknowledged {age:.3f}s before the cut"
        _wipe(ext4)


def test_power_cut_in_never_mode_opens_cleanly_with_whatever_writeback_kept(ext4: Ext4) -> None:
    """never: no promise beyond a process crash; after the cut the WAL still opens and holds only intact records."""
    result = _power_cut(ext4, "never", interval=0.2, seconds=0.4, seed=20)
    print(f"never: {len(result.acknowledged)} acknowledged, {len(result.lost)} lost at the cut")
    assert len(result.acknowledged) > 200


def _wipe(fs: Ext4) -> None:
    subprocess.run(["rm", "-rf", str(fs.mnt / "wal")], check=True)


# -- EROFS and EIO for real ---------------------------------------------------------------------------


def test_file_system_turning_read_only_under_the_writer_fails_closed_and_keeps_the_data(ext4: Ext4) -> None:
    """ext4 errors=remount-ro flips to read-only: appends and acks raise WALError(EROFS), reads go on."""
    d = ext4.mnt / "wal"
    w = WAL.open(d, durability="always", segment_bytes=8192)
    try:
        for i in range(1, 61):
            assert w.append(payload_for(i, 200)) == i
        ext4.trigger_error()
        with pytest.raises(WALError, match="errno 30"):
            w.append(payload_for(61, 200))
        with pytest.raises(WALError, match="errno 30|Read-only"):
            w.ack(10)
        assert [s for s, _ in w.read()] == list(range(1, 61)), "reads still work from the read-only disk"
        time.sleep(0.15)
        with pytest.raises(WALError):
            w.append(payload_for(61, 200))  # the rebuild cannot write either: still closed
        assert w.stats()["failed"] is not None and w.stats()["recoveries"] == 0
    finally:
        w.close()
    ext4.remount()
    with WAL.open(d, durability="always", segment_bytes=8192) as w:
        assert list(w.read()) == [(i, payload_for(i, 200)) for i in range(1, 61)]
        assert w.append(payload_for(61, 200)) == 61, "after fsck and mount, appends go on"


def test_eio_from_a_dead_file_system_reaches_the_caller_as_wal_error(ext4: Ext4) -> None:
    """After ext4 shuts down (EIO on everything), append, sync and close raise WALError, never a bare OSError."""
    d = ext4.mnt / "wal"
    w = WAL.open(d, durability="interval", fsync_interval=0.02)
    w.append_many([payload_for(i) for i in range(1, 11)])
    w.sync_to(10)
    time.sleep(0.1)
    ext4.shutdown(EXT4_GOING_FLAGS_DEFAULT)
    with pytest.raises(WALError, match="errno 5"):
        for i in range(11, 1000):
            w.append(payload_for(i))
            time.sleep(0.005)
    w.close()
    ext4.remount()
    with WAL.open(d) as w:
        assert [s for s, _ in w.read()][:10] == list(range(1, 11))


# -- no inodes left --------------------------------------------------------------------------------------


@pytest.fixture
def few_inodes(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs with 12 inodes: the WAL's directories and files take most of them."""
    mnt = tmp_path / "inodes"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,nr_inodes=12", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_no_inodes_left_is_a_full_wal_and_acks_still_free_space(few_inodes: Path) -> None:
    """Out of inodes: a new segment cannot be created (WALFullError), the checkpoint is still written, acks free inodes."""
    d = few_inodes / "wal"
    with WAL.open(d, durability="always", segment_bytes=2048, full_policy="raise") as w:
        last = w.append(payload_for(1, 300))
        fillers = []
        try:
            for n in range(100):
                p = few_inodes / f"filler{n}"
                p.touch()
                fillers.append(p)
        except OSError:
            pass
        assert fillers, "the filler files should have taken the free inodes"
        with pytest.raises(WALFullError, match="disk full"):
            while True:
                last = w.append(payload_for(last + 1, 300))
        assert last >= 5, "the active segment filled up before a new one was needed"
        w.ack(last)  # checkpoint.tmp cannot be created: written in place instead
        assert w.acked_seq == last
        assert w.append(payload_for(last + 1, 300)) == last + 1, "the ack freed the segment's inode"
    with WAL.open(d, durability="never") as w:
        assert w.acked_seq == last
        assert list(w.read(after=last)) == [(last + 1, payload_for(last + 1, 300))]
