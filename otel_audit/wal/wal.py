"""The WAL object: ties lock, recovery, writer, cursors, checkpoint and full policy together."""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from otel_audit.exceptions import ConfigError, WALError, WALFullError, WALRecordTooLargeError

from . import checkpoint, deadletter, fileio, frame, repair, segment
from .lock import LOCK_NAME, DirLock
from .options import Durability, FullPolicy, WALOptions
from .reader import (
    DEAD_LETTER_DIR,
    QUARANTINE_DIR,
    SEGMENTS_DIR,
    WALCursor,
    count_entries,
    unacked_summary,
)
from .segment import SegmentFile
from .writer import SegmentState, SegmentWriter

log = logging.getLogger("otel_audit.wal")

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# While the disk is full nobody may notify us when space returns (another program may
# free it), so a blocked append re-tries its write this often.
_DISK_FULL_POLL_SECONDS = 0.05
_ACK_CATCH_UP_SECONDS = 5.0
_DROP_WARNING_SECONDS = 10.0
# After an I/O fault, appends fail at once for this long before the WAL tries to rewrite
# the active segment into a fresh file; the delay doubles on every failed attempt up to
# the maximum, so a dead disk is not hammered with segment copies by every caller.
_RECOVERY_FIRST_DELAY_SECONDS = 0.1
_RECOVERY_MAX_DELAY_SECONDS = 5.0
# How often an append checks that LOCK and the active segment are still the files at their
# paths (never mode has no fsync to notice a deleted directory sooner). In ns, compared with
# the timestamp the append takes anyway, so between two checks it costs one comparison.
_FILES_CHECK_NS = 1_000_000_000

_LIVE: weakref.WeakSet[WAL] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for wal in list(_LIVE):
        wal._abandon_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


class WAL:
    """An append-only, segmented, checksummed log of opaque payloads (format: ``otel_audit.wal``).

    Thread-safe. One writer per directory, enforced by ``LOCK``. Create with ``WAL.open``.
    """

    def __init__(self, directory: Path, options: WALOptions, lock: DirLock) -> None:
        self.directory = directory
        self.options = options
        self._dir_lock = lock
        self._segments_dir = directory / SEGMENTS_DIR
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._ack_lock = threading.Lock()
        self._closed = False
        self._pid = os.getpid()
        self._forked_into: int | None = None
        self._appends = 0
        self._dropped = 0
        self._dropped_unwarned = 0
        self._last_drop_warning = 0.0
        self._quarantined_frames = 0
        self._dead_letters = 0
        self._acked = 0
        self._recoveries = 0
        self._seen_faults = 0
        self._recovery_delay = _RECOVERY_FIRST_DELAY_SECONDS
        self._next_recovery_at = 0.0
        self._next_files_check_ns = 0
        self._abandoned = False  # another process owns the directory now: never write there again
        self._writer: SegmentWriter

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        durability: Durability | str = Durability.INTERVAL,
        fsync_interval: float = 0.2,
        segment_bytes: int = 32 << 20,
        max_bytes: int = 1 << 30,
        full_policy: FullPolicy | str = FullPolicy.BLOCK,
        full_timeout: float = 10.0,
    ) -> WAL:
        """Lock ``directory`` (created with parents, mode 0700), verify and repair it, and return the WAL.

        Every unacked frame is CRC-checked; torn tails are cut and damage is moved to
        ``quarantine/`` with a warning, never raised. Names in the directory that the
        WAL does not own (``LOCK``, ``segments/``, ``checkpoint``, ``dead-letter/``,
        ``quarantine/``) are left alone.

        Raises:
            ConfigError: a bad option, or ``directory`` is a file or cannot be created/written.
            WALFullError: the disk is too full to create the directory's subdirectories.
            WALLockedError: another WAL object holds the directory (its pid is in the error).
            WALFormatError: the directory was written by another format version.
        """
        options = WALOptions.parse(
            durability=durability,
            fsync_interval=fsync_interval,
            segment_bytes=segment_bytes,
            max_bytes=max_bytes,
            full_policy=full_policy,
            full_timeout=full_timeout,
        )
        path = Path(directory)
        _prepare_directory(path)
        lock = DirLock.acquire(path)
        wal = cls(path, options, lock)
        try:
            wal._recover()
        except BaseException:
            lock.release()
            raise
        _LIVE.add(wal)
        return wal

    def _recover(self) -> None:
        sync = self.options.durability is not Durability.NEVER
        quarantine_dir = self.directory / QUARANTINE_DIR
        for name in os.listdir(self._segments_dir):
            if name.endswith((".tmp", ".repair")):
                fileio.unlink(self._segments_dir / name)
        ckpt, raw = checkpoint.read(self.directory)
        if ckpt is None and raw is not None:
            repair.quarantine_file(
                self.directory / checkpoint.CHECKPOINT_NAME, quarantine_dir, "bad-checkpoint"
            )
        acked = ckpt.acked_seq if ckpt is not None else 0
        found = segment.list_segments(self._segments_dir)
        states: list[SegmentState] = []
        high = acked  # highest seq ever issued, as far as the disk remembers
        prev_last = 0
        for i, seg in enumerate(found):
            nxt = found[i + 1].first_seq if i + 1 < len(found) else None
            if nxt is not None and nxt - 1 <= acked:
                fileio.unlink(seg.path)  # fully acked; an ack crashed before deleting it
                prev_last = max(prev_last, nxt - 1)
                continue
            result = repair.repair_segment(seg, quarantine_dir, after_seq=prev_last)
            if result is None:
                continue
            self._quarantined_frames += result.lost_frames
            high = max(high, result.first_seq - 1)
            if result.last_seq is None:
                if result.size:  # header only: keep it only if appends can continue in it
                    states.append(
                        SegmentState(result.first_seq, result.path, result.size, result.first_seq - 1)
                    )
                continue
            if i > 0 and states and not states[-1].empty and result.first_seq > states[-1].last_seq + 1:
                self._quarantined_frames += result.first_seq - states[-1].last_seq - 1
            prev_last = high = max(high, result.last_seq)
            states.append(SegmentState(result.first_seq, result.path, result.size, result.last_seq))
        # After a power cut the checkpoint can name a seq above every frame that survived:
        # the sender delivered and acked frames the writer had not fsynced yet. Those seqs
        # were issued, so numbering goes on above them (high starts at acked): restarting
        # at the last surviving frame would give new records seqs at or below acked_seq,
        # and every reader, which starts after acked_seq, would skip them.
        next_seq = high + 1
        # Empty segments are only useful as the active one, starting exactly at next_seq.
        for st in [s for s in states if s.empty and (s is not states[-1] or s.first_seq != next_seq)]:
            fileio.unlink(st.path)
            states.remove(st)
        if states and not states[-1].empty and states[-1].last_seq <= acked:
            fileio.unlink(states.pop().path)
        if sync:
            # What we keep may be only in the page cache (the last process was killed before
            # its fsync): make it durable now, or the interval bound would not hold for it.
            for st in states:
                _fsync_file(st.path)
            fileio.fsync_dir(self._segments_dir)
        if ckpt is None:
            try:
                checkpoint.write(self.directory, checkpoint.Checkpoint(acked), sync=sync)
            except OSError as exc:
                if exc.errno not in _NO_SPACE:
                    raise
                # A full disk is a runtime condition (full_policy), not a reason to refuse to
                # open: acked_seq is known in memory and the first ack that fits writes it.
                log.warning(
                    "wal: no space to write %s at open (%s); the next ack writes it",
                    self.directory / checkpoint.CHECKPOINT_NAME,
                    exc.strerror,
                )
        self._acked = acked
        self._dead_letters = count_entries(self.directory / DEAD_LETTER_DIR, ".json")
        self._writer = SegmentWriter(
            self._segments_dir,
            states,
            next_seq,
            segment_bytes=self.options.segment_bytes,
            durability=self.options.durability,
            fsync_interval=self.options.fsync_interval,
            lock=self._lock,
            on_failed_tick=self._resume_on_tick,
        )

    # -- state -----------------------------------------------------------------------------

    @property
    def acked_seq(self) -> int:
        """The highest acked seq (persisted in ``checkpoint``); 0 when nothing was acked."""
        return self._acked

    @property
    def last_seq(self) -> int:
        """The highest seq written (after a restart: the highest remembered); 0 when empty."""
        return self._writer.written_seq

    # -- appending -------------------------------------------------------------------------

    def append(self, payload: bytes, *, sync: bool = True) -> int:
        """Append one payload; return its seq (strictly increasing from 1), or 0 if dropped.

        On return the frame is written to the file (survives SIGKILL) and, in ``always``
        mode, fsynced. ``sync=False`` skips that fsync so a caller holding its own lock can
        release it before waiting on the disk, then call :meth:`sync_to` (group commit keeps
        working across callers). 0 is returned only under ``full_policy="drop_newest"`` when the WAL
        is full: the payload was not stored.

        Raises:
            WALFullError: full, and the policy is ``raise``, or ``block`` timed out.
            WALRecordTooLargeError: the payload can never fit (frame limit or max_bytes).
            WALError: the WAL is closed, used in a forked child, or the disk failed.
        """
        return self._append([payload], sync)[0]

    def append_many(self, payloads: Iterable[bytes], *, sync: bool = True) -> list[int]:
        """Append payloads with one write and (in ``always`` mode) one fsync; return their seqs.

        All-or-nothing: under ``drop_newest`` a full WAL drops the whole batch and every
        returned seq is 0. Same guarantees and errors as ``append``.
        """
        return self._append(list(payloads), sync)

    def sync_to(self, seq: int) -> None:
        """Return once every frame up to ``seq`` is durable per the mode (fsynced in ``always``).

        Concurrent callers share one fsync (leader/follower). A no-op in ``interval`` and
        ``never`` modes, whose promise does not include the fsync.

        Raises:
            WALError: an earlier fsync failed; nothing since the last good one is trusted.
        """
        if self.options.durability is Durability.ALWAYS and seq > 0:
            self._writer.sync_to(seq)

    def _append(self, payloads: list[bytes], sync: bool = True) -> list[int]:
        self._check_usable()
        if not payloads:
            return []
        size = 0
        for i, p in enumerate(payloads):
            if not isinstance(p, bytes):
                payloads[i] = p = bytes(p)
            if len(p) > frame.MAX_PAYLOAD_BYTES:
                raise WALRecordTooLargeError(
                    f"wal: payload of {len(p)} bytes exceeds the frame limit of {frame.MAX_PAYLOAD_BYTES} bytes"
                )
            size += frame.HEADER_SIZE + len(p)
        if size + segment.HEADER_SIZE > self.options.max_bytes:
            raise WALRecordTooLargeError(
                f"wal: {size} bytes of frames can never fit in max_bytes={self.options.max_bytes}"
            )
        deadline: float | None = None
        with self._cond:
            while True:
                self._check_usable()
                if self._writer.failed is not None and not self._resume_after_fault():
                    raise self._writer.failed
                now_ns = time.time_ns()
                if now_ns >= self._next_files_check_ns:
                    self._next_files_check_ns = now_ns + _FILES_CHECK_NS
                    self._check_files()
                used = self._writer.total_bytes
                if used + self._writer.bytes_needed(size) > self.options.max_bytes:
                    reason = f"max_bytes={self.options.max_bytes} reached ({used} bytes in segments)"
                else:
                    try:
                        first = self._writer.write(payloads, now_ns)
                        break
                    except OSError as exc:
                        if exc.errno not in _NO_SPACE:
                            raise WALError(
                                f"wal: write to {self._segments_dir} failed: {exc.strerror} (errno {exc.errno})"
                            ) from exc
                        reason = f"disk full ({exc.strerror})"
                policy = self.options.full_policy
                if policy is FullPolicy.DROP_NEWEST:
                    self._note_drop(len(payloads), reason)
                    return [0] * len(payloads)
                if policy is FullPolicy.BLOCK:
                    now = time.monotonic()
                    if deadline is None:
                        deadline = now + self.options.full_timeout
                    if now < deadline:
                        wait = deadline - now
                        if reason.startswith("disk full"):
                            wait = min(wait, _DISK_FULL_POLL_SECONDS)
                        self._cond.wait(wait)
                        continue
                raise WALFullError(
                    f"wal: {self.directory} is full: {reason}; records are freed only when the "
                    "sender acks them (is the collector reachable?) or when disk space is freed"
                )
            self._appends += len(payloads)
            last = first + len(payloads) - 1
            self._cond.notify_all()
        if sync and self.options.durability is Durability.ALWAYS:
            self._writer.sync_to(last)
        return list(range(first, last + 1))

    # -- I/O faults ------------------------------------------------------------------------

    def _check_files(self) -> None:
        """Fail the writer if LOCK or the active segment was deleted or replaced. Caller holds the lock.

        Without LOCK another process could take the directory and write beside us.
        """
        self._writer.verify_active()
        if not self._dir_lock.still_ours():
            raise self._writer.fail(
                f"{self._dir_lock.path} was deleted or replaced by another program, so another "
                "process could lock this directory and write beside us"
            )

    def _resume_after_fault(self, *, now: bool = False) -> bool:
        """Try to leave the failed state; True if appends may go on. Caller holds the lock.

        Recreates what another program removed (directories, LOCK, checkpoint), then has
        the writer copy the active segment into a fresh fsynced file. Tried at most once
        per back-off delay (``now`` skips the wait: used by close).
        """
        writer = self._writer
        if self._abandoned:
            return False
        clock = time.monotonic()
        if writer.faults != self._seen_faults:  # a new fault: start the back-off afresh
            self._seen_faults = writer.faults
            self._recovery_delay = _RECOVERY_FIRST_DELAY_SECONDS
            self._next_recovery_at = writer.failed_at + self._recovery_delay
        if not now and clock < self._next_recovery_at:
            return False
        try:
            self._restore_directory()
            writer.rebuild(self._acked)
        except (OSError, WALError) as exc:
            self._recovery_delay = min(self._recovery_delay * 2, _RECOVERY_MAX_DELAY_SECONDS)
            self._next_recovery_at = time.monotonic() + self._recovery_delay
            log.warning(
                "wal: %s is still failing (%s); next attempt in %.1f s",
                self.directory,
                exc,
                self._recovery_delay,
            )
            return False
        self._recoveries += 1
        log.warning("wal: %s recovered from an I/O fault; appends resume", self.directory)
        return True

    def _resume_on_tick(self) -> None:
        """The interval fsync thread's chance to recover without waiting for an append."""
        with self._cond:
            if not self._closed and self._forked_into is None and self._writer.failed is not None:
                self._resume_after_fault()

    def _restore_directory(self) -> None:
        """Recreate the directories, LOCK and checkpoint if another program removed them."""
        for sub in (SEGMENTS_DIR, QUARANTINE_DIR, DEAD_LETTER_DIR):
            fileio.makedirs(self.directory / sub)
        if not self._dir_lock.still_ours():
            if (self.directory / LOCK_NAME).exists():
                # Someone made a new LOCK: another writer may have opened the directory and
                # issued the seqs we would issue. It is theirs now, for good.
                self._abandoned = True
                self._writer.failed = WALError(
                    f"wal: {self.directory / LOCK_NAME} was replaced while this WAL had it locked; "
                    "another process may own the directory now, so this WAL object will not write "
                    "there again. Close it and open the directory anew"
                )
                raise self._writer.failed
            # Raises WALLockedError if another process takes the new LOCK first.
            new_lock = DirLock.acquire(self.directory)
            self._dir_lock.release()
            self._dir_lock = new_lock
            log.error("wal: %s was removed under us; took a new lock", new_lock.path)
        if not (self.directory / checkpoint.CHECKPOINT_NAME).exists():
            checkpoint.write(
                self.directory,
                checkpoint.Checkpoint(self._acked),
                sync=self.options.durability is not Durability.NEVER,
            )

    def _note_drop(self, count: int, reason: str) -> None:
        """Count a drop and warn at most every few seconds (caller holds the lock)."""
        self._dropped += count
        self._dropped_unwarned += count
        now = time.monotonic()
        if now - self._last_drop_warning >= _DROP_WARNING_SECONDS:
            log.warning(
                "wal: %s is full (%s); dropped %d newest record(s) since the last warning, %d since open",
                self.directory,
                reason,
                self._dropped_unwarned,
                self._dropped,
            )
            self._dropped_unwarned = 0
            self._last_drop_warning = now

    def wait_for_append(self, after_seq: int, timeout: float) -> bool:
        """Block until ``last_seq > after_seq`` or ``timeout`` seconds pass (or the WAL closes)."""
        self._check_usable()
        with self._cond:
            return (
                self._cond.wait_for(lambda: self._writer.written_seq > after_seq or self._closed, timeout)
                and self._writer.written_seq > after_seq
            )

    # -- reading ---------------------------------------------------------------------------

    def cursor(self, after: int = 0) -> WALCursor:
        """Return a cursor that reads frames with seq > ``after``, following new appends.

        The cursor may return a frame whose ``append`` has not returned yet (written,
        fsync pending): harmless for a sender, which only acks after delivery.
        """
        self._check_usable()
        return WALCursor(self._segments_dir, after, guard=self._check_usable)

    def read(self, after: int = 0) -> Iterator[tuple[int, bytes]]:
        """Yield (seq, payload) for every frame after ``after`` up to the current end, in bounded memory."""
        with self.cursor(after) as cur:
            yield from cur

    # -- acking ----------------------------------------------------------------------------

    def ack(self, upto_seq: int) -> None:
        """Persist ``upto_seq`` as delivered and delete segments whose records are all acked.

        The checkpoint is durable (tmp, fsync, rename, fsync dir) before any segment is
        deleted, so a crash in between only leaves acked segments for the next open to
        delete. Acking at or below ``acked_seq`` does nothing.

        Raises:
            WALError: ``upto_seq`` is above ``last_seq``, or the checkpoint could not be written.
        """
        self._check_usable()
        if upto_seq > self._writer.written_seq:
            # A cursor may hand out a frame whose bytes are in the file while its append has not
            # returned yet (written_seq advances after os.write, once the writer has the GIL back).
            # That frame exists: give the writer a moment instead of failing the sender's ack.
            with self._cond:
                self._cond.wait_for(lambda: self._writer.written_seq >= upto_seq, _ACK_CATCH_UP_SECONDS)
        with self._ack_lock:
            if upto_seq <= self._acked:
                return
            last = self._writer.written_seq
            if upto_seq > last:
                raise WALError(f"wal: cannot ack seq {upto_seq}: the last seq written is {last}")
            try:
                checkpoint.write(
                    self.directory,
                    checkpoint.Checkpoint(upto_seq),
                    sync=self.options.durability is not Durability.NEVER,
                )
            except OSError as exc:
                raise WALError(
                    f"wal: could not write {self.directory / checkpoint.CHECKPOINT_NAME}: "
                    f"{exc.strerror} (errno {exc.errno}); the ack was not recorded"
                ) from exc
            with self._cond:
                self._acked = upto_seq
                self._writer.drop_acked(upto_seq)
                self._cond.notify_all()

    def dead_letter(self, seq: int, payload: bytes, reason: str) -> Path:
        """Persist a rejected record under ``dead-letter/`` (frame + JSON sidecar, fsynced).

        It does not ack ``seq``: the sender acks it like any other record once it has
        moved on. Read entries back with ``otel_audit.wal.deadletter``.
        """
        self._check_usable()
        path = deadletter.write(self.directory, seq, bytes(payload), reason, time_ns=time.time_ns())
        with self._lock:
            self._dead_letters = count_entries(self.directory / DEAD_LETTER_DIR, ".json")
        return path

    # -- stats -----------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Return counters and gauges for metrics; sizes are of the files this WAL tracks."""
        self._check_usable()
        with self._lock:
            segs = [SegmentFile(s.first_seq, s.path) for s in self._writer.segments]
            total = self._writer.total_bytes
            first = next((s.first_seq for s in self._writer.segments if not s.empty), 0)
            last = self._writer.written_seq
            acked = self._acked
            appends, dropped = self._appends, self._dropped
        backlog_bytes, oldest_ns = unacked_summary(segs, acked) if last > acked else (0, None)
        return {
            "backlog_records": max(0, last - acked),
            "backlog_bytes": backlog_bytes,
            "segments": len(segs),
            "first_seq": first,
            "last_seq": last,
            "acked_seq": acked,
            "oldest_unacked_age": None if oldest_ns is None else max(0.0, time.time() - oldest_ns / 1e9),
            "dead_letter_count": self._dead_letters,
            "quarantine_count": count_entries(self.directory / QUARANTINE_DIR, ""),
            "quarantined_frames": self._quarantined_frames,
            "dropped": dropped,
            "fsyncs": self._writer.fsyncs,
            "appends": appends,
            "bytes_on_disk": total,
            "faults": self._writer.faults,
            "recoveries": self._recoveries,
            "lost_frames": self._writer.lost_frames,
            "failed": None if self._writer.failed is None else str(self._writer.failed),
        }

    # -- lifecycle -------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._forked_into is not None:
            raise WALError(
                f"wal: WAL {self.directory} opened in pid {self._pid} cannot be used in forked "
                f"child {self._forked_into}; open a new one (with its own directory) in the child"
            )
        if self._closed:
            raise WALError(f"wal: WAL {self.directory} is closed")

    def _abandon_in_child(self) -> None:
        """Runs in a forked child: disown every fd without touching the parent's files or lock."""
        self._forked_into = os.getpid()
        self._dir_lock.forget_in_child()
        self._writer.forget_in_child()

    def close(self) -> None:
        """Fsync what is pending (unless durability is never), close files and release LOCK.

        Idempotent. In a forked child it only marks the object closed: the files and the
        lock belong to the parent.
        """
        if self._forked_into is not None:
            self._closed = True
            return
        with self._cond:
            if self._closed:
                return
            if self._writer.failed is not None:
                # Last chance for the records written since the fault: once we exit, pages
                # whose writeback failed are gone with the page cache.
                self._resume_after_fault(now=True)
            self._closed = True
            self._cond.notify_all()
        try:
            self._writer.close()
        finally:
            self._dir_lock.release()
            _LIVE.discard(self)

    def __enter__(self) -> WAL:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"WAL({str(self.directory)!r}, durability={self.options.durability.value!r})"


def _prepare_directory(path: Path) -> None:
    """Create the WAL directory and the subdirectories it owns, 0700, or explain why not.

    Each new directory's parent is fsynced: a segment fsynced inside a directory whose
    own creation was never made durable can vanish with it after a power cut.
    """
    if path.exists() and not path.is_dir():
        raise ConfigError(f"wal: {path} exists and is not a directory; choose another WAL directory")
    try:
        fileio.makedirs(path)
        for sub in (SEGMENTS_DIR, QUARANTINE_DIR, DEAD_LETTER_DIR):
            fileio.makedirs(path / sub)
        probe = path / SEGMENTS_DIR / ".write-probe.tmp"
        fileio.close(fileio.open(probe, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        fileio.unlink(probe)
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            if all((path / sub).is_dir() for sub in (SEGMENTS_DIR, QUARANTINE_DIR, DEAD_LETTER_DIR)):
                return  # a full disk is a runtime condition handled by full_policy, not a config error
            raise WALFullError(
                f"wal: no space to create the WAL directory {path} ({exc.strerror} at "
                f"{exc.filename or path}); free disk space or inodes and open it again"
            ) from exc
        raise ConfigError(
            f"wal: cannot use {path} as a WAL directory: {exc.strerror} (errno {exc.errno}) at "
            f"{exc.filename or path}; check its permissions and free space"
        ) from exc


def _fsync_file(path: Path) -> None:
    fd = fileio.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fileio.fsync(fd)
    finally:
        fileio.close(fd)
