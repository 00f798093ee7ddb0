"""Frame encoding and checking."""

from __future__ import annotations

import zlib

from otel_audit.wal import frame


def test_frame_header_is_at_most_32_bytes() -> None:
    """Per-record overhead stays small: the header is 28 bytes."""
    assert frame.HEADER_SIZE == 28
    assert len(frame.encode(1, 0, b"abc")) == 28 + 3


def test_encoded_frame_checks_ok_and_round_trips() -> None:
    """A frame decodes to the seq, time and length it was encoded with."""
    data = frame.encode(42, 123456789, b"payload")
    status, header = frame.check(data, 0, len(data))
    assert status is frame.Check.OK
    assert header == frame.FrameHeader(42, 123456789, 7)
    assert data[frame.HEADER_SIZE :] == b"payload"


def test_crc_covers_header_fields_and_payload() -> None:
    """Flipping any single bit anywhere in the frame makes it fail its check."""
    data = frame.encode(7, 99, b"some payload bytes")
    for i in range(len(data)):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[i] ^= 1 << bit
            status, _ = frame.check(damaged, 0, len(damaged))
            assert status is not frame.Check.OK, (i, bit)


def test_crc_is_zlib_crc32_of_header_prefix_then_payload() -> None:
    """The documented CRC definition matches the code."""
    data = frame.encode(5, 6, b"xyz")
    crc = int.from_bytes(data[24:28], "little")
    assert crc == zlib.crc32(data[:24] + data[28:])


def test_a_prefix_of_a_frame_is_incomplete_not_bad() -> None:
    """Bytes cut short by a crash read as 'not yet written', which lets readers wait."""
    data = frame.encode(1, 0, b"x" * 100)
    for cut in range(0, len(data)):
        status, _ = frame.check(data, 0, cut)
        assert status is frame.Check.INCOMPLETE, cut


def test_encode_many_equals_concatenated_single_frames() -> None:
    """A batch is exactly the frames one append each would have written."""
    payloads = [b"a", b"", b"ccc"]
    batch = frame.encode_many(10, 77, payloads)
    assert batch == b"".join(frame.encode(10 + i, 77, p) for i, p in enumerate(payloads))


def test_oversized_length_field_is_bad() -> None:
    """A length above the limit is damage, so a reader never waits for gigabytes."""
    data = bytearray(frame.encode(1, 0, b"x"))
    data[4:8] = (frame.MAX_PAYLOAD_BYTES + 1).to_bytes(4, "little")
    assert frame.check(data, 0, len(data))[0] is frame.Check.BAD
