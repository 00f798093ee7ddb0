"""Streaming reads: a cursor that follows a live WAL, and a lock-free view for other processes."""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from otel_audit.exceptions import WALCorruptionError, WALError

from . import checkpoint, frame, lock
from .segment import HEADER_SIZE as SEGMENT_HEADER_SIZE
from .segment import SegmentFile, decode_header, list_segments

# Bytes read per pread: large enough that a batch of small frames costs one syscall.
_CHUNK_BYTES = 256 << 10
SEGMENTS_DIR = "segments"
DEAD_LETTER_DIR = "dead-letter"
QUARANTINE_DIR = "quarantine"


class WALCursor:
    """A position in the WAL that reads forward in batches, keeping its file and offset.

    It follows segment roll-over, keeps reading a segment that an ack deleted under it
    (the open fd stays valid), and skips to the next segment on disk when the ones it
    needed are gone. Frames up to the position are never returned again.

    An incomplete or invalid frame at the end of the newest segment is "not yet
    written" (a writer may be in the middle of ``os.write``): the batch ends there and
    the next call re-reads those bytes from disk. The same bytes inside a segment that
    has a successor are damage and raise WALCorruptionError, because the writer only
    rolls after its last frame is whole.

    Not thread-safe: one cursor per consumer thread.
    """

    def __init__(self, segments_dir: Path, after: int, *, guard: Callable[[], None] | None = None) -> None:
        self._dir = segments_dir
        self._guard = guard
        self._fd = -1
        self._seg: SegmentFile | None = None
        self._buf = b""
        self._buf_off = 0
        self._pos = 0
        self._after = after
        self._closed = False

    @property
    def position(self) -> int:
        """The seq of the last frame returned (or passed by ``seek``)."""
        return self._after

    def seek(self, after: int) -> None:
        """Reposition so the next batch starts with the first frame whose seq > ``after``."""
        self._close_fd()
        self._after = after

    def close(self) -> None:
        """Release the open segment file; the cursor cannot be used afterwards."""
        self._close_fd()
        self._closed = True

    def __enter__(self) -> WALCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        """Yield frames to the current end of the WAL, a batch at a time."""
        while batch := self.next_batch(1024, 4 << 20):
            yield from batch

    def next_batch(self, max_records: int, max_bytes: int) -> list[tuple[int, bytes]]:
        """Return up to ``max_records`` frames after the position, ``[]`` at the current end.

        Stops before the payload bytes would pass ``max_bytes``, but always returns at
        least one frame if one is there, however large.

        Raises:
            WALCorruptionError: damage inside a segment that is no longer being written.
        """
        if self._closed:
            raise WALError("wal: cursor is closed")
        if self._guard is not None:
            self._guard()
        out: list[tuple[int, bytes]] = []
        if self._fd < 0 and not self._open_first():
            return out
        total = 0
        while len(out) < max_records:
            status, header = self._check_here()
            if status is frame.Check.OK:
                assert header is not None
                if header.seq <= self._after:
                    self._pos += header.size
                    continue
                if out and total + header.length > max_bytes:
                    break
                rel = self._pos - self._buf_off + frame.HEADER_SIZE
                out.append((header.seq, self._buf[rel : rel + header.length]))
                self._pos += header.size
                self._after = header.seq
                total += header.length
                if total >= max_bytes:
                    break
            elif not self._move_on():
                break
        return out

    # -- internals ---------------------------------------------------------------------

    def _close_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        self._seg = None
        self._buf = b""

    def _open_first(self) -> bool:
        """Open the segment that holds ``after + 1`` (or the first one after it)."""
        for _ in range(100):
            segments = list_segments(self._dir)
            if not segments:
                return False
            pick = segments[0]
            for seg in segments:
                if seg.first_seq <= self._after + 1:
                    pick = seg
            if self._open(pick):
                return True
        raise WALError(f"wal: segments in {self._dir} keep vanishing while opening a cursor")

    def _open(self, seg: SegmentFile) -> bool:
        """Open ``seg`` and place the position after its header; False if it vanished."""
        self._close_fd()
        try:
            fd = os.open(seg.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        first = decode_header(os.pread(fd, SEGMENT_HEADER_SIZE, 0), seg.path)
        if first is None:
            os.close(fd)
            raise WALCorruptionError(
                f"wal: damaged segment header in '{seg.path}' at position 0; "
                "open the WAL with a writer to repair it",
                segment=str(seg.path),
                offset=0,
            )
        self._fd, self._seg = fd, seg
        self._buf, self._buf_off = b"", SEGMENT_HEADER_SIZE
        self._pos = SEGMENT_HEADER_SIZE
        return True

    def _fill(self, need: int) -> int:
        """Buffer at least ``need`` bytes from the position if the file has them; return how many."""
        rel = self._pos - self._buf_off
        have = len(self._buf) - rel
        if have >= need:
            return have
        if rel:
            self._buf = self._buf[rel:]
            self._buf_off = self._pos
        while have < need:
            data = os.pread(self._fd, max(need - have, _CHUNK_BYTES), self._buf_off + len(self._buf))
            if not data:
                break
            self._buf += data
            have += len(data)
        return have

    def _check_here(self) -> tuple[frame.Check, frame.FrameHeader | None]:
        need = frame.HEADER_SIZE
        while True:
            have = self._fill(need)
            rel = self._pos - self._buf_off
            status, header = frame.check(self._buf, rel, rel + have)
            if status is frame.Check.INCOMPLETE and have >= frame.HEADER_SIZE:
                size = frame.peek(self._buf, rel).size
                if need < size:
                    need = size
                    continue
            return status, header

    def _forget_tail(self) -> None:
        """Drop buffered bytes from the position on, so they are re-read from disk next time."""
        self._buf = self._buf[: self._pos - self._buf_off]

    def _move_on(self) -> bool:
        """Handle a position without a whole frame; True if reading can continue now."""
        assert self._seg is not None
        current = self._seg
        later = [s for s in list_segments(self._dir) if s.first_seq > current.first_seq]
        self._forget_tail()
        if not later:
            if self._replaced():
                after = self._after
                self._close_fd()
                self._after = after
                return self._open_first()
            return False
        # Re-check after listing: the writer may have completed this frame and rolled since.
        status, _ = self._check_here()
        if status is frame.Check.OK:
            return True
        if self._fill(1) == 0:
            for seg in later:
                if self._open(seg):
                    return True
            return self._open_first()
        raise WALCorruptionError(
            f"wal: damaged frame in '{current.path}' at position {self._pos}; "
            "reopen the WAL with a writer to quarantine it",
            segment=str(current.path),
            offset=self._pos,
        )

    def _replaced(self) -> bool:
        """True if a restarted writer repaired (rewrote) the segment under our fd."""
        assert self._seg is not None
        try:
            return os.stat(self._seg.path).st_ino != os.fstat(self._fd).st_ino
        except FileNotFoundError:
            return False


def unacked_summary(segments: list[SegmentFile], acked_seq: int) -> tuple[int, int | None]:
    """Return (bytes of frames after ``acked_seq``, append time in ns of the first of them).

    Walks headers of one segment only (the one holding ``acked_seq + 1``), without CRC
    checks except on the frame it reports, so it is cheap enough for a metrics poll.
    """
    backlog = 0
    oldest: int | None = None
    start = 0
    for i, seg in enumerate(segments):
        if seg.first_seq <= acked_seq + 1:
            start = i
    for seg in segments[start:]:
        try:
            with open(seg.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size <= SEGMENT_HEADER_SIZE:
                    continue
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                    pos = SEGMENT_HEADER_SIZE
                    if oldest is None:
                        while pos + frame.HEADER_SIZE <= size:
                            header = frame.peek(mm, pos)
                            if header.seq > acked_seq:
                                status, checked = frame.check(mm, pos, size)
                                if status is frame.Check.OK and checked is not None:
                                    oldest = checked.time_ns
                                break
                            pos += header.size
                    backlog += max(0, size - pos)
        except (FileNotFoundError, ValueError):
            continue
    return backlog, oldest


def last_frame_seq(path: Path) -> int | None:
    """Return the seq of the last whole, valid frame in a segment (walking every frame)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size <= SEGMENT_HEADER_SIZE:
                return None
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                pos, last = SEGMENT_HEADER_SIZE, None
                while True:
                    status, header = frame.check(mm, pos, size)
                    if status is not frame.Check.OK or header is None:
                        return last
                    last, pos = header.seq, pos + header.size
    except FileNotFoundError:
        return None


def count_entries(directory: Path, suffix: str) -> int:
    """Count files ending in ``suffix`` in ``directory`` (0 if it does not exist)."""
    try:
        return sum(1 for n in os.listdir(directory) if n.endswith(suffix))
    except FileNotFoundError:
        return 0


class WALReader:
    """A read-only view of a WAL directory for other processes (CLI, monitoring).

    Takes no lock and writes nothing, so it may run beside the writer: an incomplete
    frame at the live tail is "not yet written", and segments deleted after an ack are
    skipped. Counters that only the writer process knows (fsyncs, appends, dropped,
    faults, recoveries, lost_frames, failed) are reported as None.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise WALError(f"wal: no WAL directory at {self.directory}")
        self._segments_dir = self.directory / SEGMENTS_DIR

    @property
    def acked_seq(self) -> int:
        """The acked seq in the checkpoint file (0 if none or damaged)."""
        ckpt, _raw = checkpoint.read(self.directory)
        return ckpt.acked_seq if ckpt is not None else 0

    def cursor(self, after: int = 0) -> WALCursor:
        """Return a cursor positioned after ``after``; close it when done."""
        return WALCursor(self._segments_dir, after)

    def read(self, after: int = 0) -> Iterator[tuple[int, bytes]]:
        """Yield (seq, payload) after ``after`` to the current end, in bounded memory."""
        with self.cursor(after) as cur:
            yield from cur

    def stats(self) -> dict[str, Any]:
        """Return the same keys as ``WAL.stats()`` plus ``lock_holder_pid``, read from disk."""
        segments = list_segments(self._segments_dir)
        last = 0
        for seg in reversed(segments):
            seq = last_frame_seq(seg.path)
            if seq is not None:
                last = seq
                break
        # Read the checkpoint after the segments: a live writer makes it durable before it
        # deletes the segments it covers, so a segment that vanished during the walk above
        # is covered by this value and last_seq never reads below a seq already delivered.
        acked = self.acked_seq
        last = max(last, acked)
        sizes = 0
        for seg in segments:
            try:
                sizes += seg.path.stat().st_size
            except FileNotFoundError:
                pass
        backlog_bytes, oldest = unacked_summary(segments, acked)
        return {
            "backlog_records": max(0, last - acked),
            "backlog_bytes": backlog_bytes,
            "segments": len(segments),
            "first_seq": segments[0].first_seq if segments and last >= segments[0].first_seq else 0,
            "last_seq": last,
            "acked_seq": acked,
            "oldest_unacked_age": None if oldest is None else max(0.0, time.time() - oldest / 1e9),
            "dead_letter_count": count_entries(self.directory / DEAD_LETTER_DIR, ".json"),
            "quarantine_count": count_entries(self.directory / QUARANTINE_DIR, ""),
            "quarantined_frames": None,
            "dropped": None,
            "fsyncs": None,
            "appends": None,
            "bytes_on_disk": sizes,
            "faults": None,
            "recoveries": None,
            "lost_frames": None,
            "failed": None,
            "lock_holder_pid": lock.holder_pid(self.directory),
        }
