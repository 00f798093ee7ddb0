"""The dead-letter requeue inbox: entries an operator sent back while the app held the WAL, appended by its sender."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Protocol

from otel_audit.exceptions import WALCorruptionError
from otel_audit.wal import deadletter
from otel_audit.wal.deadletter import DeadLetterEntry
from otel_audit.wal.segment import fsync_dir

_log = logging.getLogger("otel_audit.export")

REQUEUE_DIR = "requeue"
"""Inbox under ``dead-letter/``: entries moved here keep their ``<seq>.frame`` + ``<seq>.json`` pair."""


class AppendableWAL(Protocol):
    directory: Path

    def append(self, payload: bytes) -> int: ...


def inbox(wal_dir: Path) -> Path:
    return wal_dir / deadletter.DEAD_LETTER_DIR / REQUEUE_DIR


def pending(wal_dir: Path) -> list[int]:
    """Seqs waiting in the inbox, oldest first. A sidecar is moved in last, so it always has its frame."""
    try:
        names = os.listdir(inbox(wal_dir))
    except FileNotFoundError:
        return []
    return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())


def drain_inbox(wal: AppendableWAL) -> int:
    """Append every waiting entry to the WAL (a new seq, the same record bytes), then delete it.

    The append comes first, so a crash in between leaves a duplicate (same ``audit.record.id``,
    deduplicated downstream), never a loss. A damaged frame is renamed ``.damaged`` and left for the
    operator instead of blocking the entries behind it. Returns how many were appended.
    """
    box = inbox(wal.directory)
    done = 0
    for seq in pending(wal.directory):
        meta_path = box / f"{seq:020d}.json"
        frame_path = box / f"{seq:020d}.frame"
        try:
            meta = json.loads(meta_path.read_text())
            entry = DeadLetterEntry(
                seq, str(meta.get("reason", "")), str(meta.get("time", "")), int(meta.get("payload_bytes", 0)),
                frame_path, meta_path,
            )
            payload = deadletter.read_payload(entry)
        except (OSError, ValueError, WALCorruptionError) as exc:
            _log.error("requeued dead letter %s is unreadable and is left as .damaged: %s", meta_path, exc)
            os.replace(meta_path, meta_path.with_name(meta_path.name + ".damaged"))
            continue
        new_seq = wal.append(payload)
        frame_path.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)
        done += 1
        _log.info("requeued dead letter seq %d appended again as seq %d", seq, new_seq)
    if done:
        fsync_dir(box)
    return done
