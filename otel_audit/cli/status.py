"""`otel-audit status`: is the backlog draining? Numbers for a human or a monitoring check."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from . import terminal
from .filters import format_time
from .options import open_source, wal_option
from .sources import ArchiveSource, WalSource

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
                last_error += f" (at {sender['last_error_time']})"
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
            rows.append(("last export ok", str(sender["last_success_time"])))
        terminal.display_fields(None, rows)
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
    """Backlog, sequence numbers, dead letters and the writer's pid; exit 2 past --max-age."""
    source = open_source(ctx, wal, archive)
    if isinstance(source, WalSource):
        _wal_status(source, as_json, max_age)
    else:
        if max_age is not None:
            terminal.abort("--max-age applies to a WAL (--wal), not to an archive", 2)
        assert isinstance(source, ArchiveSource)
        _archive_status(source, as_json)
