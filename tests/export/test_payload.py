"""The WAL payload: version byte, context id, record bytes."""

from __future__ import annotations

import pytest

from otel_audit.exceptions import WALFormatError
from otel_audit.export.payload import HEADER_BYTES, decode_payload, encode_payload


def test_payload_round_trips_context_id_and_record() -> None:
    """decode_payload returns exactly what encode_payload framed."""
    payload = encode_payload(b"\x01" * 8, b"record-bytes")
    cid, rec = decode_payload(payload)
    assert cid == b"\x01" * 8
    assert bytes(rec) == b"record-bytes"
    assert len(payload) == HEADER_BYTES + len(b"record-bytes") == 9 + 12


def test_unknown_payload_version_is_refused_with_its_number() -> None:
    """A payload from a newer format is refused, never misread."""
    payload = b"\x02" + encode_payload(b"\x00" * 8, b"r")[1:]
    with pytest.raises(WALFormatError, match="version 2 is unknown"):
        decode_payload(payload)


def test_short_payload_is_refused() -> None:
    """A payload shorter than the header cannot be split."""
    with pytest.raises(WALFormatError, match="shorter than the 9-byte header"):
        decode_payload(b"\x01abc")


def test_context_id_must_be_eight_bytes() -> None:
    """A wrong-size id would shift every record byte; it is refused at encode time."""
    with pytest.raises(ValueError, match="8 bytes"):
        encode_payload(b"short", b"r")
