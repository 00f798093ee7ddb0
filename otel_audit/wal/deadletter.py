"""Dead-letter entries: records the collector rejected for good, kept on disk for a human."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from otel_audit.exceptions import WALCorruptionError

from . import fileio, frame
from .segment import FILE_MODE

DEAD_LETTER_DIR = "dead-letter"
log = logging.getLogger("otel_audit.wal")


@dataclass(frozen=True)
class DeadLetterEntry:
    """One rejected record: ``<seq>.frame`` (the WAL frame bytes) plus ``<seq>.json`` (this)."""

    seq: int
    reason: str
    time: str  # RFC 3339, UTC
    payload_bytes: int
    frame_path: Path
    meta_path: Path


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = fileio.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        fileio.write_all(fd, data)
        fileio.fsync(fd)
    finally:
        fileio.close(fd)
    fileio.replace(tmp, path)


def write(directory: Path, seq: int, payload: bytes, reason: str, *, time_ns: int) -> Path:
    """Persist one rejected record under ``<directory>/dead-letter/``; return the frame file.

    The sidecar is written last, so an entry is listed only once both files are durable;
    writing the same seq again replaces the entry.
    """
    dl_dir = directory / DEAD_LETTER_DIR
    fileio.makedirs(dl_dir)
    frame_path = dl_dir / f"{seq:020d}.frame"
    meta_path = dl_dir / f"{seq:020d}.json"
    when = dt.datetime.fromtimestamp(time_ns / 1e9, tz=dt.UTC).isoformat().replace("+00:00", "Z")
    _write_durably(frame_path, frame.encode(seq, time_ns, payload))
    meta = {
        "seq": seq,
        "reason": reason,
        "time": when,
        "payload_bytes": len(payload),
        "frame": frame_path.name,
    }
    _write_durably(meta_path, json.dumps(meta, indent=2, sort_keys=True).encode() + b"\n")
    fileio.fsync_dir(dl_dir)
    return frame_path


def list_entries(directory: str | os.PathLike[str]) -> list[DeadLetterEntry]:
    """Return the dead-letter entries of a WAL directory in seq order (unreadable sidecars are skipped, with a warning)."""
    dl_dir = Path(directory) / DEAD_LETTER_DIR
    try:
        names = sorted(n for n in os.listdir(dl_dir) if n.endswith(".json"))
    except FileNotFoundError:
        return []
    entries = []
    for name in names:
        meta_path = dl_dir / name
        try:
            meta = json.loads(meta_path.read_text())
            entries.append(
                DeadLetterEntry(
                    seq=int(meta["seq"]),
                    reason=str(meta["reason"]),
                    time=str(meta["time"]),
                    payload_bytes=int(meta["payload_bytes"]),
                    frame_path=dl_dir / str(meta["frame"]),
                    meta_path=meta_path,
                )
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("wal: skipping unreadable dead-letter sidecar %s: %s", meta_path, exc)
    return entries


def read_payload(entry: DeadLetterEntry) -> bytes:
    """Return the payload of an entry after checking its frame CRC.

    Raises:
        WALCorruptionError: the frame file is damaged.
    """
    data = entry.frame_path.read_bytes()
    status, header = frame.check(data, 0, len(data))
    if status is not frame.Check.OK or header is None or header.size != len(data) or header.seq != entry.seq:
        raise WALCorruptionError(
            f"wal: dead-letter frame '{entry.frame_path}' is damaged at position 0",
            segment=str(entry.frame_path),
            offset=0,
        )
    return data[frame.HEADER_SIZE :]


def get(directory: str | os.PathLike[str], seq: int) -> tuple[DeadLetterEntry, bytes]:
    """Return the entry for ``seq`` and its payload.

    Raises:
        KeyError: no dead-letter entry has that seq.
    """
    for entry in list_entries(directory):
        if entry.seq == seq:
            return entry, read_payload(entry)
    raise KeyError(f"no dead-letter entry with seq {seq} in {Path(directory) / DEAD_LETTER_DIR}")
