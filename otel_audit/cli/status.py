"""`otel-audit status`: is the backlog draining? Numbers for a human or a monitoring check."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from otel_audit.shards import ShardRoot, ShardStatus, read_budget

from . import terminal
from .filters import format_time
from .options import open_source, wal_option
from .sources import ArchiveSource, WalSource
from .walroot import WalRootSource, is_legacy

# Where the running application may record its sender's last export outcome (see docs/cli.md).
SENDER_STATE = Path("state") / "sender.json"
EXIT_BACKLOG_TOO_OLD = 2


def read_sender_state(wal_dir: Path) -> dict[str, Any] | None:
    """The sender's last export outcome, if the running process records it; None if unknown."""
    try:
        data = json.loads((wal_dir / SENDER_STATE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _when(value: object) -> str:
    """A time from sender.json: epoch seconds (what the sender writes) or already RFC 3339 text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return format_time(int(value * 1e9))
    return str(value)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _wal_status(source: WalSource, as_json: bool, max_age: float | None) -> None:
    stats = source.reader.stats()
    sender = read_sender_state(source.directory)
    pid = stats.get("lock_holder_pid")
    age = stats.get("oldest_unacked_age")
    too_old = max_age is not None and age is not None and age > max_age
    if as_json:
        out = {
            k: v for k, v in stats.items() if v is not None or k in ("oldest_unacked_age", "lock_holder_pid")
        }
        out.update(
            wal=str(source.directory),
            writer_running=pid is not None,
            sender=sender,
            max_age=max_age,
            backlog_too_old=too_old,
        )
        terminal.display_json(out)
    else:
        last_error = "unknown"
        if sender is not None:
            error = sender.get("last_error")
            last_error = str(error) if error else "none"
            if error and sender.get("last_error_time"):
                last_error += f" (at {_when(sender['last_error_time'])})"
        rows = [
            ("wal", str(source.directory)),
            ("writer", f"running (pid {pid})" if pid is not None else "not running (no process holds LOCK)"),
            ("backlog", f"{stats['backlog_records']} records, {_bytes(stats['backlog_bytes'])}"),
            ("oldest unacked", _age(age)),
            ("segments", f"{stats['segments']} ({_bytes(stats['bytes_on_disk'])} on disk)"),
            ("first seq", str(stats["first_seq"])),
            ("last seq", str(stats["last_seq"])),
            ("acked seq", str(stats["acked_seq"])),
            ("dead letters", str(stats["dead_letter_count"])),
            ("quarantined", str(stats["quarantine_count"])),
            ("last export error", last_error),
        ]
        if sender is not None and sender.get("last_success_time"):
            rows.append(("last export ok", _when(sender["last_success_time"])))
        terminal.display_fields(None, rows)
    if too_old:
        terminal.abort(
            f"backlog is {_age(age)} old, more than --max-age {max_age:g}s: the sender is not delivering",
            EXIT_BACKLOG_TOO_OLD,
        )


_SHARD_COLUMNS = (
    "SHARD",
    "PATH",
    "WRITER",
    "BACKLOG",
    "BYTES",
    "OLDEST",
    "DEAD",
    "QUAR",
    "BUDGET",
    "LAST EXPORT ERROR",
)


def _shard_json(shard: ShardStatus) -> dict[str, Any]:
    sender = read_sender_state(shard.path)
    out: dict[str, Any] = {
        "id": shard.id,
        "path": str(shard.path),
        "root": shard.is_root,
        "holder_pid": shard.holder_pid,
        "orphan": shard.holder_pid is None,
    }
    out.update((k, v) for k, v in shard.stats.items() if v is not None or k == "oldest_unacked_age")
    out.pop("lock_holder_pid", None)
    out.update(
        budget_bytes=read_budget(shard.path),
        last_error=(sender or {}).get("last_error"),
        last_error_time=(sender or {}).get("last_error_time"),
        sender=sender,
    )
    return out


def _total(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ages = [r["oldest_unacked_age"] for r in rows if r["oldest_unacked_age"] is not None]
    return {
        "shards": len(rows),
        "writers": sum(1 for r in rows if not r["orphan"]),
        "orphans": sum(1 for r in rows if r["orphan"]),
        "backlog_records": sum(int(r["backlog_records"]) for r in rows),
        "backlog_bytes": sum(int(r["backlog_bytes"]) for r in rows),
        "oldest_unacked_age": max(ages) if ages else None,
        "dead_letter_count": sum(int(r["dead_letter_count"]) for r in rows),
        "quarantine_count": sum(int(r["quarantine_count"]) for r in rows),
        "budget_bytes": sum(int(r["budget_bytes"] or 0) for r in rows),
    }


def _last_error(row: dict[str, Any]) -> str:
    if row["sender"] is None:
        return "unknown"
    if not row["last_error"]:
        return "none"
    when = row["last_error_time"]
    return str(row["last_error"]) + (f" (at {_when(when)})" if when else "")


def _root_status(root: Path, as_json: bool, max_age: float | None) -> None:
    """One row per shard (ShardRoot.status(), read without any lock), then the root's totals."""
    rows = [_shard_json(s) for s in ShardRoot(root).status()]
    total = _total(rows)
    age = total["oldest_unacked_age"]
    too_old = max_age is not None and age is not None and age > max_age
    if as_json:
        terminal.display_json(
            {"wal": str(root), "shards": rows, "total": total, "max_age": max_age, "backlog_too_old": too_old}
        )
    else:
        table = [
            (
                r["id"],
                "." if r["root"] else str(Path(r["path"]).relative_to(root)),
                "orphan" if r["orphan"] else f"pid {r['holder_pid']}",
                str(r["backlog_records"]),
                _bytes(r["backlog_bytes"]),
                _age(r["oldest_unacked_age"]),
                str(r["dead_letter_count"]),
                str(r["quarantine_count"]),
                "-" if r["budget_bytes"] is None else _bytes(r["budget_bytes"]),
                _last_error(r),
            )
            for r in rows
        ]
        table.append(
            (
                "total",
                f"{total['shards']} shard(s)",
                f"{total['writers']} live, {total['orphans']} orphan",
                str(total["backlog_records"]),
                _bytes(total["backlog_bytes"]),
                _age(age),
                str(total["dead_letter_count"]),
                str(total["quarantine_count"]),
                _bytes(total["budget_bytes"]),
                "",
            )
        )
        terminal.display_table(_SHARD_COLUMNS, table, wrap=("LAST EXPORT ERROR",))
    if too_old:
        terminal.abort(
            f"backlog is {_age(age)} old, more than --max-age {max_age:g}s: the sender is not delivering",
            EXIT_BACKLOG_TOO_OLD,
        )


def _archive_status(source: ArchiveSource, as_json: bool) -> None:
    newest = source.newest(1)  # one pass: the newest record, and every count on the way
    stats = source.last_pass_stats()
    newest_time = newest.entries[0].time_unix_nano if newest.entries else 0
    size = sum(os.path.getsize(p) for p in source.files)
    if as_json:
        terminal.display_json(
            {
                "files": [str(p) for p in source.files],
                "bytes": size,
                "records": stats.records,
                "requests": stats.requests,
                "torn_lines": stats.torn_lines,
                "malformed_lines": stats.malformed_lines,
                "newest_time_unix_nano": newest_time,
            }
        )
        return
    terminal.display_fields(
        None,
        [
            ("archive", ", ".join(str(p) for p in source.files)),
            ("size", _bytes(size)),
            ("records", str(stats.records)),
            ("requests", str(stats.requests)),
            ("torn lines", str(stats.torn_lines)),
            ("malformed lines", str(stats.malformed_lines)),
            ("newest record", format_time(newest_time)),
        ],
    )


@click.command("status")
@click.option(
    "--archive",
    "archive",
    metavar="PATH",
    multiple=True,
    help="Summarise the collector's archive file(s) instead of a WAL.",
)
@wal_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--max-age",
    type=click.FloatRange(0),
    metavar="SECONDS",
    help="Exit with status 2 when the oldest undelivered record is older than SECONDS (WAL only).",
)
@click.pass_context
def status(
    ctx: click.Context, wal: str | None, archive: tuple[str, ...], as_json: bool, max_age: float | None
) -> None:
    """Backlog, dead letters and the writer's pid of every shard, and totals; exit 2 past --max-age.

    --max-age applies to the oldest undelivered record of all shards.
    """
    source = open_source(ctx, wal, archive)
    if isinstance(source, WalRootSource):
        if is_legacy(source.directory):
            _wal_status(source.sources[0], as_json, max_age)
        else:
            _root_status(source.directory, as_json, max_age)
    else:
        if max_age is not None:
            terminal.abort("--max-age applies to a WAL (--wal), not to an archive", 2)
        assert isinstance(source, ArchiveSource)
        _archive_status(source, as_json)
