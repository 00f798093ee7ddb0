"""The WAL's one door for every change it makes on disk, so tests can record or fail each call."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path

# Each name is bound to the ``os`` function itself: ``fileio.write(fd, data)`` costs one
# attribute lookup, exactly like ``os.write(fd, data)``, so production pays nothing for
# the layer. ``interposed()`` rebinds these module attributes for the duration of a test,
# which is why callers must write ``fileio.write(...)`` and never import the names.
# Reads (pread, mmap, listdir, stat) stay on ``os``: they change nothing a crash could lose;
# ``dup`` is here only so a recorder can follow the fd that the group-commit leader fsyncs.
open = os.open
write = os.write
pwrite = os.pwrite
fsync = os.fsync
ftruncate = os.ftruncate
rename = os.rename
replace = os.replace
unlink = os.unlink
mkdir = os.mkdir
close = os.close
dup = os.dup

OPERATIONS = (
    "open",
    "write",
    "pwrite",
    "fsync",
    "ftruncate",
    "rename",
    "replace",
    "unlink",
    "mkdir",
    "close",
    "dup",
)


class Layer:
    """The operations as methods; subclass and override to record or inject faults (tests only).

    Every method must behave like its ``os`` namesake: same arguments, same return
    value, an ``OSError`` with an errno on failure.
    """

    def open(self, path: str | os.PathLike[str], flags: int, mode: int = 0o777) -> int:
        return os.open(path, flags, mode)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        return os.write(fd, data)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        return os.pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def ftruncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def rename(self, src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        os.rename(src, dst)

    def replace(self, src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        os.replace(src, dst)

    def unlink(self, path: str | os.PathLike[str]) -> None:
        os.unlink(path)

    def mkdir(self, path: str | os.PathLike[str], mode: int = 0o777) -> None:
        os.mkdir(path, mode)

    def close(self, fd: int) -> None:
        os.close(fd)

    def dup(self, fd: int) -> int:
        return os.dup(fd)


@contextlib.contextmanager
def interposed(layer: Layer) -> Iterator[Layer]:
    """Route every WAL file operation through ``layer`` until the block exits (not thread-scoped).

    Meant for tests: the crash-state enumeration records each call, fault tests fail
    chosen ones. Nesting is allowed; each exit restores what was bound before it.
    """
    module = globals()
    saved = {name: module[name] for name in OPERATIONS}
    try:
        for name in OPERATIONS:
            module[name] = getattr(layer, name)
        yield layer
    finally:
        module.update(saved)


# -- helpers built only from the operations above, so they are recorded too ----------------


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte of ``data`` at the fd's position (``os.write`` may write less)."""
    view = memoryview(data)
    while view:
        view = view[write(fd, view) :]


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Make a file creation, rename or removal in ``path`` durable."""
    fd = open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fsync(fd)
    finally:
        close(fd)


def makedirs(path: Path, mode: int = 0o700) -> None:
    """Create ``path`` and missing parents, fsyncing each parent so the new names survive power loss.

    Without the parent's fsync a directory created just before a crash may vanish with
    everything later fsynced inside it: fsyncing a file does not make its name durable.
    """
    missing: list[Path] = []
    probe = path
    while not probe.is_dir():
        if probe.exists() or probe.parent == probe:
            break  # a file in the way: mkdir below reports it
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            mkdir(directory, mode)
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue  # created concurrently by someone else, who owns its durability
        fsync_dir(directory.parent)
    if not missing and not path.is_dir():
        raise FileExistsError(errno.EEXIST, "exists and is not a directory", str(path))
