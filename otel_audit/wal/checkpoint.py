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
    """The acked seq, as stored in ``<dir>/checkpoint`` (24 bytes).

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


def read(directory: Path) -> tuple[Checkpoint | None, bytes | None]:
    """Return (checkpoint, raw bytes); (None, None) when absent, (None, raw) when damaged."""
    path = directory / CHECKPOINT_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, None
    return Checkpoint.decode(data, path), data


def write(directory: Path, checkpoint: Checkpoint, *, sync: bool = True) -> None:
    """Replace the checkpoint atomically: write a temp file, fsync, rename, fsync the dir.

    When the disk is full the temp file cannot be created, yet acking is exactly what
    frees space. Then we overwrite the existing 24-byte file in place (one sector, so
    not torn in practice; a torn one fails its CRC and reads as "nothing acked", which
    re-sends records rather than losing them) and let the next ack restore the rename.
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
        fd = fileio.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            if fileio.pwrite(fd, data, 0) != len(data):
                raise OSError(errno.ENOSPC, "short write", str(path)) from exc
            if sync:
                fileio.fsync(fd)
        finally:
            fileio.close(fd)
        return
    if sync:
        fileio.fsync_dir(directory)


def _unlink_quietly(path: Path) -> None:
    try:
        fileio.unlink(path)
    except FileNotFoundError:
        pass
