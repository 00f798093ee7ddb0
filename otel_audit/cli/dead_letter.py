"""`otel-audit dead-letter`: records the collector rejected for good, with its reason, and requeueing them."""

from __future__ import annotations

from pathlib import Path

import click

from otel_audit.exceptions import OtelAuditError
from otel_audit.export.requeue import pending
from otel_audit.wal import deadletter
from otel_audit.wal.deadletter import DeadLetterEntry

from . import terminal
from .options import wal_option
from .requeue import requeue
from .sources import SourceError, WalEntry, WalSource
from .views import detail_sections, record_json

_COLUMNS = ("SEQ", "REJECTED AT", "EVENT", "REASON")


def _wal(wal: str | None) -> WalSource:
    if not wal:
        terminal.abort("dead letters live in a WAL: give --wal DIR (or set OTEL_AUDIT_WAL_DIR)", 2)
    try:
        return WalSource(wal)
    except SourceError as exc:
        terminal.abort(str(exc))


def _entry(source: WalSource, dl: DeadLetterEntry) -> WalEntry:
    return WalEntry(dl.seq, deadletter.read_payload(dl), source.contexts, source.directory)


def _event_of(source: WalSource, dl: DeadLetterEntry) -> str:
    """The event name for a listing; a damaged entry is listed, not allowed to hide the others."""
    try:
        return _entry(source, dl).event_name
    except (OtelAuditError, SourceError, OSError) as exc:
        return f"(unreadable: {exc})"


def _short_time(rfc3339: str) -> str:
    """Seconds are enough to tell entries apart in a table; `show` and --json keep the full time."""
    head, _, _ = rfc3339.partition(".")
    return head + "Z" if "." in rfc3339 else rfc3339


def _find(source: WalSource, seq: int) -> DeadLetterEntry:
    for dl in deadletter.list_entries(source.directory):
        if dl.seq == seq:
            return dl
    if seq in pending(source.directory):
        terminal.abort(f"dead letter {seq} is already requeued, waiting for the running sender to pick it up")
    terminal.abort(
        f"no dead letter with sequence number {seq} in {source.directory / deadletter.DEAD_LETTER_DIR}"
    )


@click.group("dead-letter")
def dead_letter() -> None:
    """Inspect and requeue records the collector rejected permanently (moved to dead-letter/)."""


@dead_letter.command("list")
@wal_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per entry (JSON Lines).")
def list_dead(wal: str | None, as_json: bool) -> None:
    """List dead letters, oldest first, with the collector's error."""
    source = _wal(wal)
    entries = deadletter.list_entries(source.directory)
    if as_json:
        rows: list[dict[str, object]] = []
        for dl in entries:
            row: dict[str, object] = {"seq": dl.seq, "time": dl.time, "reason": dl.reason}
            try:
                rec = _entry(source, dl)
                row.update(event_name=rec.event_name, record_id=rec.attribute("audit.record.id"))
            except (OtelAuditError, SourceError, OSError) as exc:
                row["error"] = str(exc)
            rows.append(row)
        terminal.display_json_lines(rows)
    elif entries:
        terminal.display_table(
            _COLUMNS,
            [(str(dl.seq), _short_time(dl.time), _event_of(source, dl), dl.reason) for dl in entries],
            wrap=("REASON",),
        )
    else:
        terminal.display_info("no dead letters")
    waiting = pending(source.directory)
    if waiting:
        terminal.display_info(
            f"{len(waiting)} requeued, waiting for the running sender: seq {', '.join(map(str, waiting))}"
        )


@dead_letter.command("show")
@wal_option
@click.argument("seq", type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="The entry and its record as one JSON object.")
def show_dead(wal: str | None, seq: int, as_json: bool) -> None:
    """Show one dead letter: why it was rejected, and every field of the record."""
    source = _wal(wal)
    dl = _find(source, seq)
    entry = _entry(source, dl)
    record = entry.record()
    location = str(dl.frame_path)
    if as_json:
        terminal.display_json(
            {
                "seq": dl.seq,
                "time": dl.time,
                "reason": dl.reason,
                "record": record_json(seq, record, location),
            }
        )
        return
    terminal.display_fields(
        "Dead letter", [("seq", str(dl.seq)), ("rejected at", dl.time), ("reason", dl.reason)]
    )
    for title, pairs in detail_sections(seq, record, location):
        terminal.display_blank()
        terminal.display_fields(title, pairs or [("-", "(none)")])


@dead_letter.command("requeue")
@wal_option
@click.argument("seqs", metavar="[SEQ]...", nargs=-1, type=click.IntRange(1))
@click.option("--all", "all_", is_flag=True, help="Requeue every dead letter.")
def requeue_dead(wal: str | None, seqs: tuple[int, ...], all_: bool) -> None:
    """Send dead letters again: appended to the WAL if no application holds it, else handed to its sender."""
    source = _wal(wal)
    if all_ and seqs:
        terminal.abort("give sequence numbers or --all, not both", 2)
    if not all_ and not seqs:
        terminal.abort("give the sequence number(s) to requeue, or --all", 2)
    entries = deadletter.list_entries(source.directory) if all_ else [_find(source, s) for s in seqs]
    if not entries:
        terminal.display_info("no dead letters to requeue")
        return
    result = requeue(Path(source.directory), entries)
    listed = ", ".join(map(str, result.seqs))
    if result.mode == "appended":
        terminal.display_success(
            f"requeued {len(result.seqs)} record(s) (seq {listed}) as WAL seq "
            f"{', '.join(map(str, result.new_seqs))}; they are sent when the application next runs"
        )
    else:
        terminal.display_success(
            f"handed {len(result.seqs)} record(s) (seq {listed}) to the running sender (pid {result.writer_pid}) "
            f"via {source.directory / 'dead-letter' / 'requeue'}"
        )
