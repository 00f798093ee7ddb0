"""Put dead-lettered records back in line: straight into an idle WAL, or via an inbox the running sender drains."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from otel_audit.exceptions import WALLockedError
from otel_audit.export.requeue import inbox
from otel_audit.wal import deadletter
from otel_audit.wal.deadletter import DeadLetterEntry
from otel_audit.wal.lock import holder_pid
from otel_audit.wal.segment import fsync_dir
from otel_audit.wal.wal import WAL


@dataclass(frozen=True)
class RequeueResult:
    """What happened: `appended` (new seqs, WAL was idle) or `queued` (inbox, a writer holds the WAL)."""

    mode: str
    seqs: tuple[int, ...]
    new_seqs: tuple[int, ...] = ()
    writer_pid: int | None = None


def requeue(wal_dir: Path, entries: Sequence[DeadLetterEntry]) -> RequeueResult:
    """Requeue `entries`, choosing the path by who holds the WAL's LOCK.

    Idle WAL: every payload is appended (fsynced) with a new seq before its entry is deleted, so a
    crash in between leaves a duplicate (same record id, deduplicated downstream), never a loss.
    Locked WAL: we may not write it, so each entry is renamed into `dead-letter/requeue/` (frame
    first, sidecar last: a sidecar there always has its frame) for the running sender to append.
    """
    payloads = [deadletter.read_payload(e) for e in entries]  # refuse damaged frames before moving anything
    seqs = tuple(e.seq for e in entries)
    pid = holder_pid(wal_dir)
    if pid is None:
        try:
            wal = WAL.open(wal_dir, durability="always")
        except WALLockedError as exc:  # the application started meanwhile
            pid = exc.pid
        else:
            with wal:
                new = tuple(wal.append(p) for p in payloads)
            for entry in entries:
                entry.meta_path.unlink(missing_ok=True)
                entry.frame_path.unlink(missing_ok=True)
            fsync_dir(wal_dir / deadletter.DEAD_LETTER_DIR)
            return RequeueResult("appended", seqs, new_seqs=new)
    box = inbox(wal_dir)
    box.mkdir(mode=0o700, exist_ok=True)
    for entry in entries:
        os.replace(entry.frame_path, box / entry.frame_path.name)
        os.replace(entry.meta_path, box / entry.meta_path.name)
    fsync_dir(box)
    fsync_dir(box.parent)
    return RequeueResult("queued", seqs, writer_pid=pid)
