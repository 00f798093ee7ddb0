"""The WAL's knobs, validated once at open so a bad value fails before anything is written."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import TypeVar

from otel_audit.exceptions import ConfigError


class Durability(enum.StrEnum):
    """When an appended record is fsynced; every mode survives SIGKILL (see docs/wal.md)."""

    ALWAYS = "always"
    INTERVAL = "interval"
    NEVER = "never"


class FullPolicy(enum.StrEnum):
    """What ``append`` does when ``max_bytes`` is reached or the disk is full."""

    BLOCK = "block"
    RAISE = "raise"
    DROP_NEWEST = "drop_newest"


_E = TypeVar("_E", Durability, FullPolicy)

# Below this a segment would hold almost nothing but its header and roll on every append.
MIN_SEGMENT_BYTES = 1024


def parse_enum(kind: type[_E], value: object, name: str) -> _E:
    """Accept the enum member or its string value; anything else is a ConfigError."""
    try:
        return kind(value)  # type: ignore[arg-type]  # any value is checked by the Enum
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise ConfigError(f"wal: {name}={value!r} is not valid; use one of: {allowed}") from None


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"wal: {name}={value!r} must be a finite number")
    return float(value)


def _integer(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"wal: {name}={value!r} must be an integer number of bytes")
    return value


@dataclass(frozen=True)
class WALOptions:
    """Validated ``WAL.open`` arguments."""

    durability: Durability
    fsync_interval: float
    segment_bytes: int
    max_bytes: int
    full_policy: FullPolicy
    full_timeout: float

    @classmethod
    def parse(
        cls,
        *,
        durability: object,
        fsync_interval: object,
        segment_bytes: object,
        max_bytes: object,
        full_policy: object,
        full_timeout: object,
    ) -> WALOptions:
        """Validate every argument; raises ConfigError naming the argument and the rule."""
        seg = _integer(segment_bytes, "segment_bytes")
        cap = _integer(max_bytes, "max_bytes")
        interval = _number(fsync_interval, "fsync_interval")
        timeout = _number(full_timeout, "full_timeout")
        if seg < MIN_SEGMENT_BYTES:
            raise ConfigError(f"wal: segment_bytes={seg} is below the minimum {MIN_SEGMENT_BYTES}")
        if cap < seg:
            raise ConfigError(f"wal: max_bytes={cap} is smaller than segment_bytes={seg}; raise max_bytes")
        if interval <= 0:
            raise ConfigError(f"wal: fsync_interval={interval} must be > 0 seconds")
        if timeout < 0:
            raise ConfigError(f"wal: full_timeout={timeout} must be >= 0 seconds")
        return cls(
            durability=parse_enum(Durability, durability, "durability"),
            fsync_interval=interval,
            segment_bytes=seg,
            max_bytes=cap,
            full_policy=parse_enum(FullPolicy, full_policy, "full_policy"),
            full_timeout=timeout,
        )
