"""Encode and check one CRC-framed WAL record (layout in ``otel_audit.wal``'s docstring)."""

from __future__ import annotations

import enum
import mmap
import struct
import zlib
from collections.abc import Sequence
from typing import NamedTuple

FRAME_MAGIC = b"\xa7\xd1"
FRAME_VERSION = 1
# magic, version, flags, payload length, seq, append time (ns since the epoch), crc32.
_HEADER = struct.Struct("<2sBBIQQI")
HEADER_SIZE = _HEADER.size  # 28
# The CRC covers every header byte before it (magic..time) and then the payload.
_CRC_OFFSET = HEADER_SIZE - 4
# A length above this is treated as damage, so a flipped length byte cannot make a
# reader wait for (or allocate) gigabytes that will never arrive.
MAX_PAYLOAD_BYTES = 64 << 20

_PREFIX = struct.Struct("<2sBBIQQ")

Buffer = bytes | bytearray | memoryview | mmap.mmap


class FrameHeader(NamedTuple):
    """A decoded, CRC-checked frame header; ``size`` is header plus payload bytes."""

    seq: int
    time_ns: int
    length: int

    @property
    def size(self) -> int:
        return HEADER_SIZE + self.length


class Check(enum.Enum):
    """What lies at an offset: a whole valid frame, too few bytes yet, or damage."""

    OK = "ok"
    INCOMPLETE = "incomplete"
    BAD = "bad"


def encode(seq: int, time_ns: int, payload: bytes) -> bytes:
    """Return the frame bytes for one payload."""
    prefix = _PREFIX.pack(FRAME_MAGIC, FRAME_VERSION, 0, len(payload), seq, time_ns)
    crc = zlib.crc32(payload, zlib.crc32(prefix))
    return prefix + crc.to_bytes(4, "little") + payload


def encode_many(first_seq: int, time_ns: int, payloads: Sequence[bytes]) -> bytes:
    """Return consecutive frames numbered from ``first_seq``, ready for a single write."""
    parts: list[bytes] = []
    seq = first_seq
    pack = _PREFIX.pack
    crc32 = zlib.crc32
    for payload in payloads:
        prefix = pack(FRAME_MAGIC, FRAME_VERSION, 0, len(payload), seq, time_ns)
        parts.append(prefix)
        parts.append(crc32(payload, crc32(prefix)).to_bytes(4, "little"))
        parts.append(payload)
        seq += 1
    return b"".join(parts)


def check(buf: Buffer, pos: int, end: int) -> tuple[Check, FrameHeader | None]:
    """Decide whether ``buf[pos:end]`` starts with a whole valid frame.

    INCOMPLETE means the bytes so far are a plausible prefix of a frame that runs past
    ``end``: at the live tail of a segment that is "not yet written"; anywhere else, torn.
    """
    if end - pos < HEADER_SIZE:
        if bytes(buf[pos : min(end, pos + 2)]) != FRAME_MAGIC[: max(0, min(end, pos + 2) - pos)]:
            return Check.BAD, None
        return Check.INCOMPLETE, None
    magic, version, flags, length, seq, time_ns, crc = _HEADER.unpack_from(buf, pos)
    if magic != FRAME_MAGIC or version != FRAME_VERSION or flags != 0 or length > MAX_PAYLOAD_BYTES:
        return Check.BAD, None
    stop = pos + HEADER_SIZE + length
    if stop > end:
        return Check.INCOMPLETE, None
    mv = memoryview(buf)
    actual = zlib.crc32(mv[pos + HEADER_SIZE : stop], zlib.crc32(mv[pos : pos + _CRC_OFFSET]))
    if actual != crc:
        return Check.BAD, None
    return Check.OK, FrameHeader(seq, time_ns, length)


def peek(buf: Buffer, pos: int) -> FrameHeader:
    """Decode a header without checking it: only for frames verified before (stats, seeks)."""
    _magic, _version, _flags, length, seq, time_ns, _crc = _HEADER.unpack_from(buf, pos)
    return FrameHeader(seq, time_ns, length)
