"""`otel-audit list`: newest records first, one page at a time, paged by a cursor (SEQ or SHARD:SEQ,...)."""

from __future__ import annotations

import click

from . import terminal
from .filters import RecordFilter
from .options import filter_options, report_warnings, source_options
from .sources import Source, SourceError
from .views import LIST_COLUMNS, list_row, record_json


@click.command("list")
@source_options
@filter_options
@click.option(
    "--limit", "-n", type=click.IntRange(1, 100_000), default=20, show_default=True, help="Rows per page."
)
@click.option(
    "--before",
    metavar="CURSOR",
    help="Only records before CURSOR, the next-page value printed after a page: SEQ, or for a "
    "WAL with shards SHARD:SEQ[,SHARD:SEQ...] (a plain SEQ is the root shard's).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per record (JSON Lines), every field.")
def list_records(source: Source, flt: RecordFilter, limit: int, before: str | None, as_json: bool) -> None:
    """List records newest first; the last line gives the --before value of the next page.

    The WAL holds the records not yet delivered plus those sharing a segment with them; the
    archive holds everything the collector received.
    """
    try:
        cursor = None if before is None else source.parse_before(before)
    except SourceError as exc:
        terminal.abort(str(exc), 2)
    page = source.newest(limit, cursor, flt)
    if as_json:
        terminal.display_json_lines(record_json(e.seq, e.record(), e.location, e.shard) for e in page.entries)
    elif page.entries:
        terminal.display_table(LIST_COLUMNS, (list_row(e) for e in page.entries), outcome_column="OUTCOME")
    else:
        terminal.display_info(
            "no records" + (" match" if not flt.empty else "") + (f" before {before}" if before else "")
        )
    report_warnings(source)
    if page.next_before is not None:
        terminal.display_info(f"next page: --before {page.next_before}")
