"""Record the WAL's file operations and build the disks a power cut could leave behind (ALICE, CrashMonkey).

The recorder sits in ``otel_audit.wal.fileio`` (the WAL's only door for changes on disk)
and keeps a model of inodes and directory entries beside the real files. The crash
model then answers: if power failed after the first ``k`` operations, which disks may
the machine boot with?

* Everything an fsync covered is there: file content up to the file's last fsync, and
  each create, mkdir, rename or unlink whose directory was fsynced after it.
* Of a file's later writes and truncates, any prefix survives, the last one cut at any
  byte (mid-frame included); optionally the cut-off bytes read back as zeros (the size
  reached the disk, the data did not).
* Directory operations not yet made durable survive as a prefix, in issue order (a
  journal commits them in order); a file whose name did not survive is lost whole.

Not modelled (documented in docs/power-loss.md): reordering of one file's unsynced
writes beyond "prefix", and lying disks that drop data they acknowledged on fsync.
"""

from __future__ import annotations

import bisect
import os
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from otel_audit.wal import fileio, frame

CONTENT = ("write", "trunc")
METADATA = ("create", "mkdir", "rename", "unlink")


@dataclass(frozen=True)
class Op:
    """One recorded operation, already completed when recorded (``t``: monotonic time after it)."""

    index: int
    kind: str  # write, trunc, fsync, dirsync, create, mkdir, rename, unlink
    t: float
    ino: int = -1
    offset: int = 0
    data: bytes = b""
    parent: int = -1
    name: str = ""
    dst_parent: int = -1
    dst_name: str = ""

    def describe(self, paths: dict[int, str]) -> str:
        where = paths.get(self.ino, f"ino{self.ino}")
        if self.kind == "write":
            return f"#{self.index} write {where} @{self.offset} +{len(self.data)}"
        if self.kind == "trunc":
            return f"#{self.index} truncate {where} to {self.offset}"
        if self.kind in ("fsync", "dirsync"):
            return f"#{self.index} {self.kind} {where}"
        if self.kind == "rename":
            return f"#{self.index} rename {self.name} -> {self.dst_name}"
        return f"#{self.index} {self.kind} {self.name}"


class Recorder(fileio.Layer):
    """Performs every operation for real and records it, with a live model of the namespace."""

    def __init__(self, root: Path) -> None:
        self.root = os.path.abspath(root)
        self.ops: list[Op] = []
        self.lock = threading.RLock()
        self._next_ino = 1
        self.dirs: dict[int, dict[str, int]] = {}
        self.initial_content: dict[int, bytes] = {}
        self.paths: dict[int, str] = {}  # last path seen per inode, for messages
        self._fds: dict[int, int] = {}
        self.root_ino = self._snapshot(self.root)
        self.initial_dirs = {d: dict(entries) for d, entries in self.dirs.items()}
        # fault(operation, path) -> errno to fail that call with, or None: disk faults
        # injected into a recorded run ("fsync_failed" is recorded, with no durability).
        self.fault: Callable[[str, str], int | None] | None = None

    def _maybe_fail(self, operation: str, path: str, ino: int = -1) -> None:
        if self.fault is not None and (err := self.fault(operation, path)) is not None:
            if operation == "fsync":
                self._record("fsync_failed", ino=ino)
            raise OSError(err, os.strerror(err), path)

    # -- model helpers ---------------------------------------------------------------------

    def _new_ino(self) -> int:
        ino = self._next_ino
        self._next_ino += 1
        return ino

    def _snapshot(self, path: str) -> int:
        ino = self._new_ino()
        self.paths[ino] = path
        if os.path.isdir(path):
            self.dirs[ino] = {}
            for name in sorted(os.listdir(path)):
                self.dirs[ino][name] = self._snapshot(os.path.join(path, name))
        else:
            with open(path, "rb") as f:
                self.initial_content[ino] = f.read()
        return ino

    def _split(self, path: str | os.PathLike[str]) -> tuple[int, str, str]:
        """Return (parent inode, name, absolute path) of ``path``, which must lie under the root."""
        full = os.path.abspath(os.fspath(path))
        rel = os.path.relpath(full, self.root)
        assert not rel.startswith(".."), f"the WAL touched {full}, outside the recorded root {self.root}"
        parts = rel.split(os.sep)
        ino = self.root_ino
        for part in parts[:-1]:
            ino = self.dirs[ino][part]
        return ino, parts[-1], full

    def _record(self, kind: str, **fields: object) -> None:
        self.ops.append(Op(len(self.ops), kind, time.monotonic(), **fields))  # type: ignore[arg-type]

    def mark(self) -> tuple[int, float]:
        """(operations so far, now): call right after an append or ack returned."""
        with self.lock:
            return len(self.ops), time.monotonic()

    # -- the layer -------------------------------------------------------------------------

    def open(self, path: str | os.PathLike[str], flags: int, mode: int = 0o777) -> int:
        with self.lock:
            if os.path.abspath(os.fspath(path)) == self.root:
                fd = os.open(path, flags, mode)
                self._fds[fd] = self.root_ino
                return fd
            parent, name, full = self._split(path)
            self._maybe_fail("open", full)
            existed = name in self.dirs[parent]
            assert existed == os.path.lexists(full), f"model out of step with the disk at {full}"
            fd = os.open(path, flags, mode)
            if not existed:
                ino = self._new_ino()
                self.dirs[parent][name] = ino
                self._record("create", ino=ino, parent=parent, name=name)
            else:
                ino = self.dirs[parent][name]
                if flags & os.O_TRUNC and ino not in self.dirs:
                    self._record("trunc", ino=ino, offset=0)
            self.paths[ino] = full
            self._fds[fd] = ino
            return fd

    def write(self, fd: int, data: bytes | memoryview) -> int:
        with self.lock:
            self._maybe_fail("write", self.paths[self._fds[fd]])
            pos = os.lseek(fd, 0, os.SEEK_CUR)
            n = os.write(fd, data)
            self._record("write", ino=self._fds[fd], offset=pos, data=bytes(data[:n]))
            return n

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int) -> int:
        with self.lock:
            n = os.pwrite(fd, data, offset)
            self._record("write", ino=self._fds[fd], offset=offset, data=bytes(data[:n]))
            return n

    def fsync(self, fd: int) -> None:
        with self.lock:
            ino = self._fds[fd]
            self._maybe_fail("fsync", self.paths[ino], ino)
            os.fsync(fd)
            self._record("dirsync" if ino in self.dirs else "fsync", ino=ino)

    def ftruncate(self, fd: int, length: int) -> None:
        with self.lock:
            os.ftruncate(fd, length)
            self._record("trunc", ino=self._fds[fd], offset=length)

    def _move(self, src: str | os.PathLike[str], dst: str | os.PathLike[str], *, replace: bool) -> None:
        with self.lock:
            sp, sn, _ = self._split(src)
            dp, dn, dfull = self._split(dst)
            (os.replace if replace else os.rename)(src, dst)
            ino = self.dirs[sp].pop(sn)
            self.dirs[dp][dn] = ino
            self.paths[ino] = dfull
            self._record("rename", ino=ino, parent=sp, name=sn, dst_parent=dp, dst_name=dn)

    def rename(self, src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        self._move(src, dst, replace=False)

    def replace(self, src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        self._move(src, dst, replace=True)

    def unlink(self, path: str | os.PathLike[str]) -> None:
        with self.lock:
            parent, name, _ = self._split(path)
            os.unlink(path)
            ino = self.dirs[parent].pop(name)
            self._record("unlink", ino=ino, parent=parent, name=name)

    def mkdir(self, path: str | os.PathLike[str], mode: int = 0o777) -> None:
        with self.lock:
            parent, name, full = self._split(path)
            os.mkdir(path, mode)
            ino = self._new_ino()
            self.dirs[ino] = {}
            self.dirs[parent][name] = ino
            self.paths[ino] = full
            self._record("mkdir", ino=ino, parent=parent, name=name)

    def close(self, fd: int) -> None:
        with self.lock:
            os.close(fd)
            self._fds.pop(fd, None)

    def dup(self, fd: int) -> int:
        with self.lock:
            new = os.dup(fd)
            self._fds[new] = self._fds[fd]
            return new


# -- the crash model ---------------------------------------------------------------------------


# A file's choice: apply its first ``applied`` pending content ops whole, then ``cut``
# bytes of the next one (a write), the rest of it zeros if ``zeros``.
@dataclass(frozen=True)
class FileChoice:
    applied: int
    cut: int = 0
    zeros: bool = False


@dataclass(frozen=True)
class Choice:
    """One disk after a crash at ``k``: how many unsynced directory ops survive, and each file's prefix."""

    k: int
    meta: int
    files: tuple[tuple[int, FileChoice], ...] = ()

    def describe(self) -> str:
        files = ", ".join(
            f"ino{ino}: {c.applied} ops + {c.cut} bytes{' +zeros' if c.zeros else ''}"
            for ino, c in self.files
        )
        return f"crash after {self.k} ops, {self.meta} unsynced dir ops kept, {files or 'no unsynced data'}"


State = dict[str, bytes | None]  # relative path -> content (None: a directory)


@dataclass
class CrashModel:
    """The disks possible after a power cut at each point of a recording."""

    rec: Recorder
    full: bool = False
    seed: int = 0
    _dirsyncs: dict[int, list[int]] = field(default_factory=dict)
    _fsyncs: dict[int, list[int]] = field(default_factory=dict)
    _content_ops: dict[int, list[Op]] = field(default_factory=dict)
    _durable_cache: dict[tuple[int, int], bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for op in self.rec.ops:
            if op.kind == "dirsync":
                self._dirsyncs.setdefault(op.ino, []).append(op.index)
            elif op.kind == "fsync":
                self._fsyncs.setdefault(op.ino, []).append(op.index)
            elif op.kind in CONTENT:
                self._content_ops.setdefault(op.ino, []).append(op)

    # -- durability rules --------------------------------------------------------------------

    def _synced_between(self, directory: int, after: int, before: int) -> bool:
        syncs = self._dirsyncs.get(directory, [])
        i = bisect.bisect_right(syncs, after)
        return i < len(syncs) and syncs[i] < before

    def _meta_durable(self, op: Op, k: int) -> bool:
        directory = op.dst_parent if op.kind == "rename" else op.parent
        return self._synced_between(directory, op.index, k)

    def _last_fsync(self, ino: int, k: int) -> int:
        syncs = self._fsyncs.get(ino, [])
        i = bisect.bisect_left(syncs, k)
        return syncs[i - 1] if i else -1

    def _durable_content(self, ino: int, upto: int) -> bytes:
        """Content after every content op with index below ``upto`` (a file's last fsync)."""
        key = (ino, upto)
        if key not in self._durable_cache:
            data = bytearray(self.rec.initial_content.get(ino, b""))
            for op in self._content_ops.get(ino, []):
                if op.index >= upto:
                    break
                _apply(data, op, len(op.data), False)
            self._durable_cache[key] = bytes(data)
        return self._durable_cache[key]

    def pending(self, ino: int, k: int) -> list[Op]:
        """Content ops on ``ino`` issued before ``k`` and after its last fsync."""
        last = self._last_fsync(ino, k)
        return [op for op in self._content_ops.get(ino, []) if last < op.index < k]

    def unsynced_meta(self, k: int) -> list[Op]:
        return [op for op in self.rec.ops[:k] if op.kind in METADATA and not self._meta_durable(op, k)]

    # -- building a disk ---------------------------------------------------------------------

    def materialize(self, choice: Choice) -> State:
        return self.materialize_with_inodes(choice)[0]

    def materialize_with_inodes(self, choice: Choice) -> tuple[State, dict[int, str]]:
        """The disk, and the path each reachable file inode has on it."""
        k = choice.k
        dirs = {d: dict(e) for d, e in self.rec.initial_dirs.items()}
        kept_unsynced = 0
        for op in self.rec.ops[:k]:
            if op.kind not in METADATA:
                continue
            if not self._meta_durable(op, k):
                if kept_unsynced >= choice.meta:
                    continue
                kept_unsynced += 1
            if op.kind == "mkdir":
                dirs[op.ino] = {}
            if op.kind in ("create", "mkdir"):
                dirs.setdefault(op.parent, {})[op.name] = op.ino
            elif op.kind == "unlink":
                if dirs.get(op.parent, {}).get(op.name) == op.ino:
                    del dirs[op.parent][op.name]
            elif op.kind == "rename":
                if dirs.get(op.parent, {}).get(op.name) == op.ino:
                    del dirs[op.parent][op.name]
                dirs.setdefault(op.dst_parent, {})[op.dst_name] = op.ino
        files = dict(choice.files)
        state: State = {}
        where: dict[int, str] = {}

        def walk(ino: int, rel: str) -> None:
            for name, child in dirs.get(ino, {}).items():
                path = f"{rel}{name}"
                if child in dirs:
                    state[path] = None
                    walk(child, path + "/")
                else:
                    state[path] = self._content(child, k, files.get(child))
                    where[child] = path

        walk(self.rec.root_ino, "")
        return state, where

    def _content(self, ino: int, k: int, choice: FileChoice | None) -> bytes:
        base = self._durable_content(ino, self._last_fsync(ino, k))
        pending = self.pending(ino, k)
        if choice is None or (choice.applied == 0 and choice.cut == 0):
            return base
        data = bytearray(base)
        for op in pending[: choice.applied]:
            _apply(data, op, len(op.data), False)
        if choice.applied < len(pending) and choice.cut:
            _apply(data, pending[choice.applied], choice.cut, choice.zeros)
        return bytes(data)

    # -- which disks to try --------------------------------------------------------------------

    def cuts(self, data: bytes) -> list[int]:
        """Byte counts of a write worth keeping: all in full mode, else frame boundaries and their edges."""
        if self.full:
            return list(range(len(data) + 1))
        marks = {0, 1, len(data) - 1, len(data)}
        pos = 0
        while pos + frame.HEADER_SIZE <= len(data) and data[pos : pos + 2] == frame.FRAME_MAGIC:
            size = frame.peek(data, pos).size
            for delta in (
                0,
                1,
                3,
                14,
                frame.HEADER_SIZE - 1,
                frame.HEADER_SIZE,
                frame.HEADER_SIZE + size // 2,
            ):
                marks.add(pos + delta)
            marks.add(pos + size - 1)
            marks.add(pos + size - 3)
            pos += size
        if pos == 0:
            marks.add(len(data) // 2)
        return sorted(m for m in marks if 0 <= m <= len(data))

    def choices(self) -> Iterator[Choice]:
        """Candidate disks for every crash point; the caller drops duplicates after materializing."""
        rng = random.Random(self.seed)
        ops = self.rec.ops
        for k in range(len(ops) + 1):
            meta_n = len(self.unsynced_meta(k))
            live = {ino: self.pending(ino, k) for ino in self._content_ops}
            live = {ino: p for ino, p in live.items() if p}

            def others(
                mode: str, skip: int = -1, live: dict[int, list[Op]] = live
            ) -> tuple[tuple[int, FileChoice], ...]:
                out = []
                for ino, pend in live.items():
                    if ino == skip:
                        continue
                    if mode == "none":
                        continue
                    if mode == "all":
                        out.append((ino, FileChoice(len(pend))))
                        continue
                    applied = rng.randint(0, len(pend))
                    cut = 0
                    if applied < len(pend) and pend[applied].kind == "write":
                        cut = rng.randint(0, len(pend[applied].data))
                    out.append((ino, FileChoice(applied, cut)))
                return tuple(out)

            yield Choice(k, 0, others("none"))
            yield Choice(k, meta_n, others("all"))
            if self.full:
                for m in range(meta_n + 1):
                    yield Choice(k, m, others("random"))
            if k == 0:
                continue
            last = ops[k - 1]
            if last.kind in METADATA:
                for m in {meta_n, max(0, meta_n - 1)}:
                    for mode in ("none", "all", "random"):
                        yield Choice(k, m, others(mode))
            elif last.kind == "write" and last.ino in live:
                pend = live[last.ino]
                applied = len(pend) - 1
                assert pend[applied] is last
                for cut in self.cuts(last.data):
                    for mode in (
                        ("none", "all", "random") if self.full else (rng.choice(("none", "all", "random")),)
                    ):
                        chosen = ((last.ino, FileChoice(applied, cut)), *others(mode, skip=last.ino))
                        yield Choice(k, meta_n if mode != "random" else rng.randint(0, meta_n), chosen)
                    if 0 < cut < len(last.data) and (self.full or rng.random() < 0.15):
                        yield Choice(k, meta_n, ((last.ino, FileChoice(applied, cut, zeros=True)),))
            elif last.kind == "trunc" and last.ino in live:
                yield Choice(
                    k, meta_n, ((last.ino, FileChoice(len(live[last.ino]))), *others("random", last.ino))
                )

    def final_state(self) -> State:
        """The disk with every recorded operation applied: must equal the real directory."""
        k = len(self.rec.ops)
        files = tuple((ino, FileChoice(len(self.pending(ino, k)))) for ino in self._content_ops)
        return self.materialize(Choice(k, len(self.unsynced_meta(k)), files))


def _apply(data: bytearray, op: Op, n: int, zeros: bool) -> None:
    if op.kind == "trunc":
        del data[op.offset :]
        data.extend(b"\0" * (op.offset - len(data)))
        return
    chunk = op.data[:n] + (b"\0" * (len(op.data) - n) if zeros else b"")
    end = op.offset + len(chunk)
    if len(data) < op.offset:
        data.extend(b"\0" * (op.offset - len(data)))
    data[op.offset : end] = chunk


def read_tree(root: Path) -> State:
    """The real directory in the same shape as a materialized state."""
    state: State = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        for d in dirnames:
            state[prefix + d] = None
        for f in filenames:
            with open(os.path.join(dirpath, f), "rb") as fh:
                state[prefix + f] = fh.read()
    return state


def write_tree(root: Path, state: State) -> None:
    """Replace ``root`` with the files of ``state``."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for rel in sorted(state):
        content = state[rel]
        path = root / rel
        if content is None:
            path.mkdir(exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)


def state_key(state: State) -> int:
    return hash(tuple(sorted(state.items(), key=lambda kv: kv[0])))
