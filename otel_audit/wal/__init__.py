"""The otel-audit write-ahead log: an append-only, segmented, checksummed log of opaque payloads.

Purpose
=======

Every audit record is appended here, in the emitting thread, before anything is sent
over the network; the sender streams it from the ack cursor and acks once the
collector confirmed delivery. The WAL neither knows nor cares what a payload is (the
layers above store OTLP protobuf bytes).

Invariants
==========

* Seqs start at 1 and strictly increase, across restarts too: the checkpoint remembers
  the acked seq even when every segment was acked and deleted.
* Every frame carries a CRC32 (``zlib.crc32``) over its header fields and payload. A
  frame that fails it is never returned.
* Bytes reach the file with ``os.write`` on a plain fd, with no userspace buffer, so a
  returned ``append`` survives SIGKILL in every durability mode; the mode only decides
  when ``fsync`` makes it survive power loss (see docs/wal.md, docs/power-loss.md).
* Every change the WAL makes on disk goes through ``fileio`` (bound straight to the
  ``os`` functions), so tests can record each operation and fail any of them.
* A name is durable only once its directory is fsynced: new directories, segments and
  the checkpoint all get a directory fsync before anything relies on them.
* A file whose fsync (or write, other than ENOSPC) failed is never fsynced again and
  never trusted: the writer fails closed and later copies its records to a fresh file.
* A segment is deleted only when every record in it is acked, and only after the
  checkpoint saying so is durable.
* Sizes and seqs are recomputed from the files at open, never trusted from a counter.
* One writer per directory (``LOCK``, an fcntl open-file-description lock). Readers
  (``WALReader``) take no lock.

Byte layout (all integers little-endian)
========================================

Segment header, 24 bytes, at offset 0 of every segment::

    magic         8 bytes   b"OTAUDSEG"
    version       uint16    format version, 1
    reserved      uint16    0
    first_seq     uint64    seq of the first frame; equals the file name
    header_crc    uint32    crc32 of the 20 bytes above

then frames back to back. Frame, 28-byte header plus payload::

    magic         2 bytes   0xA7 0xD1
    version       uint8     frame version, 1
    flags         uint8     0 (reserved)
    length        uint32    payload length in bytes, at most 64 MiB
    seq           uint64
    time_ns       uint64    wall-clock append time, ns since the Unix epoch
    crc           uint32    crc32(bytes magic..time_ns, then payload)
    payload       length bytes

Checkpoint file, one or two 24-byte records (slots)::

    magic         8 bytes   b"OTAUDCKP"
    version       uint16    1
    reserved      uint16    0
    acked_seq     uint64
    crc           uint32    crc32 of the 20 bytes above

Normally one record, replaced by tmp + rename. When the disk is too full for the tmp
file, an ack writes in place into the slot that does not hold the newest valid record
(48 bytes in the block the file already has); readers take the newest valid slot, so a
torn in-place write falls back to the previous ack, never to "nothing acked".

A change to any layout bumps its version byte and this text in the same change.

File naming
===========

::

    <dir>/LOCK                          fcntl lock; the holder's pid as text
    <dir>/checkpoint                    acked seq (written tmp, fsync, rename, fsync dir)
    <dir>/segments/<first seq:020d>.wal segments; new ones appear via <name>.tmp + rename
                                        (so do copies made after an I/O fault)
    <dir>/dead-letter/<seq:020d>.frame  a rejected record's frame bytes
    <dir>/dead-letter/<seq:020d>.json   its sidecar: seq, reason, time, payload_bytes
    <dir>/quarantine/                   damaged bytes cut out at open, never read again

Any other name in ``<dir>`` belongs to the layers above and is ignored.

Recovery (``WAL.open``)
=======================

1. Take ``LOCK`` (or raise WALLockedError naming the holder's pid); remove leftover
   ``*.tmp``/``*.repair`` files in ``segments/``.
2. Read the checkpoint; a damaged one goes to quarantine and counts as "nothing acked"
   (records are re-sent, never lost). Another version raises WALFormatError.
3. Delete segments that are fully acked (an ack crashed before deleting them).
4. Check every frame of every other segment. At the first bad frame, scan forward for
   the next frame magic with a valid CRC whose seq is above the last good one, and
   with no more lost seqs than frames that could fit in the skipped bytes. Damage with
   good frames after it is copied to ``quarantine/<segment>.<offset>.bad`` and the
   segment is rewritten without it (tmp, fsync, rename). Damage running to the end of
   a segment (a torn tail from a crash mid-write) is copied to ``<...>.torn`` and cut
   off with ftruncate. Each case logs a warning and is counted in ``stats()``; open
   never raises on bad bytes. A segment with a damaged header is moved to quarantine whole.
5. The next seq is one above the highest seq found in a segment header or frame, or
   the acked seq, whichever is larger: after a power cut the checkpoint may name a seq
   above every surviving frame (the sender acked frames not yet fsynced), and new
   records must still land above it, where readers start.
6. Unless durability is never, every kept segment and the segments directory are
   fsynced: a killed predecessor may have left them only in the page cache.

I/O faults
==========

An fsync error, a write error other than ENOSPC/EDQUOT, or the active segment or LOCK
deleted or replaced under the writer makes the WAL fail closed: ``append``/``sync_to``
raise WALError naming the file, errno and the last seq known durable; reads and acks
go on. After a back-off (0.1 s, doubling to 5 s) the next append, or the interval fsync
thread, recreates what was removed (directories, LOCK, checkpoint) and copies the active
segment to ``<name>.tmp``: frames an fsync confirmed are read back and CRC-checked, the
rest are the bytes written since, kept in memory; fsync, rename over the segment, fsync
the directory, and appends resume. A LOCK replaced by another file means another writer
may own the directory: that WAL object never writes there again.

Fork: a WAL object inherited by a forked child refuses every call with WALError and
closes only the child's copies of its fds, without unlocking: the parent keeps its lock.
"""

from otel_audit.exceptions import (
    WALCorruptionError,
    WALError,
    WALFormatError,
    WALFullError,
    WALLockedError,
    WALRecordTooLargeError,
)

from .options import Durability, FullPolicy
from .reader import WALCursor, WALReader
from .wal import WAL

__all__ = [
    "WAL",
    "Durability",
    "FullPolicy",
    "WALCorruptionError",
    "WALCursor",
    "WALError",
    "WALFormatError",
    "WALFullError",
    "WALLockedError",
    "WALReader",
    "WALRecordTooLargeError",
]
