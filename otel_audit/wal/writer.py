"""Appending frames to the active segment, rolling segments, and fsync with group commit."""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from otel_audit.exceptions import WALError

from . import frame, segment
from .options import Durability

log = logging.getLogger("otel_audit.wal")


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
    """Owns the active segment fd. Callers hold ``lock`` around ``write``/``drop_acked``.

    Every byte goes through ``os.write`` on the fd (no userspace buffer), so a frame is
    in the page cache, and survives SIGKILL, once ``write`` returns. ``sync_to`` adds the
    fsync: the first thread to need one becomes the leader and fsyncs everything written
    so far; threads arriving meanwhile wait and are covered by the next leader.
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
    ) -> None:
        self._dir = segments_dir
        self.segments = segments
        self._segment_bytes = segment_bytes
        self._durability = durability
        self._lock = lock
        self.next_seq = next_seq
        self.written_seq = next_seq - 1
        self.synced_seq = next_seq - 1
        self.fsyncs = 0
        self.failed: WALError | None = None
        self._fd = -1
        self._sync_cond = threading.Condition(threading.Lock())
        self._syncing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if segments and segments[-1].first_seq <= next_seq and segments[-1].size < segment_bytes:
            self._fd = os.open(segments[-1].path, os.O_WRONLY | os.O_CLOEXEC)
            os.lseek(self._fd, segments[-1].size, os.SEEK_SET)
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

        Raises:
            OSError: the write failed (ENOSPC...). The partial frame was cut off again,
                so the segment ends on a frame boundary and no seq was used.
        """
        if self.failed is not None:
            raise self.failed
        data = frame.encode_many(self.next_seq, time_ns, payloads)
        active = self.segments[-1] if self._fd >= 0 else None
        if active is None or (not active.empty and active.size + len(data) > self._segment_bytes):
            active = self._roll()
        assert active is not None
        start = active.size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:
            self._cut_back(active, start)
            raise
        first = self.next_seq
        active.size = start + len(data)
        active.last_seq = first + len(payloads) - 1
        self.next_seq = active.last_seq + 1
        self.written_seq = active.last_seq
        return first

    def _cut_back(self, active: SegmentState, offset: int) -> None:
        """Remove a partial frame so readers never see it and the next frame starts cleanly."""
        try:
            os.ftruncate(self._fd, offset)
            os.lseek(self._fd, offset, os.SEEK_SET)
        except OSError as exc:
            self.failed = WALError(
                f"wal: could not cut a partial write off '{active.path}' at position {offset}: "
                f"{exc.strerror}; reopen the WAL to repair it"
            )
            raise self.failed from exc

    def _roll(self) -> SegmentState:
        """Start a new segment at ``next_seq``; the old one is fsynced first unless mode is never."""
        sync = self._durability is not Durability.NEVER
        path, fd = segment.create(self._dir, self.next_seq, sync=sync)
        if self._fd >= 0:
            try:
                if sync:
                    os.fsync(self._fd)
                    self.fsyncs += 1
            finally:
                os.close(self._fd)
        if self.segments and self.segments[-1].empty and self.segments[-1].path != path:
            # An empty segment left active at open: nothing references it any more.
            stale = self.segments.pop()
            _unlink(stale.path)
        elif self.segments and self.segments[-1].path == path:
            self.segments.pop()
        self._fd = fd
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
                    os.close(self._fd)
                    self._fd = -1
                _unlink(seg.path)
                freed += seg.size
            else:
                keep.append(seg)
        self.segments[:] = keep
        return freed

    # -- durability --------------------------------------------------------------------

    def sync_to(self, target_seq: int) -> None:
        """Return once every frame up to ``target_seq`` is fsynced (group commit)."""
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
        upto = self.synced_seq
        error: OSError | None = None
        try:
            with self._lock:
                upto = self.written_seq
                fd = os.dup(self._fd) if self._fd >= 0 else -1
                if fd >= 0 and os.fstat(fd).st_nlink == 0:
                    # Acks never delete the active segment without closing our fd first, so
                    # someone else removed it: every later write would vanish with the inode.
                    os.close(fd)
                    raise OSError(
                        errno.ENOENT, "active segment was deleted by another program", str(self._dir)
                    )
            if fd >= 0:
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as exc:
            error = exc
        with self._sync_cond:
            self._syncing = False
            if error is None:
                self.synced_seq = max(self.synced_seq, upto)
                self.fsyncs += 1 if fd >= 0 else 0
            else:
                # After a failed fsync the kernel may have dropped the dirty pages: nothing
                # written since the last good fsync can be trusted, so stop accepting appends.
                self.failed = WALError(
                    f"wal: fsync of {self._dir} failed: {error.strerror} (errno {error.errno}); "
                    "records since the last successful fsync may be lost; reopen the WAL"
                )
            self._sync_cond.notify_all()
        if self.failed is not None and error is not None:
            raise self.failed from error

    def _sync_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            target = self.written_seq
            if target > self.synced_seq:
                try:
                    self.sync_to(target)
                except WALError as exc:
                    log.error("%s", exc)
                    return

    # -- shutdown ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the fsync thread, fsync what is left (unless mode is never), close the fd."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._durability is not Durability.NEVER and self.failed is None:
            self.sync_to(self.written_seq)
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def forget_in_child(self) -> None:
        """Close a forked child's copy of the fd, so the child can never write to it."""
        if self._fd >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = -1


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
