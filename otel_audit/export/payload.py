"""The WAL payload of one record: a version byte, the 8-byte context id, then the encoded LogRecord.

Layout (9 bytes of overhead per record)::

    offset 0   uint8     version, 0x01
    offset 1   8 bytes   context id: names the ResourceLogs+ScopeLogs blob in ``<wal_dir>/contexts/``
    offset 9   n bytes   a serialized ``opentelemetry.proto.logs.v1.LogRecord`` (encoded once, at append)

The resource and the scope are stored once per distinct value (see :mod:`otel_audit.export.contexts`)
instead of on every record: a typical resource (service name, host, SDK attributes) is 150-400 bytes,
the context id costs 8. A new layout gets a new version byte; readers refuse versions they do not know
instead of guessing, so an old binary never ships garbage made by a newer one.
"""

from __future__ import annotations

from otel_audit.exceptions import WALFormatError

PAYLOAD_VERSION = 1
CONTEXT_ID_BYTES = 8
HEADER_BYTES = 1 + CONTEXT_ID_BYTES
"""Bytes a payload adds to the encoded LogRecord."""

_VERSION_BYTE = bytes((PAYLOAD_VERSION,))


def encode_payload(context_id: bytes, log_record: bytes) -> bytes:
    """Frame an encoded LogRecord with the id of its resource/scope context.

    The context must already be durable in the :class:`~otel_audit.export.contexts.ContextStore`
    (``put`` returns only after fsync), so a replay after a crash can always resolve the id.
    """
    if len(context_id) != CONTEXT_ID_BYTES:
        raise ValueError(f"context id must be {CONTEXT_ID_BYTES} bytes, got {len(context_id)}")
    return _VERSION_BYTE + context_id + log_record


def decode_payload(payload: bytes | memoryview) -> tuple[bytes, memoryview]:
    """Split a payload into (context id, LogRecord bytes); the record is a zero-copy view.

    Raises:
        WALFormatError: the version byte is unknown or the payload is shorter than its header.
    """
    if len(payload) < HEADER_BYTES:
        raise WALFormatError(
            f"record payload is {len(payload)} bytes, shorter than the {HEADER_BYTES}-byte header; "
            "it was not written by otel-audit"
        )
    version = payload[0]
    if version != PAYLOAD_VERSION:
        raise WALFormatError(
            f"record payload version {version} is unknown (this otel-audit reads version {PAYLOAD_VERSION}); "
            "upgrade otel-audit to replay this WAL"
        )
    view = memoryview(payload)
    return bytes(view[1:HEADER_BYTES]), view[HEADER_BYTES:]


__all__ = ["CONTEXT_ID_BYTES", "HEADER_BYTES", "PAYLOAD_VERSION", "decode_payload", "encode_payload"]
