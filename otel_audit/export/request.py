"""Build ExportLogsServiceRequest bytes by concatenating already-encoded LogRecords (no re-encoding).

Protobuf lets a message be written as the concatenation of its fields, each a tag, a varint length
and the bytes. A request is ``resource_logs`` (field 1) entries; each ResourceLogs here is a stored
context blob (resource, one ScopeLogs, schema url) with the records spliced into its ScopeLogs as
field 2 (``log_records``). The fields are emitted in the order the library emits them (ascending
field number), so the result is byte-identical to
``ExportLogsServiceRequest(resource_logs=[...]).SerializeToString()`` and any receiver parses it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from otel_audit.exceptions import WALFormatError
from otel_audit.export.payload import HEADER_BYTES, PAYLOAD_VERSION

_TAG_RESOURCE_LOGS = b"\x0a"  # ExportLogsServiceRequest.resource_logs = 1, length-delimited
_TAG_SCOPE_LOGS = b"\x12"  # ResourceLogs.scope_logs = 2, length-delimited
_LOG_RECORDS_FIELD = 2  # ScopeLogs.log_records = 2, length-delimited: tag byte 0x12

# b"\x12" + varint(n) for every n below 4 KiB (most audit records): one tuple index instead of
# building two small bytes objects per record (this loop is the sender's hot path).
_SMALL = 1 << 12  # ~170 KiB of small bytes objects; larger records compute their varint
_RECORD_HEADS: tuple[bytes, ...] = tuple(
    bytes((0x12, n)) if n < 0x80 else bytes((0x12, (n & 0x7F) | 0x80, n >> 7)) for n in range(_SMALL)
)


def varint(n: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _fields(buf: bytes) -> list[tuple[int, int, int, int]]:
    """Split a message into (field number, start, value start, end) for each top-level field."""
    out = []
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, pos = _read_varint(buf, pos)
            value_start = start
        elif wire == 1:
            value_start, pos = pos, pos + 8
        elif wire == 2:
            length, value_start = _read_varint(buf, pos)
            pos = value_start + length
        elif wire == 5:
            value_start, pos = pos, pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire} for field {number}")
        if pos > len(buf):
            raise ValueError(f"field {number} runs past the end of the message")
        out.append((number, start, value_start, pos))
    return out


class ContextTemplate:
    """A context blob cut at the two places records are spliced in, parsed once per context."""

    __slots__ = ("resource_head", "resource_tail", "scope_head", "scope_tail")

    def __init__(
        self, resource_head: bytes, resource_tail: bytes, scope_head: bytes, scope_tail: bytes
    ) -> None:
        self.resource_head = resource_head  # ResourceLogs fields before scope_logs (the resource)
        self.resource_tail = resource_tail  # ResourceLogs fields after it (schema_url)
        self.scope_head = scope_head  # ScopeLogs fields numbered below log_records (the scope)
        self.scope_tail = scope_tail  # ScopeLogs fields numbered above it (schema_url)

    @classmethod
    def parse(cls, blob: bytes) -> ContextTemplate:
        """Cut a serialized ResourceLogs holding exactly one ScopeLogs and no records.

        Raises:
            ValueError: the blob does not have that shape.
        """
        fields = _fields(blob)
        scope_fields = [f for f in fields if f[0] == 2]
        if len(scope_fields) != 1:
            raise ValueError(f"context blob must hold exactly one ScopeLogs, found {len(scope_fields)}")
        _, s_start, s_value, s_end = scope_fields[0]
        scope = blob[s_value:s_end]
        inner = _fields(scope)
        if any(f[0] == _LOG_RECORDS_FIELD for f in inner):
            raise ValueError("context blob's ScopeLogs already holds log records")
        cut = next((f[1] for f in inner if f[0] > _LOG_RECORDS_FIELD), len(scope))
        return cls(blob[:s_start], blob[s_end:], scope[:cut], scope[cut:])


def build_request(groups: Sequence[tuple[ContextTemplate, Sequence[bytes | memoryview]]]) -> bytes:
    """Concatenate groups of encoded LogRecords, each under its context, into request bytes.

    Groups are emitted in the given order (one ResourceLogs each), records in order within them.
    """
    parts: list[bytes | memoryview] = []
    append = parts.append
    for template, records in groups:
        _append_group(parts, append, template, records)
    return b"".join(parts)


def _append_group(
    parts: list[bytes | memoryview],
    append: Callable[[bytes | memoryview], None],
    template: ContextTemplate,
    records: Sequence[bytes | memoryview],
) -> None:
    append(b"")  # placeholder: resource_logs tag + length, known once the records are summed
    head_at = len(parts)
    append(template.resource_head)
    append(b"")  # placeholder: scope_logs tag + length
    append(template.scope_head)
    scope_len = len(template.scope_head) + len(template.scope_tail)
    for record in records:
        n = len(record)
        head = _RECORD_HEADS[n] if n < _SMALL else b"\x12" + varint(n)
        append(head)
        append(record)
        scope_len += len(head) + n
    append(template.scope_tail)
    append(template.resource_tail)
    scope_head = _TAG_SCOPE_LOGS + varint(scope_len)
    parts[head_at + 1] = scope_head
    resource_len = len(template.resource_head) + len(scope_head) + scope_len + len(template.resource_tail)
    parts[head_at - 1] = _TAG_RESOURCE_LOGS + varint(resource_len)


class RequestBuilder:
    """Turns WAL payloads (see :mod:`otel_audit.export.payload`) into request bytes.

    ``resolve`` maps a context id to its blob (``ContextStore.get``); templates are cached per id.
    Consecutive records sharing a context share one ResourceLogs, order is preserved.
    Not thread-safe: one per sender thread.
    """

    def __init__(self, resolve: Callable[[bytes], bytes]) -> None:
        self._resolve = resolve
        self._templates: dict[bytes, ContextTemplate] = {}

    def template(self, context_id: bytes) -> ContextTemplate:
        """Raises WALContextError (missing/corrupt file) or ValueError (blob of the wrong shape)."""
        template = self._templates.get(context_id)
        if template is None:
            template = ContextTemplate.parse(self._resolve(context_id))
            self._templates[context_id] = template
        return template

    def check(self, payload: bytes) -> None:
        """Raise the error that makes ``payload`` unbuildable, if any (used to isolate bad records)."""
        if len(payload) < HEADER_BYTES or payload[0] != PAYLOAD_VERSION:
            raise WALFormatError(
                f"record payload has version {payload[0] if payload else 'none'} and {len(payload)} bytes; "
                f"this otel-audit reads version {PAYLOAD_VERSION}"
            )
        self.template(payload[1:HEADER_BYTES])

    def build(self, payloads: Sequence[bytes]) -> bytes:
        """Build one request from payloads in WAL order.

        Raises:
            WALFormatError, WALContextError, ValueError: some payload cannot be built; call
                :meth:`check` per payload to find which.
        """
        parts: list[bytes | memoryview] = []
        append = parts.append
        group: list[bytes | memoryview] = []
        current: bytes | None = None
        for payload in payloads:
            if payload[0] != PAYLOAD_VERSION or len(payload) < HEADER_BYTES:
                self.check(payload)
            cid = payload[1:HEADER_BYTES]
            if cid != current:
                if group:
                    _append_group(parts, append, self.template(current), group)  # type: ignore[arg-type]
                    group = []
                current = cid
            group.append(payload[HEADER_BYTES:])
        if group:
            _append_group(parts, append, self.template(current), group)  # type: ignore[arg-type]
        return b"".join(parts)


__all__ = ["ContextTemplate", "RequestBuilder", "build_request", "varint"]
