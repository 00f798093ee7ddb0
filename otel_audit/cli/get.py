"""`otel-audit get`: every field of one record, found by record id or sequence number."""

from __future__ import annotations

import click

from . import terminal
from .options import report_warnings, source_options
from .sources import Source
from .views import detail_sections, record_json
from .walroot import split_key


@click.command("get")
@source_options
@click.argument("key", metavar="UID|[SHARD:]SEQ")
@click.option("--json", "as_json", is_flag=True, help="The record as one JSON object.")
def get(source: Source, key: str, as_json: bool) -> None:
    """Show one record: UID is its audit.record.id (or log.record.uid), searched in every shard;
    SEQ its sequence number, SHARD:SEQ in a shard other than the root."""
    key = key.strip()
    if not key:
        terminal.abort("give a record id or a sequence number", 2)
    entry = source.find(key)
    report_warnings(source)
    if entry is None:
        what = (
            f"sequence number {key}"
            if split_key(key)[0] is not None or key.isdigit()
            else f"record id {key!r}"
        )
        terminal.abort(f"no record with {what} in {source.label}")
    record = entry.record()
    if as_json:
        terminal.display_json(record_json(entry.seq, record, entry.location, entry.shard))
        return
    for i, (title, pairs) in enumerate(detail_sections(entry.key, record, entry.location)):
        if i:
            terminal.display_blank()
        terminal.display_fields(title, pairs or [("-", "(none)")])
