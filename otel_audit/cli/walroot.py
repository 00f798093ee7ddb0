"""A WAL root read as one source: every shard's records, merged newest first by time in bounded memory."""

from __future__ import annotations

import heapq
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otel_audit.exceptions import OtelAuditError
from otel_audit.shards import SHARDS_DIRNAME, ShardRoot, shard_id
from otel_audit.wal.reader import WALCursor, last_frame_seq
from otel_audit.wal.segment import list_segments

from .filters import RecordFilter
from .sources import Entry, Page, Source, SourceError, WalEntry, WalSource

ROOT_ALIAS = "root"
"""Names the root shard in `SHARD:SEQ`, besides its id; a plain SEQ means the root shard too."""

RESCAN_SECONDS = 1.0
_FOLLOW_BATCH = 512
_FOLLOW_BATCH_BYTES = 4 << 20
_CHUNK = 2048  # entries read per shard at a time while merging a page: memory is shards x chunk at most


@dataclass(frozen=True)
class Shard:
    """One WAL under the root, as the CLI names it."""

    id: str
    path: Path
    is_root: bool

    @property
    def label(self) -> str | None:
        """The prefix of its records' keys: None for the root, whose records keep a plain SEQ."""
        return None if self.is_root else self.id

    def names(self) -> tuple[str, ...]:
        return (self.id, self.path.name, ROOT_ALIAS) if self.is_root else (self.id, self.path.name)


def check_root(directory: Path) -> None:
    """Refuse what cannot be a WAL root with a message that says what to point --wal at."""
    if not directory.exists():
        raise SourceError(f"WAL directory {directory} does not exist (check --wal or OTEL_AUDIT_WAL_DIR)")
    if not directory.is_dir():
        raise SourceError(f"{directory} is not a directory; --wal takes the WAL directory")
    if not (directory / "segments").is_dir() and not (directory / SHARDS_DIRNAME).is_dir():
        raise SourceError(
            f"{directory} is not an otel-audit WAL (no segments/ inside); "
            "point --wal at the directory the application writes (its OTEL_AUDIT_WAL_DIR)"
        )


def is_legacy(directory: Path) -> bool:
    """A WAL written before shards existed (no shards/): the CLI prints exactly what it always did."""
    return not (directory / SHARDS_DIRNAME).is_dir()


def list_shards(directory: Path) -> list[Shard]:
    """Every shard under the root: the root first, then shards/<id>/ by name."""
    return [Shard(shard_id(p), p, p == directory) for p in ShardRoot(directory).paths()]


def split_key(text: str) -> tuple[str | None, str]:
    """`SHARD:SEQ` -> (SHARD, SEQ); anything else (a plain SEQ, a record id) -> (None, text)."""
    shard, sep, rest = text.rpartition(":")
    if sep and shard and rest.isdigit() and ":" not in shard:
        return shard, rest
    return None, text


def resolve(shards: list[Shard], name: str | None) -> Shard | None:
    """The shard called `name` (its id, its directory name, or `root`); None names the root."""
    for shard in shards:
        if (name is None and shard.is_root) or (name is not None and name in shard.names()):
            return shard
    return None


def format_cursor(bounds: dict[Shard, int]) -> str:
    """`SHARD:SEQ,...` (the root's part as a plain SEQ), root first, then by shard name."""
    ordered = sorted(bounds.items(), key=lambda kv: (not kv[0].is_root, kv[0].path.name))
    return ",".join(str(seq) if s.is_root else f"{s.id}:{seq}" for s, seq in ordered)


class WalRootSource(Source):
    """Every shard of a `wal_dir` root: one WalSource each (its own reader and context store).

    Pages are a k-way merge of the shards' newest-first streams, newest time first; the next-page
    cursor is where each shard's stream stopped (`SHARD:SEQ,...`), so paging resumes the same merge
    exactly and visits every record once, whatever the clocks. A shard missing from a cursor has no
    older record left (or did not exist when paging began: its records are all newer).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        check_root(self.directory)
        self.label = f"WAL {self.directory}"
        self.shards: list[Shard] = []
        self.sources: list[WalSource] = []
        for shard in list_shards(self.directory):
            source = self._open(shard)
            if source is not None:
                self.shards.append(shard)
                self.sources.append(source)
        self._warnings: list[str] = []
        self._done = 0

    @staticmethod
    def _open(shard: Shard) -> WalSource | None:
        try:
            return WalSource(shard.path, shard.label)
        except (SourceError, OSError):
            if shard.is_root:
                raise
            return None  # removed (drained) since it was listed

    def warnings(self) -> list[str]:
        return list(self._warnings)

    # -- the cursor ----------------------------------------------------------------------------

    def parse_before(self, text: str) -> dict[int, int]:
        """`SHARD:SEQ[,SHARD:SEQ...]` or a plain SEQ (the root shard) -> {shard index: seq bound}."""
        bounds: dict[int, int] = {}
        for part in text.split(","):
            name, seq = split_key(part.strip())
            if not seq.isdigit() or int(seq) < 1:
                raise SourceError(
                    f"--before {text!r} is not a cursor: give SEQ or SHARD:SEQ[,SHARD:SEQ...] "
                    "as printed after the previous page"
                )
            shard = resolve(self.shards, name)
            if shard is None:
                self._warnings.append(
                    f"shard {name or ROOT_ALIAS!r} of the cursor is gone (removed once drained); "
                    "listing the others"
                )
                continue
            bounds[self.shards.index(shard)] = int(seq)
        return bounds

    # -- reading -------------------------------------------------------------------------------

    def entries(self, after: int = 0, flt: RecordFilter | None = None) -> Iterator[Entry]:
        """Oldest first: one shard in its seq order; several merged by time (a heap of one head each)."""
        if len(self.sources) == 1:
            for entry in self.sources[0].entries(after, flt):
                self._done += 1
                yield entry
            return
        tagged = [
            ((e.time_unix_nano, i, e.seq, e) for e in source.entries(after, flt))
            for i, source in enumerate(self.sources)
        ]
        for *_, entry in heapq.merge(*tagged, key=lambda t: t[:3]):
            self._done += 1
            yield entry

    def newest(self, limit: int, before: Any = None, flt: RecordFilter | None = None) -> Page:
        bounds: dict[int, int | None] = (
            {i: None for i in range(len(self.sources))} if before is None else dict(before)
        )
        heads: list[tuple[int, int, int, Entry]] = []
        streams: dict[int, Iterator[Entry]] = {}
        for i, bound in bounds.items():
            stream = _backwards(self.sources[i], bound, flt, limit)
            _push(heads, i, stream)
            streams[i] = stream
        found: list[Entry] = []
        last_shown: dict[int, int] = {}
        while heads and len(found) < limit:
            _, i, _, entry = heapq.heappop(heads)
            found.append(entry)
            last_shown[i] = entry.seq
            _push(heads, i, streams[i])
        next_bounds = {self.shards[i]: last_shown.get(i, entry.seq + 1) for _, i, _, entry in heads}
        high = max((e.seq for e in found), default=0)
        return Page(found, format_cursor(next_bounds) if next_bounds else None, high)

    def find(self, key: str) -> Entry | None:
        name, rest = split_key(key)
        if name is not None or key.isdigit():
            shard = resolve(self.shards, name)
            return None if shard is None else self.sources[self.shards.index(shard)].find(rest)
        for source in self.sources:
            entry = source.find(key)
            if entry is not None:
                return entry
        return None

    def tail(self, limit: int, flt: RecordFilter | None) -> tuple[list[Entry], object]:
        """The position is taken first, so a record written meanwhile is followed, never skipped."""
        position = {shard.path: _last_seq(shard.path) for shard in self.shards}
        bounds = {i: position[s.path] + 1 for i, s in enumerate(self.shards)}
        page = self.newest(limit, bounds, flt)
        return list(reversed(page.entries)), position

    def follow(self, position: object, flt: RecordFilter | None, poll_seconds: float) -> Iterator[Entry]:
        """Poll every shard's cursor; every second look for new shards (read from their start).

        A shard removed once drained is dropped; what was printed of it stays printed.
        """
        assert isinstance(position, dict)
        followers: dict[Path, _Follower] = {}
        order = {s.path: i for i, s in enumerate(self.shards)}
        for shard, source in zip(self.shards, self.sources, strict=True):
            followers[shard.path] = _Follower(source, int(position.get(shard.path, 0)), flt)
        scanned = time.monotonic()
        try:
            while True:
                got: list[tuple[int, int, int, Entry]] = []
                for path, follower in list(followers.items()):
                    batch = follower.poll()
                    if batch is None:
                        follower.close()
                        del followers[path]
                        continue
                    got.extend((e.time_unix_nano, order[path], e.seq, e) for e in batch)
                if time.monotonic() - scanned >= RESCAN_SECONDS:
                    scanned = time.monotonic()
                    for shard in list_shards(self.directory):
                        if shard.path in order:
                            continue  # followed already (or followed and dropped once removed)
                        opened = self._open(shard)
                        if opened is not None:
                            order[shard.path] = len(order)
                            followers[shard.path] = _Follower(opened, 0, flt)
                if not got:
                    time.sleep(poll_seconds)
                    continue
                got.sort(key=lambda t: t[:3])
                for *_, entry in got:
                    yield entry
        finally:
            for follower in followers.values():
                follower.close()

    def progress_total(self) -> int | None:
        self._done = 0
        totals = [source.progress_total() for source in self.sources]
        return sum(t or 0 for t in totals)

    def progress_done(self, entry: Entry) -> int:
        return self._done


class _Follower:
    """One shard's cursor for `tail -f`; `poll` returns None once the shard is gone."""

    def __init__(self, source: WalSource, after: int, flt: RecordFilter | None) -> None:
        self.path = source.directory
        self._match: Callable[[int, bytes], WalEntry | None] = source._matcher(flt)
        self._cursor: WALCursor = source.reader.cursor(after=after)

    def poll(self) -> list[Entry] | None:
        try:
            batch = self._cursor.next_batch(_FOLLOW_BATCH, _FOLLOW_BATCH_BYTES)
        except (OtelAuditError, OSError):
            if not self.path.exists():
                return None
            raise
        if not batch and not self.path.exists():
            return None
        out: list[Entry] = []
        for seq, payload in batch:
            entry = self._match(seq, payload)
            if entry is not None:
                out.append(entry)
        return out

    def close(self) -> None:
        self._cursor.close()


def _backwards(
    source: WalSource, before: int | None, flt: RecordFilter | None, limit: int
) -> Iterator[Entry]:
    """One shard's matching entries, newest first, a chunk at a time (a page never needs more than limit+1)."""
    chunk = min(limit + 1, _CHUNK)
    while True:
        page = source.newest(chunk, before, flt)
        yield from page.entries
        if page.next_before is None or not page.entries:
            return
        before = int(page.next_before)


def _push(heads: list[tuple[int, int, int, Entry]], i: int, stream: Iterator[Entry]) -> None:
    entry = next(stream, None)
    if entry is not None:
        heapq.heappush(heads, (-entry.time_unix_nano, i, -entry.seq, entry))


def _last_seq(path: Path) -> int:
    for segment in reversed(list_segments(path / "segments")):
        seq = last_frame_seq(segment.path)
        if seq is not None:
            return seq
    return 0


__all__ = [
    "ROOT_ALIAS",
    "Shard",
    "WalRootSource",
    "check_root",
    "format_cursor",
    "is_legacy",
    "list_shards",
    "resolve",
    "split_key",
]
