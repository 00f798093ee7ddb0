"""Where records come from (a live WAL or collector archive files), read newest-first in bounded memory."""

from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import DecodeError
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs

from otel_audit.archive import (
    ArchivedRecord,
    ArchiveStats,
    anyvalue_to_python,
    archive_files,
    hex_id,
    is_gzip,
    json_int,
    numbered_lines,
    open_archive,
    record_from_json,
    requests_in_line,
)
from otel_audit.exceptions import OtelAuditError
from otel_audit.export.contexts import ContextStore
from otel_audit.export.payload import decode_payload
from otel_audit.wal.reader import WALReader
from otel_audit.wal.segment import list_segments

from .filters import RecordFilter

_FOLLOW_BATCH = 512
_FOLLOW_BATCH_BYTES = 4 << 20


class SourceError(Exception):
    """A source cannot be read as asked; the message is shown to the operator as is."""


class Entry(ABC):
    """One record at a position of its source, decoded only as far as the caller needs."""

    __slots__ = ("seq",)

    def __init__(self, seq: int) -> None:
        self.seq = seq

    @property
    def shard(self) -> str | None:
        """The id of the WAL shard holding the record; None for the root shard and the archive."""
        return None

    @property
    def key(self) -> str:
        """How an operator names the record: `SEQ`, or `SHARD:SEQ` outside the root shard."""
        return str(self.seq) if self.shard is None else f"{self.shard}:{self.seq}"

    @property
    @abstractmethod
    def time_unix_nano(self) -> int: ...

    @property
    @abstractmethod
    def event_name(self) -> str: ...

    @property
    @abstractmethod
    def trace_id(self) -> str:
        """Lower-case hex, empty when the record carries no trace context."""

    @abstractmethod
    def attribute(self, key: str) -> str:
        """The attribute as text ("" when absent): what list columns and filters compare."""

    @abstractmethod
    def record(self) -> ArchivedRecord:
        """Every field, in the archive reader's model, so both sources print the same way."""

    @property
    @abstractmethod
    def location(self) -> str:
        """Where the record lives, for `get` and error messages."""


@dataclass
class Page:
    """Entries newest first, and the `--before` value of the next (older) page, if there is one.

    `high_seq` is the highest seq the pass saw, matching or not: where a follower resumes.
    """

    entries: list[Entry]
    next_before: int | str | None
    high_seq: int = 0


class Source(ABC):
    """The operations every command needs, implemented once per kind of storage."""

    label: str

    @abstractmethod
    def entries(self, after: int = 0, flt: RecordFilter | None = None) -> Iterator[Entry]:
        """Yield matching entries with seq > `after`, oldest first, streaming."""

    @abstractmethod
    def newest(self, limit: int, before: Any = None, flt: RecordFilter | None = None) -> Page:
        """Return up to `limit` matching entries before the cursor `before` (see `parse_before`), newest first."""

    def parse_before(self, text: str) -> Any:
        """The `--before` cursor as `newest` takes it: here a sequence number."""
        if not text.strip().isdigit() or int(text) < 1:
            raise SourceError(f"--before {text!r} is not a sequence number (1 or more)")
        return int(text)

    @abstractmethod
    def find(self, key: str) -> Entry | None:
        """Return the entry with this seq (all digits) or record id (`audit.record.id`/`log.record.uid`)."""

    @abstractmethod
    def tail(self, limit: int, flt: RecordFilter | None) -> tuple[list[Entry], object]:
        """The last `limit` matching entries, oldest first, and the position `follow` resumes from."""

    @abstractmethod
    def follow(self, position: object, flt: RecordFilter | None, poll_seconds: float) -> Iterator[Entry]:
        """Yield entries written after `position` as they arrive; never returns (the caller interrupts)."""

    @abstractmethod
    def progress_total(self) -> int | None:
        """How many records `entries()` will pass, if known cheaply (for a progress bar)."""

    @abstractmethod
    def progress_done(self, entry: Entry) -> int:
        """How far `entries()` has got when it yields `entry`, in the unit of `progress_total`."""

    def warnings(self) -> list[str]:
        """Problems the last pass skipped over (torn archive lines), for a closing warning."""
        return []


# -- what list columns and filters compare ----------------------------------------------------


def _anyvalue_text(value: object) -> str:
    if not isinstance(value, Mapping):
        return ""
    text = value.get("stringValue")
    if isinstance(text, str):
        return text
    try:
        py = anyvalue_to_python(value)
    except ValueError:
        return ""
    return "" if py is None else str(py)


# -- the WAL -----------------------------------------------------------------------------------


class WalEntry(Entry):
    """A WAL frame; the protobuf is parsed on first use, the OTLP/JSON model only for `record()`."""

    __slots__ = ("_contexts", "_payload", "_pb", "_shard", "_wal_dir")

    def __init__(
        self, seq: int, payload: bytes, contexts: ContextStore, wal_dir: Path, shard: str | None = None
    ) -> None:
        super().__init__(seq)
        self._payload = payload
        self._contexts = contexts
        self._wal_dir = wal_dir
        self._shard = shard
        self._pb: LogRecord | None = None

    @property
    def shard(self) -> str | None:
        return self._shard

    def _proto(self) -> LogRecord:
        if self._pb is None:
            try:
                _cid, body = decode_payload(self._payload)
                self._pb = LogRecord.FromString(bytes(body))
            except (OtelAuditError, DecodeError) as exc:
                raise SourceError(
                    f"record seq {self.seq} in WAL {self._wal_dir} cannot be decoded: {exc}"
                ) from None
        return self._pb

    @property
    def payload(self) -> bytes:
        return self._payload

    @property
    def time_unix_nano(self) -> int:
        pb = self._proto()
        return int(pb.time_unix_nano or pb.observed_time_unix_nano)

    @property
    def event_name(self) -> str:
        return str(self._proto().event_name)

    @property
    def trace_id(self) -> str:
        return bytes(self._proto().trace_id).hex()

    def attribute(self, key: str) -> str:
        for kv in self._proto().attributes:
            if kv.key == key:
                if kv.value.WhichOneof("value") == "string_value":
                    return str(kv.value.string_value)
                return _anyvalue_text(MessageToDict(kv.value))
        return ""

    def record(self) -> ArchivedRecord:
        pb = self._proto()
        cid, _ = decode_payload(self._payload)
        try:
            context = ResourceLogs.FromString(self._contexts.get(cid))
        except DecodeError as exc:
            raise SourceError(
                f"context {cid.hex()} of record seq {self.seq} is not a ResourceLogs: {exc}"
            ) from None
        resource = MessageToDict(context.resource)
        scope = MessageToDict(context.scope_logs[0].scope) if context.scope_logs else {}
        try:
            return record_from_json(
                resource, scope, MessageToDict(pb, use_integers_for_enums=True), source=str(self._wal_dir)
            )
        except ValueError as exc:
            raise SourceError(f"record seq {self.seq} in WAL {self._wal_dir}: {exc}") from None

    @property
    def location(self) -> str:
        return f"WAL {self._wal_dir}, seq {self.seq}"


def _check_wal_dir(directory: Path) -> None:
    if not directory.exists():
        raise SourceError(f"WAL directory {directory} does not exist (check --wal or OTEL_AUDIT_WAL_DIR)")
    if not directory.is_dir():
        raise SourceError(f"{directory} is not a directory; --wal takes the WAL directory")
    if not (directory / "segments").is_dir():
        raise SourceError(
            f"{directory} is not an otel-audit WAL (no segments/ inside); "
            "point --wal at the directory the application writes (its OTEL_AUDIT_WAL_DIR)"
        )


class WalSource(Source):
    """One WAL directory (one shard of a root) read without its LOCK, beside the application writing it.

    Only records still on disk are visible: the WAL deletes a segment once every record in it is
    acknowledged by the collector; the archive is the long-term history. `shard` is the shard's id
    when it is not the root, so its records are named `SHARD:SEQ` (seqs repeat across shards).
    """

    def __init__(self, directory: str | os.PathLike[str], shard: str | None = None) -> None:
        self.directory = Path(directory)
        self.shard = shard
        _check_wal_dir(self.directory)
        try:
            self.reader = WALReader(self.directory)
        except OtelAuditError as exc:
            raise SourceError(str(exc)) from None
        self.contexts = ContextStore(self.directory)
        self.label = f"WAL {self.directory}"
        self._segments_dir = self.directory / "segments"
        self._first_seq = 1

    def _entry(self, seq: int, payload: bytes) -> WalEntry:
        return WalEntry(seq, payload, self.contexts, self.directory, self.shard)

    def _matcher(self, flt: RecordFilter | None) -> Callable[[int, bytes], WalEntry | None]:
        if flt is None or flt.empty:
            return self._entry
        needles = flt.needles()
        trace = flt.trace_needle()
        if trace is not None:
            needles += (trace,)

        def match(seq: int, payload: bytes) -> WalEntry | None:
            for needle in needles:
                if needle not in payload:
                    return None
            entry = self._entry(seq, payload)
            return entry if flt.matches(entry) else None

        return match

    def entries(self, after: int = 0, flt: RecordFilter | None = None) -> Iterator[Entry]:
        match = self._matcher(flt)
        for seq, payload in self.reader.read(after):
            entry = match(seq, payload)
            if entry is not None:
                yield entry

    def newest(self, limit: int, before: int | None = None, flt: RecordFilter | None = None) -> Page:
        """Read backwards segment by segment: only the segments holding the page are touched.

        Each segment is read forward (frames are only CRC-checked that way) into a deque of at
        most the rows still wanted, so memory is bounded by the page, whatever the WAL's size.
        """
        match = self._matcher(flt)
        unfiltered = flt is None or flt.empty
        upper = before if before is not None else 2**64
        segments = [s for s in list_segments(self._segments_dir) if s.first_seq < upper]
        found: list[Entry] = []
        high = 0
        for i in range(len(segments) - 1, -1, -1):
            stop = min(segments[i + 1].first_seq if i + 1 < len(segments) else upper, upper)
            window: deque[Entry | tuple[int, bytes]] = deque(maxlen=limit - len(found))
            with self.reader.cursor(after=segments[i].first_seq - 1) as cursor:
                while batch := cursor.next_batch(1024, 4 << 20):
                    if batch[-1][0] >= stop:
                        batch = [(seq, payload) for seq, payload in batch if seq < stop]
                        if not batch:
                            break
                    high = max(high, batch[-1][0])
                    if unfiltered:  # decode nothing until we know which frames make the page
                        window.extend(batch)
                    else:
                        for seq, payload in batch:
                            entry = match(seq, payload)
                            if entry is not None:
                                window.append(entry)
                    if batch[-1][0] + 1 >= stop:
                        break
            found.extend(item if isinstance(item, Entry) else self._entry(*item) for item in reversed(window))
            if len(found) >= limit:
                break
        first_on_disk = segments[0].first_seq if segments else 0
        more = len(found) >= limit and found[-1].seq > first_on_disk
        return Page(found, found[-1].seq if more and found else None, high)

    def find(self, key: str) -> Entry | None:
        if key.isdigit():
            seq = int(key)
            with self.reader.cursor(after=seq - 1) as cursor:
                batch = cursor.next_batch(1, 1)
            if batch and batch[0][0] == seq:
                return self._entry(*batch[0])
            return None
        needle = key.encode()
        for seq, payload in self.reader.read(0):
            if needle in payload:
                entry = self._entry(seq, payload)
                if key in (entry.attribute("audit.record.id"), entry.attribute("log.record.uid")):
                    return entry
        return None

    def tail(self, limit: int, flt: RecordFilter | None) -> tuple[list[Entry], object]:
        page = self.newest(limit, None, flt)
        return list(reversed(page.entries)), page.high_seq

    def follow(self, position: object, flt: RecordFilter | None, poll_seconds: float) -> Iterator[Entry]:
        match = self._matcher(flt)
        with self.reader.cursor(after=int(cast(int, position))) as cursor:
            while True:
                batch = cursor.next_batch(_FOLLOW_BATCH, _FOLLOW_BATCH_BYTES)
                if not batch:
                    time.sleep(poll_seconds)
                    continue
                for seq, payload in batch:
                    entry = match(seq, payload)
                    if entry is not None:
                        yield entry

    def progress_total(self) -> int | None:
        segments = list_segments(self._segments_dir)
        self._first_seq = segments[0].first_seq if segments else 1
        last = int(self.reader.stats()["last_seq"])
        return max(0, last - self._first_seq + 1)

    def progress_done(self, entry: Entry) -> int:
        return entry.seq - self._first_seq + 1


# -- the collector's archive -------------------------------------------------------------------


class ArchiveEntry(Entry):
    """A record of an archive line, numbered by its 1-based ordinal over all files in order."""

    __slots__ = ("_line", "_lr", "_resource", "_scope", "_source")

    def __init__(
        self,
        seq: int,
        lr: Mapping[str, Any],
        resource: Mapping[str, Any],
        scope: Mapping[str, Any],
        source: str,
        line: int,
    ) -> None:
        super().__init__(seq)
        self._lr = lr
        self._resource = resource
        self._scope = scope
        self._source = source
        self._line = line

    @property
    def time_unix_nano(self) -> int:
        try:
            return json_int(self._lr.get("timeUnixNano") or 0, "timeUnixNano") or json_int(
                self._lr.get("observedTimeUnixNano") or 0, "observedTimeUnixNano"
            )
        except ValueError:
            return 0

    @property
    def event_name(self) -> str:
        return str(self._lr.get("eventName") or "")

    @property
    def trace_id(self) -> str:
        try:
            return hex_id(self._lr.get("traceId"), 16, "traceId")
        except ValueError:
            return ""

    def attribute(self, key: str) -> str:
        for kv in self._lr.get("attributes") or ():
            if isinstance(kv, Mapping) and kv.get("key") == key:
                return _anyvalue_text(kv.get("value"))
        return ""

    def record(self) -> ArchivedRecord:
        try:
            return record_from_json(
                self._resource, self._scope, self._lr, source=self._source, line_number=self._line
            )
        except ValueError as exc:
            raise SourceError(f"{self.location}: record {self.seq} is not OTLP/JSON: {exc}") from None

    @property
    def location(self) -> str:
        return f"{self._source}:{self._line}"


@dataclass
class _FollowState:
    """Where a pass over the last archive file stopped: its path, inode and byte offset."""

    path: Path
    inode: int
    offset: int


@dataclass
class _Scan:
    """One streaming pass over the archive files; statistics fill in as entries are yielded."""

    paths: Sequence[Path]
    stats: ArchiveStats = field(default_factory=ArchiveStats)
    follow_state: _FollowState | None = None

    def entries(
        self, *, after: int = 0, stop_at: int | None = None, complete_lines_only: bool = False
    ) -> Iterator[ArchiveEntry]:
        """Yield entries with after < seq (< stop_at); lines entirely at or below `after` are only counted."""
        seq = 0
        for index, path in enumerate(self.paths):
            last_file = index == len(self.paths) - 1
            try:
                stream = open_archive(path)
            except FileNotFoundError:
                raise SourceError(f"archive file {path} does not exist") from None
            except IsADirectoryError:
                raise SourceError(
                    f"{path} is a directory; --archive takes the collector's archive file(s)"
                ) from None
            self.stats.files += 1
            offset = 0
            with stream:
                for line_number, line in numbered_lines(stream, str(path), self.stats):
                    if complete_lines_only and not line.endswith(b"\n"):
                        break  # being written right now: the follower will read it when whole
                    offset += len(line)
                    self.stats.lines += 1
                    if not line.strip():
                        continue
                    for request in requests_in_line(line, str(path), line_number, self.stats):
                        for resource, scope, lrs in _record_groups(
                            request, str(path), line_number, self.stats
                        ):
                            if seq + len(lrs) <= after:
                                seq += len(lrs)
                                continue
                            for lr in lrs:
                                seq += 1
                                if stop_at is not None and seq >= stop_at:
                                    return
                                if seq > after:
                                    yield ArchiveEntry(seq, lr, resource, scope, str(path), line_number)
                if last_file and not is_gzip(path):
                    self.follow_state = _FollowState(path, os.fstat(stream.fileno()).st_ino, offset)
        self.stats.records = seq


def _record_groups(
    request: object, source: str, line_number: int, stats: ArchiveStats
) -> Iterator[tuple[Mapping[str, Any], Mapping[str, Any], list[Mapping[str, Any]]]]:
    """Yield (resource, scope, log records) per ScopeLogs of one OTLP/JSON logs request."""
    if not isinstance(request, Mapping) or not isinstance(request.get("resourceLogs"), list):
        if isinstance(request, Mapping) and any(str(k).startswith("resource") for k in request):
            stats.other_signal_lines += 1
        else:
            stats.malformed_lines += 1
            stats._note(source, line_number, "not an OTLP logs request")
        return
    stats.requests += 1
    for rl in request["resourceLogs"]:
        if not isinstance(rl, Mapping):
            continue
        resource = rl.get("resource") or {}
        for sl in rl.get("scopeLogs") or ():
            if not isinstance(sl, Mapping):
                continue
            records = [lr for lr in sl.get("logRecords") or () if isinstance(lr, Mapping)]
            if records:
                yield resource, sl.get("scope") or {}, records


class ArchiveSource(Source):
    """Collector file-exporter output: JSON lines, gzip allowed, rotated predecessors included.

    SEQ is the 1-based ordinal of a record over all files in order. Rotation renames the active
    file and starts an empty one, so ordinals stay stable as long as the rotated files are kept.
    Every query is one forward pass (ordinals are counted from the start), decoding in full only
    the records it prints, so memory is bounded by the page size and one request line.
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]]) -> None:
        files: list[Path] = []
        for raw in paths:
            path = Path(raw)
            if not path.exists():
                raise SourceError(f"archive file {path} does not exist")
            if path.is_dir():
                raise SourceError(f"{path} is a directory; --archive takes the collector's archive file(s)")
            for p in [*archive_files(path), path]:
                if p not in files:
                    files.append(p)
        self.files = files
        self.label = "archive " + ", ".join(str(p) for p in files)
        self._last_scan: _Scan | None = None

    def _scan(self) -> _Scan:
        self._last_scan = _Scan(self.files)
        return self._last_scan

    def warnings(self) -> list[str]:
        scan = self._last_scan
        if scan is None:
            return []
        out = []
        if scan.stats.torn_lines:
            where = "; ".join(scan.stats.problems[:3])
            out.append(f"skipped {scan.stats.torn_lines} torn line(s) in the archive ({where})")
        if scan.stats.malformed_lines:
            out.append(f"skipped {scan.stats.malformed_lines} line(s) that are not OTLP logs requests")
        return out

    def entries(self, after: int = 0, flt: RecordFilter | None = None) -> Iterator[Entry]:
        for entry in self._scan().entries(after=after):
            if flt is None or flt.matches(entry):
                yield entry

    def newest(self, limit: int, before: int | None = None, flt: RecordFilter | None = None) -> Page:
        window: deque[Entry] = deque(maxlen=limit)
        skipped_older = False
        for entry in self._scan().entries(stop_at=before):
            if flt is None or flt.matches(entry):
                if len(window) == limit:
                    skipped_older = True
                window.append(entry)
        found = list(reversed(window))
        # The pass started at the first record, so "an older match exists" is known exactly.
        return Page(found, found[-1].seq if skipped_older else None)

    def find(self, key: str) -> Entry | None:
        if key.isdigit():
            seq = int(key)
            if seq < 1:
                return None
            for entry in self._scan().entries(after=seq - 1, stop_at=seq + 1):
                return entry
            return None
        for entry in self._scan().entries():
            if key in (entry.attribute("audit.record.id"), entry.attribute("log.record.uid")):
                return entry
        return None

    def tail(self, limit: int, flt: RecordFilter | None) -> tuple[list[Entry], object]:
        window: deque[Entry] = deque(maxlen=limit)
        scan = self._scan()
        for entry in scan.entries(complete_lines_only=True):
            if flt is None or flt.matches(entry):
                window.append(entry)
        return list(window), (scan.stats.records, scan.follow_state)

    def follow(self, position: object, flt: RecordFilter | None, poll_seconds: float) -> Iterator[Entry]:
        last, state = cast(tuple[int, _FollowState | None], position)
        return self.follow_from(last, state, flt, poll_seconds)

    def follow_from(
        self, last: int, state: _FollowState | None, flt: RecordFilter | None, poll_seconds: float
    ) -> Iterator[Entry]:
        """Read whole lines appended to the last file after `state`, reopening it when rotated."""
        if state is None:
            raise SourceError(f"cannot follow {self.files[-1]}: gzip files are never appended to")
        seq = last
        stats = ArchiveStats()
        f = open(state.path, "rb")
        f.seek(state.offset)
        line_number = 0
        pending = b""
        try:
            while True:
                chunk = f.readline()
                if chunk:
                    pending += chunk
                    if not pending.endswith(b"\n"):
                        continue
                    line, pending = pending, b""
                    line_number += 1
                    for request in requests_in_line(line, str(state.path), line_number, stats):
                        for resource, scope, lrs in _record_groups(
                            request, str(state.path), line_number, stats
                        ):
                            for lr in lrs:
                                seq += 1
                                entry = ArchiveEntry(seq, lr, resource, scope, str(state.path), line_number)
                                if flt is None or flt.matches(entry):
                                    yield entry
                    continue
                # At the end: has the file been rotated (renamed away) or truncated under us?
                try:
                    st = os.stat(state.path)
                except FileNotFoundError:
                    time.sleep(poll_seconds)
                    continue
                if st.st_ino != os.fstat(f.fileno()).st_ino or st.st_size < f.tell():
                    f.close()
                    f = open(state.path, "rb")
                    line_number = 0
                    continue
                time.sleep(poll_seconds)
        finally:
            f.close()

    def progress_total(self) -> int | None:
        return None

    def progress_done(self, entry: Entry) -> int:
        return entry.seq

    def last_pass_stats(self) -> ArchiveStats:
        """What the last query's pass over the files counted (records, torn lines...)."""
        return self._last_scan.stats if self._last_scan is not None else ArchiveStats()


__all__ = [
    "ArchiveEntry",
    "ArchiveSource",
    "Entry",
    "Page",
    "Source",
    "SourceError",
    "WalEntry",
    "WalSource",
]
