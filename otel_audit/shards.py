"""The shards of a WAL root: one complete WAL per process, found, claimed, budgeted and removed without coordination.

Layout (see docs/multiprocess.md)::

    <root>/                     the root shard: a complete WAL (LOCK, segments/, checkpoint, contexts/, ...)
    <root>/shards/<id>/         one more complete WAL per extra process, same layout
    <root>/shards/.lock         flock held while a process claims a shard or changes its reservation
    <shard>/shard-id            the shard's producer id, written once (the ``otel_audit.shard.id`` resource attribute)
    <shard>/budget              the live writer's share of ``max_bytes`` in bytes (a hint for the others)

The WAL's LOCK (an OFD lock that dies with its process) is the only ownership record: a shard whose
LOCK nobody holds is an orphan, and whoever takes the lock next owns it. The root is a shard like
the others, so a single process uses ``<root>`` exactly as before shards existed, and a WAL written
by an older version is adopted as the root shard.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from otel_audit.exceptions import ConfigError, WALError, WALLockedError
from otel_audit.export.requeue import pending as requeue_pending
from otel_audit.wal import WAL, WALReader, fileio
from otel_audit.wal.lock import LOCK_NAME, DirLock, holder_pid, read_pid
from otel_audit.wal.reader import SEGMENTS_DIR

_log = logging.getLogger("otel_audit.shards")

SHARDS_DIRNAME = "shards"
SHARD_ID_ATTRIBUTE = "otel_audit.shard.id"
"""Resource attribute naming the producer: the shard, stable across the processes that write it."""
SHARD_ID_FILE = "shard-id"
BUDGET_FILE = "budget"
ROOT_LOCK = ".lock"

NEW_SHARD_GRACE_SECONDS = 60.0
"""A shard directory without a pid in LOCK is being created; only after this long is it abandoned."""

_HIDDEN = "."  # trash and lock files under shards/ start with a dot and are never shards

OpenWAL = Callable[[Path], WAL]


@dataclass(frozen=True)
class ShardStatus:
    """What an operator sees of one shard (``otel-audit status``), read without taking its lock."""

    id: str
    path: Path
    is_root: bool
    holder_pid: int | None
    """The live writer's pid; None for an orphan waiting to be adopted (or an empty root)."""
    stats: dict[str, Any]
    """``WALReader.stats()`` of the shard (backlog_records, backlog_bytes, dead_letter_count, ...)."""


class ShardRoot:
    """The shards under one ``wal_dir``. Stateless: every method reads the directory afresh."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.shards_dir = self.root / SHARDS_DIRNAME

    # -- looking -------------------------------------------------------------------------------

    def paths(self) -> list[Path]:
        """Every shard: the root first (when it is a WAL), then ``shards/*`` by name."""
        out = [self.root] if (self.root / SEGMENTS_DIR).is_dir() else []
        try:
            names = sorted(os.listdir(self.shards_dir))
        except (FileNotFoundError, NotADirectoryError):
            return out
        out.extend(
            self.shards_dir / n for n in names if not n.startswith(_HIDDEN) and (self.shards_dir / n).is_dir()
        )
        return out

    def new_path(self) -> Path:
        return self.shards_dir / secrets.token_hex(8)

    def status(self) -> list[ShardStatus]:
        """Each shard's holder and backlog, for the CLI; totals are the sums of ``stats``."""
        result = []
        for path in self.paths():
            try:
                stats = WALReader(path).stats()
            except (WALError, OSError):
                continue  # removed meanwhile
            result.append(
                ShardStatus(shard_id(path), path, path == self.root, stats.get("lock_holder_pid"), stats)
            )
        return result

    # -- claiming ------------------------------------------------------------------------------

    def claim_own(self, open_wal: OpenWAL) -> WAL:
        """Give a starting process its shard: an orphan with a backlog first, else the root, else a new one.

        Taking the orphan's backlog as its own keeps the producer's order: its records stay in place
        and are sent before anything the new process appends. Empty orphans met on the way are removed.
        A lone process therefore always writes the root, exactly as before shards existed.
        """
        with self.locked():
            wal = self._adopt(open_wal, exclude=None)
            if wal is not None:
                return wal
            candidates = [self.root] + [self.new_path() for _ in range(8)]
            for path in candidates:
                if holder_pid(path) is not None:
                    continue  # the root is taken (a random name is never)
                try:
                    wal = open_wal(path)
                except WALLockedError:
                    continue  # taken by a process of an older version, which does not use the claim lock
                ensure_shard_id(path, is_root=path == self.root)
                return wal
        raise WALError(f"could not create a shard under {self.shards_dir}: every new name was taken")

    def adopt_orphan(self, open_wal: OpenWAL, *, exclude: Path) -> WAL | None:
        """Lock one orphan with a backlog (to drain it), removing empty orphans met on the way; None if none."""
        with self.locked():
            return self._adopt(open_wal, exclude=exclude)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold ``shards/.lock``: one process at a time opens shards it does not own or changes its budget.

        Opening a WAL prepares its directory before taking LOCK, so two processes opening the same
        orphan at once could trip over each other's files; under this lock they take turns. It is a
        flock on a descriptor of its own, never nested (a second flock in the same process would wait
        for the first).
        """
        # makedirs gives the root and every parent it creates 0700 (mkdir(parents=True) would
        # leave them at the umask's default) and fsyncs the new names.
        fileio.makedirs(self.shards_dir)
        fd = os.open(self.shards_dir / ROOT_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                # Unlock explicitly, not just close: a child forked meanwhile shares the descriptor,
                # and its copy would otherwise keep the whole root locked for as long as it lives.
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _adopt(self, open_wal: OpenWAL, *, exclude: Path | None) -> WAL | None:
        now = time.time()
        for path in self.paths():
            if path == exclude or not _maybe_orphan(path, now):
                continue
            if not _has_segments(path):
                # Nothing to send: remove it unless it holds what an operator needs (dead letters,
                # quarantine); the root stays, empty, for the next process to write.
                self.remove(path)
                continue
            try:
                wal = open_wal(path)
            except (WALLockedError, FileNotFoundError):
                continue  # another process was faster
            except (WALError, ConfigError, OSError) as exc:
                _log.warning("cannot open orphan shard %s: %s; leaving it for an operator", path, exc)
                continue
            if wal.last_seq > wal.acked_seq:
                ensure_shard_id(path, is_root=path == self.root)
                _log.info(
                    "adopted orphan shard %s (last writer pid %s): %d records to send",
                    path,
                    read_pid(path / LOCK_NAME),
                    wal.last_seq - wal.acked_seq,
                )
                return wal
            wal.close()
            self.remove(path)
        return None

    # -- removing ------------------------------------------------------------------------------

    def remove(self, path: Path) -> bool:
        """Delete a drained shard nobody holds; True if it is gone.

        Under its lock, the shard is checked (no backlog, no dead letter, no quarantined bytes, no
        requeued entry) and renamed out of ``shards/`` before the lock is released, so no process can
        open it half-deleted. The root is never removed. A shard with dead letters stays for the operator.
        """
        if path == self.root:
            return False
        try:
            lock = DirLock.acquire(path)
        except (WALLockedError, FileNotFoundError):
            return False
        try:
            if not is_drained(path):
                return False
            trash = self.shards_dir / f"{_HIDDEN}removed-{path.name}-{os.getpid()}"
            try:
                os.rename(path, trash)
            except OSError as exc:
                _log.warning("cannot remove drained shard %s: %s", path, exc)
                return False
        finally:
            lock.release()
        shutil.rmtree(trash, ignore_errors=True)
        _log.info("removed drained shard %s", path)
        return True


def _maybe_orphan(path: Path, now: float) -> bool:
    """Unlocked, and either a writer once held it (pid in LOCK) or it was abandoned while being created."""
    if holder_pid(path) is not None:
        return False
    lock_path = path / LOCK_NAME
    if read_pid(lock_path) is not None:
        return True
    try:
        return now - path.stat().st_mtime > NEW_SHARD_GRACE_SECONDS
    except FileNotFoundError:
        return False


def _has_segments(path: Path) -> bool:
    try:
        return any(n.endswith(".wal") for n in os.listdir(path / SEGMENTS_DIR))
    except FileNotFoundError:
        return False


def is_drained(path: Path) -> bool:
    """No record left to send and nothing kept for an operator: the shard may be deleted."""
    try:
        stats = WALReader(path).stats()
    except WALError:
        return not path.exists()
    return (
        stats["backlog_records"] == 0
        and stats["dead_letter_count"] == 0
        and stats["quarantine_count"] == 0
        and not requeue_pending(path)
    )


def shard_id(path: Path) -> str:
    """The producer id of a shard: ``shard-id`` if written, else the directory name."""
    try:
        text = (path / SHARD_ID_FILE).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        text = ""
    return text or path.name


def ensure_shard_id(path: Path, *, is_root: bool) -> str:
    """Write ``shard-id`` once and return it: a shard's is its directory name, the root's is random.

    The root's id is random too (not a fixed name) because the id is the producer's identity in the
    collector: two hosts running the same service must not both be producer "root".
    """
    try:
        text = (path / SHARD_ID_FILE).read_text().strip()
    except FileNotFoundError:
        text = ""
    if text:
        return text
    new = secrets.token_hex(8) if is_root else path.name
    _write_small(path / SHARD_ID_FILE, new, sync=True)
    return new


def _write_small(path: Path, text: str, *, sync: bool) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text.encode())
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


# -- the byte budget ----------------------------------------------------------------------------


class ShardBudget:
    """Splits ``max_bytes`` among the shards of a root so the root as a whole stays under it.

    Every live writer holds a reservation, written in ``<shard>/budget``; an orphan holds exactly
    the bytes of its segments (nobody appends to it, so it only shrinks). A writer changes its own
    reservation only under ``shards/.budget.lock``, and only takes what the others leave free, so
    the reservations never add up to more than ``max_bytes``. Each aims at a fair share,
    ``(max_bytes - orphan bytes) / live writers``, and never goes below what its WAL already holds
    (nothing unsent is ever evicted) nor below ``floor_bytes`` (one segment, so any record that
    fits a segment can always be written eventually). So the root can exceed ``max_bytes`` only by
    those floors, when more processes start than the budget has room for.
    """

    def __init__(self, roots: ShardRoot, max_bytes: int, floor_bytes: int) -> None:
        self._roots = roots
        self.max_bytes = max_bytes
        self.floor_bytes = floor_bytes

    def reserve(self, path: Path, used_bytes: int) -> int:
        """Recompute ``path``'s reservation (its writer holds its lock) and return it."""
        with self._roots.locked():
            others = 0
            orphans = 0
            live = 1
            for other in self._roots.paths():
                if other == path:
                    continue
                pid = holder_pid(other)
                if pid is None:
                    size = segment_bytes(other)
                    orphans += size
                    others += size
                else:
                    live += 1
                    others += max(read_budget(other) or 0, segment_bytes(other))
            fair = max(0, self.max_bytes - orphans) // live
            free = max(0, self.max_bytes - others)
            cap = max(used_bytes, self.floor_bytes, min(fair, free))
            _write_small(path / BUDGET_FILE, str(cap), sync=False)
            return cap


def mark_draining(path: Path) -> None:
    """An adopted orphan only shrinks: reserve nothing beyond its segments (a dead writer's share is stale)."""
    _write_small(path / BUDGET_FILE, "0", sync=False)


def read_budget(path: Path) -> int | None:
    try:
        text = (path / BUDGET_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def segment_bytes(path: Path) -> int:
    """Bytes of a shard's segment files, as its WAL counts them against ``max_bytes``."""
    total = 0
    try:
        entries = list(os.scandir(path / SEGMENTS_DIR))
    except FileNotFoundError:
        return 0
    for entry in entries:
        if entry.name.endswith(".wal"):
            with contextlib.suppress(FileNotFoundError):
                total += entry.stat().st_size
    return total


def set_wal_cap(wal: WAL, max_bytes: int) -> None:
    """Change a live WAL's ``max_bytes``: the WAL reads its options on every append."""
    if wal.options.max_bytes != max_bytes:
        wal.options = replace(wal.options, max_bytes=max_bytes)


__all__ = [
    "SHARDS_DIRNAME",
    "SHARD_ID_ATTRIBUTE",
    "ShardBudget",
    "ShardRoot",
    "ShardStatus",
    "ensure_shard_id",
    "is_drained",
    "mark_draining",
    "segment_bytes",
    "set_wal_cap",
    "shard_id",
]
