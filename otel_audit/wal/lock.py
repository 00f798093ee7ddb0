"""The directory's LOCK: one writer per WAL, and who that writer is, without taking it."""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from pathlib import Path

from otel_audit.exceptions import WALError, WALLockedError

from . import fileio
from .segment import FILE_MODE

LOCK_NAME = "LOCK"
# Open-file-description locks, not classic POSIX record locks: a POSIX lock is dropped
# when the process closes *any* fd to the file, so a WALReader or a second WAL.open in
# the same process would silently release the writer's lock. OFD locks belong to the
# open file description: they conflict inside one process too, and only an explicit
# unlock or closing the last fd that shares the description releases them.
_F_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", 36)
_F_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)
# struct flock on 64-bit Linux: l_type, l_whence, l_start, l_len, l_pid, padding.
_FLOCK = struct.Struct("@hhqqi4x")


def _flock(lock_type: int) -> bytes:
    return _FLOCK.pack(lock_type, os.SEEK_SET, 0, 0, 0)


class DirLock:
    """An exclusive lock on ``<dir>/LOCK`` with the holder's pid written inside."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd

    @classmethod
    def acquire(cls, directory: Path) -> DirLock:
        """Take the lock or fail at once.

        Raises:
            WALLockedError: another WAL object (this or another process) holds it.
        """
        path = directory / LOCK_NAME
        fd = fileio.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            fcntl.fcntl(fd, _F_OFD_SETLK, _flock(fcntl.F_WRLCK))
        except OSError as exc:
            fileio.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise WALError(f"wal: cannot lock {path}: {exc.strerror} (errno {exc.errno})") from exc
            pid = read_pid(path)
            who = f"pid {pid}" if pid is not None else "an unknown process"
            if pid == os.getpid():
                who += " (this process: close the other WAL object first)"
            raise WALLockedError(
                f"wal: {path} is locked by {who}; is another process using this WAL directory? "
                "Use a separate directory per process.",
                pid=pid,
            ) from None
        try:
            fileio.ftruncate(fd, 0)
            fileio.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            # The pid is only a hint for the error message of a second writer; the lock is held.
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                fileio.close(fd)
                raise WALError(f"wal: cannot write {path}: {exc.strerror} (errno {exc.errno})") from exc
        return cls(path, fd)

    def still_ours(self) -> bool:
        """False if ``LOCK`` was deleted or replaced under us: another process could then lock the directory."""
        if self._fd < 0:
            return False
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(self._fd)
        return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)

    def release(self) -> None:
        """Unlock and close; call only in the process that acquired the lock."""
        if self._fd < 0:
            return
        try:
            fcntl.fcntl(self._fd, _F_OFD_SETLK, _flock(fcntl.F_UNLCK))
        finally:
            fileio.close(self._fd)
            self._fd = -1

    def forget_in_child(self) -> None:
        """Close a forked child's copy of the fd without unlocking.

        The child shares the parent's open file description, so an explicit unlock here
        would drop the parent's lock; plain close only drops the child's reference, and
        keeps a long-lived child from holding the lock after its parent died.
        """
        if self._fd >= 0:
            try:
                fileio.close(self._fd)
            except OSError:
                pass
            self._fd = -1


def read_pid(path: Path) -> int | None:
    """Return the pid written in a LOCK file, or None if absent or unreadable."""
    try:
        text = path.read_text().strip()
    except (FileNotFoundError, PermissionError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def holder_pid(directory: Path) -> int | None:
    """Return the pid of the writer holding ``<dir>/LOCK``, or None if nobody holds it.

    Tests the lock with F_OFD_GETLK, so it never takes it and never disturbs the holder.
    """
    path = directory / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        result = fcntl.fcntl(fd, _F_OFD_GETLK, _flock(fcntl.F_WRLCK))
    finally:
        os.close(fd)
    lock_type = _FLOCK.unpack(result)[0]
    if lock_type == fcntl.F_UNLCK:
        return None
    return read_pid(path)
