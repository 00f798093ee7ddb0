"""`otel-audit tail`: the last records, and with -f the new ones as they are written."""

from __future__ import annotations

import click

from . import terminal
from .filters import RecordFilter
from .options import filter_options, report_warnings, source_options
from .sources import Entry, Source
from .views import LIST_COLUMNS, TAIL_WIDTHS, TAIL_WIDTHS_SHARDS, list_row, record_json
from .walroot import WalRootSource, is_legacy


def _show(entries: list[Entry], as_json: bool, *, header: bool, widths: tuple[int, ...]) -> None:
    if as_json:
        terminal.display_json_lines(record_json(e.seq, e.record(), e.location, e.shard) for e in entries)
    else:
        rows = [list_row(e) for e in entries]
        terminal.display_table(LIST_COLUMNS, rows, outcome_column="OUTCOME", widths=widths, header=header)


@click.command("tail")
@source_options
@filter_options
@click.option(
    "--lines",
    "-n",
    "count",
    type=click.IntRange(0, 100_000),
    default=10,
    show_default=True,
    help="How many of the last records to show first.",
)
@click.option(
    "--follow", "-f", is_flag=True, help="Keep running and print records as they are written; Ctrl-C stops."
)
@click.option(
    "--interval",
    type=click.FloatRange(0.01, 60),
    default=0.5,
    show_default=True,
    help="Seconds between polls with -f.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per record (JSON Lines).")
def tail(source: Source, flt: RecordFilter, count: int, follow: bool, interval: float, as_json: bool) -> None:
    """Show the last records, oldest first; -f follows the WAL (polling every shard, new ones
    included) or the archive's active file."""
    sharded = isinstance(source, WalRootSource) and not is_legacy(source.directory)
    widths = TAIL_WIDTHS_SHARDS if sharded else TAIL_WIDTHS
    entries, position = source.tail(count, flt)
    if entries or follow:
        _show(entries, as_json, header=True, widths=widths)
    else:
        terminal.display_info("no records")
    report_warnings(source)
    if not follow:
        return
    try:
        for entry in source.follow(position, flt, interval):
            _show([entry], as_json, header=False, widths=widths)
    except KeyboardInterrupt:
        return
