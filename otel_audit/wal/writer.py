"""Appending frames to the active segment, rolling segments, fsync with group commit, and I/O-fault rebuilds."""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from otel_audit.exceptions import WALError

from . import fileio, frame, segment
from .options import Durability

log = logging.getLogger("otel_audit.wal")

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


@dataclass
class SegmentState:
    """A segment the writer tracks; sizes come from disk at open, then from our own writes."""

    first_seq: int
    path: Path
    size: int
    last_seq: int  # first_seq - 1 while the segment holds no frame

    @property
    def empty(self) -> bool:
        return self.last_seq < self.first_seq


class SegmentWriter:
    """Owns the active segment fd. Callers hold ``lock`` around ``write``/``drop_acked``/``rebuild``.

    Every byte goes through ``os.write`` on the fd (no userspace buffer), so a frame is
    in the page cache, and survives SIGKILL, once ``write`` returns. ``sync_to`` adds the
    fsync: the first thread to need one becomes the leader and fsyncs everything written
    so far; threads arriving meanwhile wait and are covered by the next leader.

    I/O faults (fsyncgate). After a failed fsync Linux may already have dropped the
    dirty pages and marked them clean, so a second fsync can succeed while the data is
    gone: an fd whose fsync failed is never trusted again. Any fsync error, any write
    error other than a full disk, or the active segment vanishing from its path puts
    the writer in the *failed* state: appends and ``sync_to`` raise ``failed`` (a
    WALError), reads are unaffected. ``rebuild`` leaves that state by copying the active
    segment into a fresh file: the part an fsync had confirmed is read back and
    CRC-checked, the rest comes from ``_tail``, the exact bytes written since that fsync,
    kept in memory for this purpose only (bounded by what one fsync interval writes).
    """

    def __init__(
        self,
        segments_dir: Path,
        segments: list[SegmentState],
        next_seq: int,
        *,
        segment_bytes: int,
        durability: Durability,
        fsync_interval: float,
        lock: threading.Lock,
        on_failed_tick: Callable[[], None] | None = None,
    ) -> None:
        self._dir = segments_dir
        self.segments = segments
        self._segment_bytes = segment_bytes
        self._durability = durability
        self._sync = durability is not Durability.NEVER
        self._lock = lock
        self.next_seq = next_seq
        self.written_seq = next_seq - 1
        self.synced_seq = next_seq - 1
        self.fsyncs = 0
        self.faults = 0
        self.lost_frames = 0  # frames a fault made unrecoverable (counted, logged)
        self.failed: WALError | None = None
        self.failed_at = 0.0  # time.monotonic() of the fault that set ``failed``
        self._fd = -1
        # Bytes written to the active segment since its last good fsync, and the size the
        # fsync covered. Only kept when some mode fsyncs: never mode has no fsync to fail.
        self._tail: list[bytes] = []
        self._synced_size = 0
        self._gen = 0  # bumped whenever the active fd changes, so a late fsync result is ignored
        self._sync_cond = threading.Condition(threading.Lock())
        self._syncing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_failed_tick = on_failed_tick
        if segments and segments[-1].first_seq <= next_seq and segments[-1].size < segment_bytes:
            self._fd = fileio.open(segments[-1].path, os.O_RDWR | os.O_CLOEXEC)
            os.lseek(self._fd, segments[-1].size, os.SEEK_SET)
            self._synced_size = segments[-1].size  # WAL.open fsynced what it kept
        if durability is Durability.INTERVAL:
            self._thread = threading.Thread(
                target=self._sync_loop, args=(fsync_interval,), name="otel-audit-wal-fsync", daemon=True
            )
            self._thread.start()

    @property
    def total_bytes(self) -> int:
        return sum(s.size for s in self.segments)

    # -- writing (caller holds the lock) -----------------------------------------------

    def bytes_needed(self, frame_bytes: int) -> int:
        """Disk bytes an append of ``frame_bytes`` adds, counting a new segment's header."""
        active = self.segments[-1] if self._fd >= 0 else None
        if active is None or (not active.empty and active.size + frame_bytes > self._segment_bytes):
            return frame_bytes + segment.HEADER_SIZE
        return frame_bytes

    def write(self, payloads: Sequence[bytes], time_ns: int) -> int:
        """Write frames for ``payloads`` in one ``os.write``; return the first seq.

        The caller has checked ``failed`` under the same lock.

        Raises:
            OSError: the disk is full (ENOSPC, EDQUOT). The partial frame was cut off
                again, so the segment ends on a frame boundary and no seq was used.
            WALError: this write failed the writer (``failed``).
        """
        data = frame.encode_many(self.next_seq, time_ns, payloads)
        active = self.segments[-1] if self._fd >= 0 else None
        if active is None or (not active.empty and active.size + len(data) > self._segment_bytes):
            active = self._roll()
        start = active.size
        try:
            view = memoryview(data)
            while view:
                view = view[fileio.write(self._fd, view) :]
        except OSError as exc:
            self._cut_back(active, start)
            if exc.errno in _NO_SPACE:
                raise
            raise self._fail(f"write to '{active.path}' at position {start} failed", exc) from exc
        if self._sync:
            self._tail.append(data)
        first = self.next_seq
        active.size = start + len(data)
        active.last_seq = first + len(payloads) - 1
        self.next_seq = active.last_seq + 1
        self.written_seq = active.last_seq
        return first

    def _cut_back(self, active: SegmentState, offset: int) -> None:
        """Remove a partial frame so readers never see it and the next frame starts cleanly."""
        try:
            fileio.ftruncate(self._fd, offset)
            os.lseek(self._fd, offset, os.SEEK_SET)
        except OSError as exc:
            raise self._fail(
                f"could not cut a partial write off '{active.path}' at position {offset}", exc
            ) from exc

    def _fail(self, what: str, exc: OSError | None) -> WALError:
        """Enter the failed state (the first fault's message is kept) and return the error to raise."""
        if self.failed is None:
            why = f": {exc.strerror} (errno {exc.errno})" if exc is not None else ""
            self.failed = WALError(
                f"wal: {what}{why}; records after seq {self.synced_seq} are not known to be on disk. "
                "Appends are refused until the WAL has rewritten them into a fresh segment (retried "
                "automatically; reads and acks go on meanwhile), or reopen the WAL"
            )
            self.faults += 1
            self.failed_at = time.monotonic()
            log.error("%s", self.failed)
        return self.failed

    def fail(self, what: str) -> WALError:
        """Fail the writer for a reason found outside it (the WAL's LOCK vanished); caller holds the lock."""
        return self._fail(what, None)

    def verify_active(self) -> None:
        """Fail if someone deleted or replaced the active segment: our writes would vanish with the inode.

        Caller holds the lock. Also notices the whole directory renamed away, which the
        cheaper check after each fsync (link count only) does not.
        """
        if self._fd < 0:
            return
        how = _identity_problem(self._fd, self.segments[-1].path, by_path=True)
        if how is not None:
            raise self._fail(f"active segment '{self.segments[-1].path}' was {how}", None)

    def _roll(self) -> SegmentState:
        """Start a new segment at ``next_seq``; the old one is fsynced first unless mode is never.

        The old segment is fsynced *before* the new one exists, so frames are never
        durable in a later segment while an earlier one may still lose its tail, and an
        fsync error leaves the writer on the old segment, whose tail ``rebuild`` keeps.
        """
        if self._fd >= 0 and self._sync:
            active = self.segments[-1]
            try:
                fileio.fsync(self._fd)
            except OSError as exc:
                raise self._fail(f"fsync of '{active.path}' failed", exc) from exc
            self.verify_active()
            self.fsyncs += 1
            self._synced_size = active.size
            self._tail.clear()
            self._mark_synced(self.written_seq)
        path, fd = segment.create(self._dir, self.next_seq, sync=self._sync)
        if self._fd >= 0:
            _close_quietly(self._fd)
        if self.segments and self.segments[-1].empty and self.segments[-1].path != path:
            # An empty segment left active at open: nothing references it any more.
            stale = self.segments.pop()
            _unlink(stale.path)
        elif self.segments and self.segments[-1].path == path:
            self.segments.pop()
        self._fd = fd
        self._gen += 1
        self._tail.clear()
        self._synced_size = segment.HEADER_SIZE
        state = SegmentState(self.next_seq, path, segment.HEADER_SIZE, self.next_seq - 1)
        self.segments.append(state)
        return state

    def drop_acked(self, acked_seq: int) -> int:
        """Delete segments whose every frame is acked; return the bytes freed."""
        freed = 0
        keep: list[SegmentState] = []
        for i, seg in enumerate(self.segments):
            is_last = i == len(self.segments) - 1
            end = seg.last_seq if is_last else self.segments[i + 1].first_seq - 1
            if end <= acked_seq and not (is_last and seg.empty):
                if is_last and self._fd >= 0:
                    _close_quietly(self._fd)
                    self._fd = -1
                    self._gen += 1
                    self._tail.clear()
                _unlink(seg.path)
                freed += seg.size
            else:
                keep.append(seg)
        self.segments[:] = keep
        return freed

    # -- durability --------------------------------------------------------------------

    def _mark_synced(self, seq: int) -> None:
        with self._sync_cond:
            self.synced_seq = max(self.synced_seq, seq)
            self._sync_cond.notify_all()

    def sync_to(self, target_seq: int) -> None:
        """Return once every frame up to ``target_seq`` is fsynced (group commit).

        Raises:
            WALError: the writer is failed; frames after ``synced_seq`` are not known durable.
        """
        with self._sync_cond:
            while True:
                if self.synced_seq >= target_seq:
                    return
                if self.failed is not None:
                    raise self.failed
                if not self._syncing:
                    self._syncing = True
                    break
                self._sync_cond.wait()
        fd = -1
        ok = False
        active: SegmentState | None = None
        size = 0
        try:
            with self._lock:
                gen, upto, tail_len = self._gen, self.written_seq, len(self._tail)
                if self.failed is None and self._fd >= 0:
                    active = self.segments[-1]
                    size = active.size
                    fd = fileio.dup(self._fd)
            if fd >= 0 and active is not None:
                problem: tuple[str, OSError | None] | None = None
                try:
                    fileio.fsync(fd)
                except OSError as exc:
                    problem = (f"fsync of '{active.path}' failed", exc)
                else:
                    how = _identity_problem(fd, active.path, by_path=False)
                    if how is not None:
                        problem = (f"active segment '{active.path}' was {how}", None)
                finally:
                    _close_quietly(fd)
                synced: list[bytes] = []
                with self._lock:
                    # A roll or rebuild meanwhile changed the active file and made everything up to
                    # ``upto`` durable its own way: this result, good or bad, is about the old fd.
                    if gen == self._gen:
                        if problem is not None:
                            self._fail(*problem)
                        else:
                            synced = self._tail[:tail_len]  # freed below, outside the lock
                            del self._tail[:tail_len]
                            self._synced_size = size
                            ok = True
                del synced
            else:
                ok = self.failed is None
        finally:
            with self._sync_cond:
                self._syncing = False
                if ok:
                    self.synced_seq = max(self.synced_seq, upto)
                    self.fsyncs += 1 if fd >= 0 else 0
                self._sync_cond.notify_all()
        if self.failed is not None and self.synced_seq < target_seq:
            raise self.failed

    def _sync_loop(self, interval: float) -> None:
        # Fsyncs start every ``interval`` seconds (not ``interval`` after the previous one
        # ended), so a record waits at most one interval plus the fsync that covers it.
        next_start = time.monotonic() + interval
        while not self._stop.wait(max(0.0, next_start - time.monotonic())):
            next_start = max(next_start + interval, time.monotonic())
            if self.failed is not None:
                if self._on_failed_tick is not None:
                    self._on_failed_tick()
                continue
            target = self.written_seq
            if target > self.synced_seq:
                try:
                    self.sync_to(target)
                except WALError:
                    pass  # logged when it failed; the next ticks try to rebuild

    # -- leaving the failed state (caller holds the lock) ----------------------------------

    def rebuild(self, acked_seq: int) -> None:
        """Copy the active segment into a fresh, fsynced file and clear ``failed``.

        Segments other than the active one that vanished (their directory was deleted)
        cannot be rebuilt: their unacked records are logged and counted in ``lost_frames``.

        Raises:
            OSError: the disk still refuses (the writer stays failed; try again later).
        """
        if self.failed is None:
            return
        kept: list[SegmentState] = []
        for i, seg in enumerate(self.segments):
            if (i < len(self.segments) - 1 or self._fd < 0) and not seg.path.exists():
                self._lose(seg, acked_seq)
            else:
                kept.append(seg)
        self.segments[:] = kept
        if self._fd >= 0:
            self._copy_active(self.segments[-1])
        self._gen += 1
        self._tail.clear()
        self.failed = None
        self._mark_synced(self.written_seq)

    def _lose(self, seg: SegmentState, acked_seq: int) -> None:
        first = max(seg.first_seq, acked_seq + 1)
        self.lost_frames += max(0, seg.last_seq - first + 1)
        if seg.last_seq >= first:
            log.error(
                "wal: segment '%s' was deleted by another program: unacked records %d..%d are lost",
                seg.path,
                first,
                seg.last_seq,
            )

    def _copy_active(self, active: SegmentState) -> None:
        """Write header, verified durable frames and the in-memory tail to a new file renamed over ``active``."""
        durable_end = self._synced_size if self._sync else active.size
        tail = b"".join(self._tail)
        if durable_end + len(tail) != active.size:  # bookkeeping disagrees: trust only what verifies
            durable_end, tail = active.size, b""
        old = os.pread(self._fd, max(0, durable_end - segment.HEADER_SIZE), segment.HEADER_SIZE)
        good, last = _verified_prefix(old, active.first_seq - 1)
        if good < len(old):
            lost_to = active.last_seq if not tail else frame.peek(tail, 0).seq - 1
            self.lost_frames += max(0, lost_to - last)
            log.error(
                "wal: '%s' no longer reads back intact after position %d: seqs %d..%d are lost",
                active.path,
                segment.HEADER_SIZE + good,
                last + 1,
                lost_to,
            )
        tmp = active.path.with_name(active.path.name + ".tmp")
        fd = fileio.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, segment.FILE_MODE)
        try:
            fileio.write_all(fd, segment.encode_header(active.first_seq))
            fileio.write_all(fd, memoryview(old)[:good])
            fileio.write_all(fd, tail)
            if self._sync:
                fileio.fsync(fd)
            fileio.replace(tmp, active.path)
            if self._sync:
                fileio.fsync_dir(self._dir)
        except BaseException:
            _close_quietly(fd)
            try:
                fileio.unlink(tmp)
            except OSError:
                pass
            raise
        _close_quietly(self._fd)
        self._fd = fd
        active.size = segment.HEADER_SIZE + good + len(tail)
        if not tail:
            active.last_seq = last
        self._synced_size = active.size
        log.warning(
            "wal: rewrote '%s' into a fresh file (%d bytes) after an I/O fault; appends resume",
            active.path,
            active.size,
        )

    # -- shutdown ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the fsync thread, fsync what is left (unless mode is never or failed), close the fd."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            if self._sync and self.failed is None:
                self.sync_to(self.written_seq)
        finally:
            with self._lock:
                if self._fd >= 0:
                    _close_quietly(self._fd)
                    self._fd = -1

    def forget_in_child(self) -> None:
        """Close a forked child's copy of the fd, so the child can never write to it."""
        if self._fd >= 0:
            _close_quietly(self._fd)
            self._fd = -1


def _identity_problem(fd: int, path: Path, *, by_path: bool) -> str | None:
    """Return how the file at ``path`` stopped being the one ``fd`` writes, or None if it still is.

    Without ``by_path`` only the link count is read (one fstat, cheap enough for every
    fsync): deleting or renaming over the segment drops it to 0. The path is looked up
    only then, to tell which, or when ``by_path`` asks for the full check.
    """
    held = os.fstat(fd)
    if not by_path and held.st_nlink > 0:
        return None
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return "deleted by another program"
    if (on_disk.st_dev, on_disk.st_ino) != (held.st_dev, held.st_ino):
        return "replaced by another program"
    return None


def _verified_prefix(data: bytes, last_seq: int) -> tuple[int, int]:
    """Return (bytes of whole valid frames at the start of ``data``, seq of the last of them)."""
    pos = 0
    while pos < len(data):
        status, header = frame.check(data, pos, len(data))
        if status is not frame.Check.OK or header is None or header.seq <= last_seq:
            break
        last_seq, pos = header.seq, pos + header.size
    return pos, last_seq


def _close_quietly(fd: int) -> None:
    """Close an fd whose close result cannot change what we do (its data was fsynced or is abandoned)."""
    try:
        fileio.close(fd)
    except OSError:
        pass


def _unlink(path: Path) -> None:
    try:
        fileio.unlink(path)
    except FileNotFoundError:
        pass
