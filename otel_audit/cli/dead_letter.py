"""`otel-audit dead-letter`: records the collector rejected for good, with its reason, and requeueing them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from otel_audit.exceptions import OtelAuditError
from otel_audit.export.requeue import inbox, pending
from otel_audit.wal import deadletter
from otel_audit.wal.deadletter import DeadLetterEntry

from . import terminal
from .options import wal_option
from .requeue import RequeueResult, requeue
from .sources import SourceError, WalEntry, WalSource
from .views import detail_sections, record_json
from .walroot import Shard, WalRootSource, is_legacy, resolve, split_key

_COLUMNS = ("SEQ", "REJECTED AT", "EVENT", "REASON")
_SHARD_COLUMNS = ("SHARD", *_COLUMNS)


@dataclass(frozen=True)
class _Root:
    """The root's shards; `legacy` (no shards/) keeps the output of a single WAL, without SHARD."""

    shards: list[Shard]
    sources: list[WalSource]
    legacy: bool

    def pairs(self) -> list[tuple[Shard, WalSource]]:
        return list(zip(self.shards, self.sources, strict=True))


def _wal(wal: str | None) -> _Root:
    if not wal:
        terminal.abort("dead letters live in a WAL: give --wal DIR (or set OTEL_AUDIT_WAL_DIR)", 2)
    try:
        root = WalRootSource(wal)
    except SourceError as exc:
        terminal.abort(str(exc))
    return _Root(root.shards, root.sources, is_legacy(root.directory))


def _entry(source: WalSource, dl: DeadLetterEntry) -> WalEntry:
    return WalEntry(dl.seq, deadletter.read_payload(dl), source.contexts, source.directory, source.shard)


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


def _key(shard: Shard, seq: int) -> str:
    return str(seq) if shard.is_root else f"{shard.id}:{seq}"


def _locate(root: _Root, key: str) -> tuple[Shard, WalSource, int]:
    """`SEQ` (the root shard) or `SHARD:SEQ` -> the shard and the seq; a usage error otherwise."""
    name, seq = split_key(key.strip())
    if not seq.isdigit() or int(seq) < 1:
        terminal.abort(f"{key!r} is not a dead letter: give SEQ (the root shard's) or SHARD:SEQ", 2)
    shard = resolve(root.shards, name)
    if shard is None:
        known = ", ".join(s.id for s in root.shards)
        terminal.abort(f"no shard {name or 'root'!r} under this WAL (shards: {known or 'none'})")
    return shard, root.sources[root.shards.index(shard)], int(seq)


def _find(shard: Shard, source: WalSource, seq: int) -> DeadLetterEntry:
    for dl in deadletter.list_entries(source.directory):
        if dl.seq == seq:
            return dl
    key = _key(shard, seq)
    if seq in pending(source.directory):
        terminal.abort(f"dead letter {key} is already requeued, waiting for the running sender to pick it up")
    what = f"sequence number {seq}" if shard.is_root else f"key {key}"
    terminal.abort(f"no dead letter with {what} in {source.directory / deadletter.DEAD_LETTER_DIR}")


@click.group("dead-letter")
def dead_letter() -> None:
    """Inspect and requeue records the collector rejected permanently (moved to dead-letter/)."""


@dead_letter.command("list")
@wal_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per entry (JSON Lines).")
def list_dead(wal: str | None, as_json: bool) -> None:
    """List dead letters of every shard, oldest first, with the collector's error."""
    root = _wal(wal)
    listed = [
        (dl, shard, source)
        for shard, source in root.pairs()
        for dl in deadletter.list_entries(source.directory)
    ]
    order = {s.path: i for i, s in enumerate(root.shards)}
    listed.sort(key=lambda t: (t[0].time, order[t[1].path], t[0].seq))
    if as_json:
        rows: list[dict[str, object]] = []
        for dl, shard, source in listed:
            row: dict[str, object] = {"seq": dl.seq}
            if not root.legacy:
                row["shard"] = shard.id
            row.update(time=dl.time, reason=dl.reason)
            try:
                rec = _entry(source, dl)
                row.update(event_name=rec.event_name, record_id=rec.attribute("audit.record.id"))
            except (OtelAuditError, SourceError, OSError) as exc:
                row["error"] = str(exc)
            rows.append(row)
        terminal.display_json_lines(rows)
    elif listed:
        table = [
            (str(dl.seq), _short_time(dl.time), _event_of(source, dl), dl.reason) for dl, _, source in listed
        ]
        if root.legacy:
            terminal.display_table(_COLUMNS, table, wrap=("REASON",))
        else:
            shards = [shard.id for _, shard, _ in listed]
            terminal.display_table(
                _SHARD_COLUMNS,
                [(sid, *row) for sid, row in zip(shards, table, strict=True)],
                wrap=("REASON",),
            )
    else:
        terminal.display_info("no dead letters")
    waiting = [_key(shard, seq) for shard, source in root.pairs() for seq in pending(source.directory)]
    if waiting:
        terminal.display_info(
            f"{len(waiting)} requeued, waiting for the running sender: seq {', '.join(waiting)}"
        )


@dead_letter.command("show")
@wal_option
@click.argument("key", metavar="[SHARD:]SEQ")
@click.option("--json", "as_json", is_flag=True, help="The entry and its record as one JSON object.")
def show_dead(wal: str | None, key: str, as_json: bool) -> None:
    """Show one dead letter: why it was rejected, and every field of the record.

    SEQ alone is a dead letter of the root shard; SHARD:SEQ one of another shard (as listed).
    """
    root = _wal(wal)
    shard, source, seq = _locate(root, key)
    dl = _find(shard, source, seq)
    entry = _entry(source, dl)
    record = entry.record()
    location = str(dl.frame_path)
    if as_json:
        out: dict[str, object] = {"seq": dl.seq}
        if not root.legacy:
            out["shard"] = shard.id
        out.update(time=dl.time, reason=dl.reason, record=record_json(seq, record, location, entry.shard))
        terminal.display_json(out)
        return
    fields = [("seq", str(dl.seq)), ("rejected at", dl.time), ("reason", dl.reason)]
    if not root.legacy:
        fields.insert(0, ("shard", f"{shard.id} ({shard.path})"))
    terminal.display_fields("Dead letter", fields)
    for title, pairs in detail_sections(entry.key, record, location):
        terminal.display_blank()
        terminal.display_fields(title, pairs or [("-", "(none)")])


@dead_letter.command("requeue")
@wal_option
@click.argument("keys", metavar="[[SHARD:]SEQ]...", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Requeue every dead letter of every shard.")
def requeue_dead(wal: str | None, keys: tuple[str, ...], all_: bool) -> None:
    """Send dead letters again, each into its own shard: appended to the shard's WAL if no process
    holds it, else handed to that shard's running sender (its dead-letter/requeue/ inbox)."""
    root = _wal(wal)
    if all_ and keys:
        terminal.abort("give sequence numbers or --all, not both", 2)
    if not all_ and not keys:
        terminal.abort("give the sequence number(s) to requeue, or --all", 2)
    chosen: dict[Path, tuple[Shard, list[DeadLetterEntry]]] = {}
    if all_:
        for shard, source in root.pairs():
            found = deadletter.list_entries(source.directory)
            if found:
                chosen[shard.path] = (shard, found)
    else:
        located = [_locate(root, key) for key in keys]
        for shard, source, seq in located:  # every key is checked before anything moves
            chosen.setdefault(shard.path, (shard, []))[1].append(_find(shard, source, seq))
    if not chosen:
        terminal.display_info("no dead letters to requeue")
        return
    for _, entries in chosen.values():
        for entry in entries:
            deadletter.read_payload(
                entry
            )  # a damaged frame anywhere stops the command before any shard moves
    for shard, entries in chosen.values():
        _report(shard, root.legacy, requeue(shard.path, entries))


def _report(shard: Shard, legacy: bool, result: RequeueResult) -> None:
    listed = ", ".join(map(str, result.seqs))
    where = "" if legacy else f" of shard {shard.id}"
    if result.mode == "appended":
        terminal.display_success(
            f"requeued {len(result.seqs)} record(s) (seq {listed}){where} as WAL seq "
            f"{', '.join(map(str, result.new_seqs))}; they are sent when the application next runs"
        )
    else:
        terminal.display_success(
            f"handed {len(result.seqs)} record(s) (seq {listed}){where} to the running sender "
            f"(pid {result.writer_pid}) via {inbox(shard.path)}"
        )
