"""Segment files: names, the small header each starts with, and creating one safely."""

from __future__ import annotations

import os
import re
import struct
import zlib
from pathlib import Path
from typing import NamedTuple

from otel_audit.exceptions import WALFormatError

from . import fileio
from .fileio import fsync_dir as fsync_dir  # re-exported: other layers fsync their directories with it

SEGMENT_MAGIC = b"OTAUDSEG"
FORMAT_VERSION = 1
# magic, format version, reserved (0), first seq, crc32 of the preceding bytes.
_HEADER = struct.Struct("<8sHHQI")
HEADER_SIZE = _HEADER.size  # 24
SUFFIX = ".wal"
_NAME = re.compile(r"^(\d{20})\.wal$")
FILE_MODE = 0o600


class SegmentFile(NamedTuple):
    """A segment found on disk, named after the seq of its first frame."""

    first_seq: int
    path: Path


def segment_name(first_seq: int) -> str:
    """Return the file name for a segment; 20 digits so names sort as numbers."""
    return f"{first_seq:020d}{SUFFIX}"


def parse_name(name: str) -> int | None:
    """Return the first seq a segment file name encodes, or None for a foreign name."""
    m = _NAME.match(name)
    return int(m.group(1)) if m else None


def list_segments(segments_dir: Path) -> list[SegmentFile]:
    """Return the segments in ``segments_dir`` in seq order, ignoring any other name."""
    try:
        names = os.listdir(segments_dir)
    except FileNotFoundError:
        return []
    found = [SegmentFile(seq, segments_dir / n) for n in names if (seq := parse_name(n)) is not None]
    found.sort()
    return found


def encode_header(first_seq: int) -> bytes:
    """Return the header that opens a segment whose first frame will be ``first_seq``."""
    prefix = struct.pack("<8sHHQ", SEGMENT_MAGIC, FORMAT_VERSION, 0, first_seq)
    return prefix + zlib.crc32(prefix).to_bytes(4, "little")


def decode_header(data: bytes, path: Path) -> int | None:
    """Return the first seq in a segment header, or None when the header is damaged.

    Raises:
        WALFormatError: the header is intact but written by another format version;
            guessing at its layout could destroy data, so we refuse to open.
    """
    if len(data) < HEADER_SIZE:
        return None
    magic, version, reserved, first_seq, crc = _HEADER.unpack_from(data, 0)
    if magic != SEGMENT_MAGIC or zlib.crc32(data[: HEADER_SIZE - 4]) != crc or reserved != 0:
        return None
    if version != FORMAT_VERSION:
        raise WALFormatError(
            f"wal: segment {path} has format version {version}, this otel-audit reads version "
            f"{FORMAT_VERSION}; open it with the otel-audit release that wrote it"
        )
    return int(first_seq)


def create(segments_dir: Path, first_seq: int, *, sync: bool) -> tuple[Path, int]:
    """Create a segment holding only its header; return its path and a read-write fd at its end.

    The header is written to a temporary name and renamed into place, so a crash never
    leaves a ``.wal`` file without a whole header. With ``sync`` the header is fsynced
    before the rename and the directory after it: a segment that a later fsync made
    durable must not lose its name to a power cut. The fd is read-write so that the
    writer can copy the segment into a fresh file after an I/O error (``writer.py``).
    A leftover ``.tmp`` is removed at open.
    """
    path = segments_dir / segment_name(first_seq)
    tmp = path.with_name(path.name + ".tmp")
    fd = fileio.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        fileio.write_all(fd, encode_header(first_seq))
        if sync:
            fileio.fsync(fd)
        fileio.rename(tmp, path)
        if sync:
            fileio.fsync_dir(segments_dir)
    except BaseException:
        fileio.close(fd)
        try:
            fileio.unlink(tmp)
        except OSError:
            pass
        raise
    return path, fd
