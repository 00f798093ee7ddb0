"""The persisted ack checkpoint: the highest seq the layer above has confirmed delivered."""

from __future__ import annotations

import errno
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from otel_audit.exceptions import WALFormatError

from . import fileio
from .segment import FILE_MODE

CHECKPOINT_MAGIC = b"OTAUDCKP"
CHECKPOINT_VERSION = 1
# magic, version, reserved (0), acked seq, crc32 of the preceding bytes.
_LAYOUT = struct.Struct("<8sHHQI")
CHECKPOINT_NAME = "checkpoint"


@dataclass(frozen=True)
class Checkpoint:
    """The acked seq, as stored in ``<dir>/checkpoint`` (one 24-byte record, or two: see ``write``).

    Do not add fields to this class or change ``_LAYOUT``: doing so changes the
    serialized representation, and every existing WAL would read as damaged. A new
    field needs a new CHECKPOINT_VERSION and a reader for the old one.

    The checkpoint also keeps seqs increasing across restarts: once every segment is
    acked and deleted, ``acked_seq`` is the only record of the last seq ever issued.
    """

    acked_seq: int

    def encode(self) -> bytes:
        prefix = _LAYOUT.pack(CHECKPOINT_MAGIC, CHECKPOINT_VERSION, 0, self.acked_seq, 0)[:-4]
        return prefix + zlib.crc32(prefix).to_bytes(4, "little")

    @classmethod
    def decode(cls, data: bytes, path: Path) -> Checkpoint | None:
        """Return the checkpoint in ``data``, or None if the bytes are damaged.

        Raises:
            WALFormatError: an intact checkpoint of another format version.
        """
        if len(data) != _LAYOUT.size:
            return None
        magic, version, reserved, acked, crc = _LAYOUT.unpack(data)
        if magic != CHECKPOINT_MAGIC or reserved != 0 or zlib.crc32(data[:-4]) != crc:
            return None
        if version != CHECKPOINT_VERSION:
            raise WALFormatError(
                f"wal: checkpoint {path} has version {version}, this otel-audit reads version "
                f"{CHECKPOINT_VERSION}; open it with the otel-audit release that wrote it"
            )
        return cls(int(acked))


def decode_file(data: bytes, path: Path) -> Checkpoint | None:
    """Return the newest valid record of a checkpoint file (one or two slots), None if none is valid."""
    size = _LAYOUT.size
    if len(data) not in (size, 2 * size):
        return None
    found = [c for i in range(0, len(data), size) if (c := Checkpoint.decode(data[i : i + size], path))]
    return max(found, key=lambda c: c.acked_seq, default=None)


def read(directory: Path) -> tuple[Checkpoint | None, bytes | None]:
    """Return (checkpoint, raw bytes); (None, None) when absent, (None, raw) when damaged."""
    path = directory / CHECKPOINT_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, None
    return decode_file(data, path), data


def write(directory: Path, checkpoint: Checkpoint, *, sync: bool = True) -> None:
    """Replace the checkpoint atomically: write a temp file, fsync, rename, fsync the dir.

    When the disk is full the temp file cannot be created, yet acking is exactly what
    frees space. Then we write in place, into the file's *other* 24-byte slot: the one
    that does not hold the newest valid record (a one-record file grows to two, inside
    the block it already has, so this needs no free space). A power cut mid-write tears
    only that slot; the reader takes the newest valid slot, so the checkpoint falls back
    to the previous durable ack (records re-sent) and never to "nothing acked", which
    after every segment was deleted would restart seqs at 1. The next ack with room
    restores a one-record file by rename.
    """
    path = directory / CHECKPOINT_NAME
    tmp = directory / (CHECKPOINT_NAME + ".tmp")
    data = checkpoint.encode()
    try:
        fd = fileio.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
        try:
            if fileio.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, "short write", str(tmp))
            if sync:
                fileio.fsync(fd)
        finally:
            fileio.close(fd)
        fileio.rename(tmp, path)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or not path.exists():
            raise
        _unlink_quietly(tmp)
        fd = fileio.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            offset = _free_slot(os.pread(fd, 2 * _LAYOUT.size + 1, 0), path)
            if fileio.pwrite(fd, data, offset) != len(data):
                raise OSError(errno.ENOSPC, "short write", str(path)) from exc
            if sync:
                fileio.fsync(fd)
        finally:
            fileio.close(fd)
        return
    if sync:
        fileio.fsync_dir(directory)


def _free_slot(current: bytes, path: Path) -> int:
    """Offset of the slot an in-place write may overwrite: never the newest valid record."""
    size = _LAYOUT.size
    if len(current) != 2 * size:
        return size if len(current) == size and Checkpoint.decode(current, path) else 0
    first, second = Checkpoint.decode(current[:size], path), Checkpoint.decode(current[size:], path)
    if first is None:
        return 0
    if second is None:
        return size
    return 0 if first.acked_seq <= second.acked_seq else size


def _unlink_quietly(path: Path) -> None:
    try:
        fileio.unlink(path)
    except FileNotFoundError:
        pass
