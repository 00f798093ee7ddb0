"""Record filters of list/tail/export: time bounds, exact or glob matches, and a byte pre-check."""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
import time
from dataclasses import dataclass
from typing import Protocol

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_HEX = re.compile(r"^[0-9a-fA-F]{1,32}$")
_GLOB_CHARS = frozenset("*?[")


class TimeSpecError(ValueError):
    """A --since/--until value that is neither ISO-8601 nor a relative duration."""


def parse_time(text: str, *, now_ns: int | None = None) -> int:
    """Return ns since the epoch for `2026-04-02T06:28:01Z`, `2026-04-02`, `now`, or `15m`/`2h`/`1d` ago.

    A timestamp without an offset is UTC: audit records are compared across hosts and time zones,
    and the CLI prints every time in UTC, so what an operator copies from the output means the same
    when pasted back.
    """
    now = time.time_ns() if now_ns is None else now_ns
    value = text.strip()
    if value.lower() == "now":
        return now
    m = _RELATIVE.match(value)
    if m:
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2).lower()]
        return now - int(seconds * 1e9)
    try:
        parsed = dt.datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise TimeSpecError(
            f"{text!r} is not a time: use ISO-8601 (2026-04-02T06:28:01Z, 2026-04-02) "
            "or a relative age (30s, 15m, 2h, 1d, 1w)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    delta = parsed - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def format_time(ns: int) -> str:
    """ISO-8601 UTC with milliseconds, `-` for an unset (zero) timestamp."""
    if not ns:
        return "-"
    seconds, rest = divmod(ns, 1_000_000_000)
    stamp = dt.datetime.fromtimestamp(seconds, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{rest // 1_000_000:03d}Z"


def format_time_ns(ns: int) -> str:
    """ISO-8601 UTC with all nine fractional digits, for `get`, where nothing may be rounded away."""
    if not ns:
        return "-"
    seconds, rest = divmod(ns, 1_000_000_000)
    stamp = dt.datetime.fromtimestamp(seconds, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{rest:09d}Z"


class Filterable(Protocol):
    """What a filter needs from a record; sources answer it without building the full record."""

    @property
    def time_unix_nano(self) -> int: ...

    @property
    def event_name(self) -> str: ...

    @property
    def trace_id(self) -> str: ...

    def attribute(self, key: str) -> str: ...


@dataclass(frozen=True)
class RecordFilter:
    """All given conditions must hold (AND). Empty filter matches everything."""

    user: str | None = None
    event: str | None = None
    outcome: str | None = None
    trace_id: str | None = None
    since_ns: int | None = None
    until_ns: int | None = None

    def __post_init__(self) -> None:
        if self.trace_id is not None and not _HEX.match(self.trace_id):
            raise ValueError(f"--trace-id {self.trace_id!r} is not hexadecimal (up to 32 digits)")
        if self.since_ns is not None and self.until_ns is not None and self.since_ns > self.until_ns:
            raise ValueError("--since is later than --until: no record can match")

    @property
    def empty(self) -> bool:
        return all(
            v is None
            for v in (self.user, self.event, self.outcome, self.trace_id, self.since_ns, self.until_ns)
        )

    @property
    def _event_is_glob(self) -> bool:
        return self.event is not None and any(c in _GLOB_CHARS for c in self.event)

    def needles(self) -> tuple[bytes, ...]:
        """Byte strings every matching record's encoding must contain, so most others skip decoding.

        Sound for protobuf and JSON alike: an exact string value is stored verbatim (UTF-8) in
        both; a trace id is raw bytes in protobuf, so only the WAL source uses `trace_needle`.
        """
        out: list[bytes] = []
        if self.user:
            out.append(self.user.encode())
        if self.event and not self._event_is_glob:
            out.append(self.event.encode())
        if self.outcome:
            out.append(self.outcome.encode())
        return tuple(out)

    def trace_needle(self) -> bytes | None:
        """The whole bytes of the --trace-id prefix, for a pre-check on binary (protobuf) ids."""
        if not self.trace_id or len(self.trace_id) < 2:
            return None
        even = self.trace_id[: len(self.trace_id) // 2 * 2]
        return bytes.fromhex(even)

    def matches(self, record: Filterable) -> bool:
        if self.since_ns is not None or self.until_ns is not None:
            t = record.time_unix_nano
            if self.since_ns is not None and t < self.since_ns:
                return False
            if self.until_ns is not None and t > self.until_ns:
                return False
        if self.event is not None:
            name = record.event_name
            if self._event_is_glob:
                if not fnmatch.fnmatchcase(name, self.event):
                    return False
            elif name != self.event:
                return False
        if self.user is not None and record.attribute("audit.actor.id") != self.user:
            return False
        if self.outcome is not None and record.attribute("audit.outcome") != self.outcome:
            return False
        if self.trace_id is not None and not record.trace_id.startswith(self.trace_id.lower()):
            return False
        return True


__all__ = ["Filterable", "RecordFilter", "TimeSpecError", "format_time", "format_time_ns", "parse_time"]
