"""Read the collector's JSON-lines audit archive back as flat, typed log records, streaming."""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import os
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeAlias, TypeVar, cast

PyValue: TypeAlias = str | bool | int | float | bytes | list["PyValue"] | dict[str, "PyValue"] | None
"""An OTLP AnyValue as a python value: the wrapper objects are gone, int64 strings are ints."""

PathLike: TypeAlias = str | os.PathLike[str]

_GZIP_MAGIC = b"\x1f\x8b"
# Every OTLP/JSON export request the file exporter writes starts like this; a line torn by a
# kill is followed, on the same physical line, by the next request the restarted collector
# appended, so these are the places to resume parsing from.
_REQUEST_START = re.compile(r'\{"resource_?(?:[Ll]ogs|[Ss]pans|[Mm]etrics|[Pp]rofiles)"')
# Rotated files are <stem>-<UTC 2006-01-02T15-04-05.000>[-<reason>]<ext> (timberjack, and the
# lumberjack names older exporters wrote).
_ROTATED_TIME = r"\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}\.\d{3}"
_MAX_PROBLEMS = 20

_T = TypeVar("_T")


class _Malformed(ValueError):
    """A complete JSON line whose structure is not an OTLP logs request."""


@dataclass(frozen=True)
class ArchivedRecord:
    """One log record from the archive, flattened with its resource and scope.

    Equality ignores where the record was read from (`source`, `line_number`), so the same
    record archived twice (a retry after a lost acknowledgement) compares equal.
    """

    time_unix_nano: int
    observed_time_unix_nano: int
    event_name: str
    body: PyValue
    attributes: Mapping[str, PyValue]
    trace_id: str
    """Lower-case hex, 32 characters; empty when the record carries no trace context."""
    span_id: str
    """Lower-case hex, 16 characters; empty when the record carries no trace context."""
    flags: int
    severity_number: int
    severity_text: str
    resource: Mapping[str, PyValue]
    scope_name: str
    scope_version: str
    source: str = field(default="", compare=False)
    line_number: int = field(default=0, compare=False)

    @property
    def record_id(self) -> str | None:
        """The dedup key: `audit.record.id`, else the generic `log.record.uid`, else None."""
        for key in ("audit.record.id", "log.record.uid"):
            value = self.attributes.get(key)
            if isinstance(value, str) and value:
                return value
        return None


@dataclass
class ArchiveStats:
    """What a pass over the archive saw; filled in while records are yielded."""

    files: int = 0
    lines: int = 0
    requests: int = 0
    records: int = 0
    torn_lines: int = 0
    """Fragments that are not complete JSON: a request cut short by a killed collector."""
    malformed_lines: int = 0
    """Complete JSON that is not an OTLP logs request as the file exporter writes it."""
    other_signal_lines: int = 0
    """Requests of another signal (spans, metrics) in the same file; skipped."""
    problems: list[str] = field(default_factory=list)
    """The first few torn/malformed places as `file:line: reason`, for error messages."""

    def _note(self, source: str, line_number: int, reason: str) -> None:
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(f"{source}:{line_number}: {reason}")


class ArchiveReader:
    """Streams the records of one or more archive files, keeping statistics of the last pass.

    Files are read in the order given, each line parsed and dropped before the next, so memory
    stays bounded by the largest single export request whatever the archive's size. Gzip files
    are recognised by their magic bytes. Nothing in a file's content makes the reader raise:
    torn and malformed lines are skipped and counted in `stats`; only I/O errors propagate
    (FileNotFoundError too, unless `missing_ok`).
    """

    def __init__(self, paths: PathLike | Iterable[PathLike], *, missing_ok: bool = False) -> None:
        self._paths = _as_paths(paths)
        self._missing_ok = missing_ok
        self.stats = ArchiveStats()

    @property
    def torn_lines(self) -> int:
        """Torn lines seen by the last (or current) pass of `records()`."""
        return self.stats.torn_lines

    def records(self) -> Iterator[ArchivedRecord]:
        """Yield every log record in file and line order; each call starts a fresh pass."""
        self.stats = ArchiveStats()
        return _iter_files(self._paths, self.stats, self._missing_ok)


def iter_archive(
    paths: PathLike | Iterable[PathLike],
    *,
    stats: ArchiveStats | None = None,
    missing_ok: bool = False,
) -> Iterator[ArchivedRecord]:
    """Yield the records of the given archive files; `stats`, when given, is filled in as we go."""
    return _iter_files(_as_paths(paths), ArchiveStats() if stats is None else stats, missing_ok)


def archive_files(path: PathLike) -> list[Path]:
    """The active archive file and its rotated predecessors, oldest first.

    The file exporter renames a full file to `<stem>-<UTC time>-size<ext>` and starts a new
    one; reading the list this returns yields records in the order they were written. Missing
    files are simply not listed.
    """
    active = Path(path)
    pattern = re.compile(
        re.escape(active.stem) + r"-(" + _ROTATED_TIME + r")(?:-[a-z]+)?" + re.escape(active.suffix) + r"$"
    )
    rotated: list[tuple[str, Path]] = []
    if active.parent.is_dir():
        for candidate in active.parent.iterdir():
            match = pattern.match(candidate.name)
            if match and candidate.is_file():
                rotated.append((match.group(1), candidate))
    files = [p for _, p in sorted(rotated)]
    if active.is_file():
        files.append(active)
    return files


def anyvalue_to_python(value: Mapping[str, object]) -> PyValue:
    """Convert an OTLP/JSON AnyValue (`{"stringValue": "x"}`, `{"intValue": "7"}`, ...) to python.

    int64 values arrive as decimal strings (JSON numbers lose precision above 2**53) and become
    ints; bytes arrive base64 and become bytes; an empty object (an unset value) becomes None.

    Raises:
        ValueError: the object is not an AnyValue.
    """
    if not isinstance(value, Mapping):
        raise ValueError(f"AnyValue must be an object, got {type(value).__name__}")
    if not value:
        return None
    if len(value) != 1:
        raise ValueError(f"AnyValue must have exactly one member, got {sorted(value)}")
    ((kind, raw),) = value.items()
    if kind in ("stringValue", "string_value"):
        return _expect(raw, str, kind)
    if kind in ("boolValue", "bool_value"):
        return _expect(raw, bool, kind)
    if kind in ("intValue", "int_value"):
        return json_int(raw, kind)
    if kind in ("doubleValue", "double_value"):
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            raise ValueError(f"{kind} must be a number, got {raw!r}")
        return float(raw)  # also "NaN", "Infinity", "-Infinity" as proto3 JSON writes them
    if kind in ("bytesValue", "bytes_value"):
        try:
            return base64.b64decode(_expect(raw, str, kind), validate=True)
        except binascii.Error as exc:
            raise ValueError(f"{kind} is not base64: {raw!r}") from exc
    if kind in ("arrayValue", "array_value"):
        values = _expect(raw, dict, kind).get("values", [])
        return [anyvalue_to_python(v) for v in _expect(values, list, kind)]
    if kind in ("kvlistValue", "kvlist_value"):
        values = _expect(raw, dict, kind).get("values", [])
        return attributes_to_dict(_expect(values, list, kind))
    raise ValueError(f"unknown AnyValue member {kind!r}")


def attributes_to_dict(key_values: Iterable[object]) -> dict[str, PyValue]:
    """Convert an OTLP/JSON KeyValue list to a dict; a repeated key keeps its last value."""
    result: dict[str, PyValue] = {}
    for kv in key_values:
        if not isinstance(kv, Mapping) or not isinstance(kv.get("key"), str):
            raise ValueError(f"KeyValue must be an object with a string key, got {kv!r}")
        result[kv["key"]] = anyvalue_to_python(kv.get("value") or {})
    return result


def _as_paths(paths: PathLike | Iterable[PathLike]) -> list[Path]:
    # A lone str is itself an iterable (of characters): never iterate it.
    if isinstance(paths, str | os.PathLike):
        return [Path(paths)]
    return [Path(p) for p in paths]


def _iter_files(paths: list[Path], stats: ArchiveStats, missing_ok: bool) -> Iterator[ArchivedRecord]:
    for path in paths:
        try:
            stream = open_archive(path)
        except FileNotFoundError:
            if missing_ok:
                continue
            raise
        stats.files += 1
        with stream:
            yield from _read_stream(stream, str(path), stats)


def is_gzip(path: Path) -> bool:
    """Whether the file starts with the gzip magic bytes (rotated files may be compressed, whatever their name)."""
    with open(path, "rb") as probe:
        return probe.read(2) == _GZIP_MAGIC


def open_archive(path: Path) -> IO[bytes]:
    """Open one archive file for reading bytes, decompressing it if it is gzip.

    Raises:
        FileNotFoundError, IsADirectoryError, PermissionError: as `open` does.
    """
    if is_gzip(path):
        stream = cast(IO[bytes], gzip.open(path, "rb"))
        try:
            # Two magic bytes are weak evidence: a plain archive whose first line was torn into
            # junk can start with them. Only a stream that really inflates is read as gzip.
            stream.read(1)
            stream.seek(0)
            return stream
        except (OSError, EOFError, zlib.error):
            stream.close()
    return open(path, "rb")


def numbered_lines(stream: IO[bytes], source: str, stats: ArchiveStats) -> Iterator[tuple[int, bytes]]:
    """Yield (1-based line number, raw line) of an open archive file.

    A gzip stream cut short or damaged ends the iteration and counts as one torn line in `stats`:
    what came before the damage has been read. The caller counts `stats.lines` itself (it may stop
    early, e.g. at a line still being written).
    """
    number = 0
    lines = iter(stream)
    while True:
        try:
            line = next(lines)
        except StopIteration:
            return
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            stats.torn_lines += 1
            stats._note(source, number + 1, f"compressed stream unreadable from here ({exc})")
            return
        number += 1
        yield number, line


def _read_stream(stream: IO[bytes], source: str, stats: ArchiveStats) -> Iterator[ArchivedRecord]:
    for line_number, line in numbered_lines(stream, source, stats):
        stats.lines += 1
        if line.strip():
            for obj in requests_in_line(line, source, line_number, stats):
                yield from _records_of(obj, source, line_number, stats)


def requests_in_line(line: bytes, source: str, line_number: int, stats: ArchiveStats) -> Iterator[object]:
    """The JSON values of one archive line: normally one OTLP/JSON export request.

    A line torn by a killed collector is glued to the request the restarted collector appended:
    the complete requests on it are yielded, and each tear is counted once in `stats.torn_lines`
    (and noted in `stats.problems`). The values are not checked to be logs requests: the caller
    decides what another signal or a malformed request means to it.
    """
    try:
        yield json.loads(line)
        return
    except ValueError:  # JSONDecodeError, or UnicodeDecodeError from a cut multi-byte character
        pass
    # Slow path, only for damaged lines: a torn request glued to the one appended after restart
    # (or a complete request whose newline was never written). Parse what parses, count the rest.
    text = line.decode("utf-8", errors="replace").rstrip("\r\n")
    decoder = json.JSONDecoder()
    pos = 0
    while pos < len(text):
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            # One tear, however many false starts we try inside it.
            stats.torn_lines += 1
            stats._note(source, line_number, f"torn request at character {pos}")
            match = _REQUEST_START.search(text, pos + 1)
            while match is not None:
                try:
                    obj, end = decoder.raw_decode(text, match.start())
                    break
                except json.JSONDecodeError:
                    match = _REQUEST_START.search(text, match.start() + 1)
            if match is None:
                return
        yield obj
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1


def _records_of(obj: object, source: str, line_number: int, stats: ArchiveStats) -> Iterator[ArchivedRecord]:
    if not isinstance(obj, dict):
        stats.malformed_lines += 1
        stats._note(source, line_number, f"not a JSON object but {type(obj).__name__}")
        return
    resource_logs = _get(obj, "resourceLogs", "resource_logs")
    if resource_logs is None:
        if any(str(k).startswith("resource") for k in obj):
            stats.other_signal_lines += 1
        else:
            stats.malformed_lines += 1
            stats._note(source, line_number, f"no resourceLogs in an object with keys {sorted(obj)[:5]}")
        return
    try:
        # Decode the whole request before yielding any of it: a malformed request counts once and
        # contributes no records, rather than half of them.
        records = list(_decode_resource_logs(resource_logs, source, line_number))
    except ValueError as exc:  # _Malformed, or a bad AnyValue
        stats.malformed_lines += 1
        stats._note(source, line_number, f"not an OTLP logs request: {exc}")
        return
    stats.requests += 1
    stats.records += len(records)
    yield from records


def _decode_resource_logs(resource_logs: object, source: str, line_number: int) -> Iterator[ArchivedRecord]:
    for rl in _expect(resource_logs, list, "resourceLogs"):
        rl = _expect(rl, dict, "resourceLogs[]")
        # Resource and scope are decoded once and shared by their records.
        resource = _resource(rl.get("resource"))
        for sl in _expect(_get(rl, "scopeLogs", "scope_logs") or [], list, "scopeLogs"):
            sl = _expect(sl, dict, "scopeLogs[]")
            scope_name, scope_version = _scope(sl.get("scope"))
            for lr in _expect(_get(sl, "logRecords", "log_records") or [], list, "logRecords"):
                yield _log_record(lr, resource, scope_name, scope_version, source, line_number)


def record_from_json(
    resource: object,
    scope: object,
    log_record: object,
    *,
    source: str = "",
    line_number: int = 0,
) -> ArchivedRecord:
    """One OTLP/JSON LogRecord with its Resource and InstrumentationScope objects, as the reader yields it.

    For callers that hold the parts of a request rather than a line: the CLI decodes a WAL record
    (turned into OTLP/JSON by protobuf) or a single archived record with this, so both end up as
    the very same model, checked by the same rules. A missing resource or scope may be None.

    Raises:
        ValueError: the objects are not OTLP/JSON.
    """
    scope_name, scope_version = _scope(scope)
    return _log_record(log_record, _resource(resource), scope_name, scope_version, source, line_number)


def _resource(resource: object) -> dict[str, PyValue]:
    resource = _expect(resource or {}, dict, "resource")
    return attributes_to_dict(_expect(resource.get("attributes", []), list, "resource"))


def _scope(scope: object) -> tuple[str, str]:
    scope = _expect(scope or {}, dict, "scope")
    name = _expect(scope.get("name", ""), str, "scope.name")
    return name, _expect(scope.get("version", ""), str, "scope.version")


def _log_record(
    lr: object,
    resource: Mapping[str, PyValue],
    scope_name: str,
    scope_version: str,
    source: str,
    line_number: int,
) -> ArchivedRecord:
    lr = _expect(lr, dict, "logRecords[]")
    return ArchivedRecord(
        time_unix_nano=json_int(_get(lr, "timeUnixNano", "time_unix_nano") or 0, "timeUnixNano"),
        observed_time_unix_nano=json_int(
            _get(lr, "observedTimeUnixNano", "observed_time_unix_nano") or 0,
            "observedTimeUnixNano",
        ),
        event_name=_expect(_get(lr, "eventName", "event_name") or "", str, "eventName"),
        body=anyvalue_to_python(lr.get("body") or {}),
        attributes=attributes_to_dict(_expect(lr.get("attributes") or [], list, "attributes")),
        trace_id=hex_id(_get(lr, "traceId", "trace_id"), 16, "traceId"),
        span_id=hex_id(_get(lr, "spanId", "span_id"), 8, "spanId"),
        flags=json_int(lr.get("flags") or 0, "flags"),
        severity_number=_severity(_get(lr, "severityNumber", "severity_number")),
        severity_text=_expect(_get(lr, "severityText", "severity_text") or "", str, "severityText"),
        resource=resource,
        scope_name=scope_name,
        scope_version=scope_version,
        source=source,
        line_number=line_number,
    )


def _get(obj: Mapping[str, object], camel: str, snake: str) -> object:
    """The file exporter writes camelCase; proto3 JSON parsers also accept the proto field names."""
    value = obj.get(camel)
    return obj.get(snake) if value is None else value


def _expect(value: object, kind: type[_T], what: str) -> _T:
    if isinstance(value, kind):
        return value
    raise _Malformed(f"{what} must be {getattr(kind, '__name__', kind)}, got {value!r:.60}")


def json_int(value: object, what: str) -> int:
    """An OTLP/JSON integer field: a JSON integer, or the decimal string proto3 JSON writes for 64 bits.

    Raises:
        ValueError: anything else (a bool, a float, a non-decimal string); `what` names the field.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    raise _Malformed(f"{what} must be an integer or decimal string, got {value!r:.60}")


def hex_id(value: object, size: int, what: str) -> str:
    """Lower-case hex of an OTLP/JSON trace or span id of `size` bytes; "" when absent (None or "").

    pdata writes trace/span ids as hex; generic proto3 JSON writes base64. Accept both.

    Raises:
        ValueError: the value is neither `size` bytes of hex nor of base64.
    """
    if value is None or value == "":
        return ""
    text = _expect(value, str, what)
    if len(text) == 2 * size:
        try:
            bytes.fromhex(text)
            return text.lower()
        except ValueError:
            pass
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) != size:
        raise _Malformed(f"{what} must be {size} bytes as hex, got {text!r:.60}")
    return raw.hex()


def _severity(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, str) and not value.lstrip("-").isdigit():
        from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber

        try:
            return int(SeverityNumber.Value(value))
        except ValueError as exc:
            raise _Malformed(f"unknown severityNumber {value!r}") from exc
    return json_int(value, "severityNumber")


__all__ = [
    "ArchiveReader",
    "ArchiveStats",
    "ArchivedRecord",
    "PyValue",
    "anyvalue_to_python",
    "archive_files",
    "attributes_to_dict",
    "hex_id",
    "is_gzip",
    "iter_archive",
    "json_int",
    "numbered_lines",
    "open_archive",
    "record_from_json",
    "requests_in_line",
]
