"""Start-up repair: verify each frame, copy damaged bytes to quarantine/, then cut or rewrite."""

from __future__ import annotations

import logging
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

from . import fileio, frame
from .segment import FILE_MODE, SegmentFile, decode_header, encode_header
from .segment import HEADER_SIZE as SEGMENT_HEADER_SIZE

log = logging.getLogger("otel_audit.wal")


@dataclass
class RepairResult:
    """What one segment holds after repair; ``last_seq`` is None when no frame survived."""

    first_seq: int
    path: Path
    size: int
    last_seq: int | None
    quarantined_regions: int = 0
    lost_frames: int = 0


def _resync(mm: mmap.mmap, damage_start: int, size: int, expected: int) -> int | None:
    """Return the offset of the next frame that can be trusted after damage, or None.

    A candidate needs the frame magic, a valid CRC, a seq not below ``expected`` (seqs
    only increase) and no more lost seqs than frames that fit in the damaged bytes
    (each frame is at least a header long): together that rejects a frame-shaped
    payload as well as a random match.
    """
    pos = damage_start + 1
    while True:
        pos = mm.find(frame.FRAME_MAGIC, pos, size)
        if pos < 0:
            return None
        status, header = frame.check(mm, pos, size)
        if (
            status is frame.Check.OK
            and header is not None
            and header.seq >= expected
            and (header.seq - expected) * frame.HEADER_SIZE <= pos - damage_start
        ):
            return pos
        pos += 1


def _quarantine_bytes(quarantine_dir: Path, name: str, data: bytes) -> None:
    """Keep damaged bytes for a human to inspect; failing to (disk full) must not stop recovery."""
    try:
        fd = fileio.open(
            quarantine_dir / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE
        )
        try:
            fileio.write_all(fd, data)
            fileio.fsync(fd)
        finally:
            fileio.close(fd)
        fileio.fsync_dir(quarantine_dir)
    except OSError as exc:
        log.error("wal: could not copy %d damaged bytes to %s/%s: %s", len(data), quarantine_dir, name, exc)


def quarantine_file(path: Path, quarantine_dir: Path, why: str) -> None:
    """Move a whole file into quarantine/ (a rename: needs no free space)."""
    target = quarantine_dir / f"{path.name}.{why}"
    log.warning("wal: %s: %s; moved to %s", path, why, target)
    fileio.replace(path, target)
    fileio.fsync_dir(quarantine_dir)
    fileio.fsync_dir(path.parent)


def repair_segment(seg: SegmentFile, quarantine_dir: Path, *, after_seq: int) -> RepairResult | None:
    """Verify every frame of ``seg``; return what survives, or None if the file was removed.

    ``after_seq`` is the last seq of the previous segment: every frame here must be above
    it. Damage followed by a valid frame is copied to quarantine/ and the segment is
    rewritten without it; damage running to the end (a torn tail) is copied and then cut
    off with ftruncate, as etcd's repair does after writing its ``.broken`` copy.

    Raises:
        WALFormatError: the segment was written by another format version.
    """
    path = seg.path
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        first = decode_header(f.read(SEGMENT_HEADER_SIZE), path)
        header_bad = first is None or first != seg.first_seq
        if size < SEGMENT_HEADER_SIZE:
            # Not even a header: nothing in here was ever a frame (creation is tmp+rename).
            f.close()
            if size:
                quarantine_file(path, quarantine_dir, "bad-header")
            else:
                fileio.unlink(path)
            return None
        first = seg.first_seq  # the name is the fallback when the header is damaged
        if size == SEGMENT_HEADER_SIZE and not header_bad:
            return RepairResult(first, path, size, None)
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            regions, last, lost, torn_frame = _scan(mm, size, max(first, after_seq + 1))
            if not regions and not header_bad:
                return RepairResult(first, path, size, last)
            if header_bad:
                _quarantine_bytes(
                    quarantine_dir, f"{path.name}.{0:012d}.bad-header", mm[:SEGMENT_HEADER_SIZE]
                )
            for start, stop in regions:
                kind = "torn" if stop == size else "bad"
                _quarantine_bytes(quarantine_dir, f"{path.name}.{start:012d}.{kind}", mm[start:stop])
            good = _complement(regions, size)
            new_size = sum(b - a for a, b in good)
            if not header_bad and len(regions) == 1 and regions[0][1] == size:
                _truncate(path, regions[0][0])
            else:
                _rewrite(path, mm, first, good)
    if header_bad:
        log.warning("wal: damaged header in '%s' at position 0; rebuilt from the file name", path)
        regions.insert(0, (0, SEGMENT_HEADER_SIZE))
    lost += torn_frame
    for start, stop in regions:
        log.warning(
            "wal: damaged bytes in '%s' at position %d (%d bytes, %s); copied to %s and removed",
            path,
            start,
            stop - start,
            "torn tail" if stop == size else "mid-segment",
            quarantine_dir,
        )
    if last is None:
        fileio.unlink(path)
        return RepairResult(first, path, 0, None, len(regions), lost)
    return RepairResult(first, path, new_size, last, len(regions), lost)


def _scan(mm: mmap.mmap, size: int, expected: int) -> tuple[list[tuple[int, int]], int | None, int, int]:
    """Walk the frames; return damaged (start, stop) regions, last good seq, lost seqs, torn frames."""
    regions: list[tuple[int, int]] = []
    pos, last, lost, torn = SEGMENT_HEADER_SIZE, None, 0, 0
    while pos < size:
        status, header = frame.check(mm, pos, size)
        if status is frame.Check.OK and header is not None and header.seq >= expected:
            lost += header.seq - expected
            last, expected, pos = header.seq, header.seq + 1, pos + header.size
            continue
        nxt = _resync(mm, pos, size, expected)
        if nxt is None:
            # A whole frame whose CRC fails was written and then damaged (counts as lost);
            # a frame running past the end is an append a crash cut short (never acked).
            torn = 1 if status is frame.Check.BAD and size - pos >= frame.HEADER_SIZE else 0
            regions.append((pos, size))
            break
        regions.append((pos, nxt))
        pos = nxt
    return regions, last, lost, torn


def _complement(regions: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """Return the byte ranges outside ``regions``, the segment header included."""
    good, pos = [], 0
    for start, stop in regions:
        if start > pos:
            good.append((pos, start))
        pos = stop
    if pos < size:
        good.append((pos, size))
    return good


def _truncate(path: Path, offset: int) -> None:
    fd = fileio.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        fileio.ftruncate(fd, offset)
        fileio.fsync(fd)
    finally:
        fileio.close(fd)


def _rewrite(path: Path, mm: mmap.mmap, first_seq: int, good: list[tuple[int, int]]) -> None:
    """Write a fresh header and the good frame ranges to a new file, renamed over the segment."""
    tmp = path.with_name(path.name + ".repair")
    fd = fileio.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        fileio.write_all(fd, encode_header(first_seq))
        for start, stop in good:
            start = max(start, SEGMENT_HEADER_SIZE)
            if start >= stop:
                continue
            view = memoryview(mm)[start:stop]
            try:
                fileio.write_all(fd, view)
            finally:
                view.release()
        fileio.fsync(fd)
    finally:
        fileio.close(fd)
    fileio.replace(tmp, path)
    fileio.fsync_dir(path.parent)
