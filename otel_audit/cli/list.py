"""`otel-audit list`: newest records first, one page at a time, paged by sequence number."""

from __future__ import annotations

import click

from . import terminal
from .filters import RecordFilter
from .options import filter_options, report_warnings, source_options
from .sources import Source
from .views import LIST_COLUMNS, list_row, record_json


@click.command("list")
@source_options
@filter_options
@click.option(
    "--limit", "-n", type=click.IntRange(1, 100_000), default=20, show_default=True, help="Rows per page."
)
@click.option(
    "--before",
    type=click.IntRange(1),
    metavar="SEQ",
    help="Only records older than SEQ (the next-page cursor).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per record (JSON Lines), every field.")
def list_records(source: Source, flt: RecordFilter, limit: int, before: int | None, as_json: bool) -> None:
    """List records newest first; the last line gives the --before value of the next page.

    The WAL holds the records not yet delivered plus those sharing a segment with them; the
    archive holds everything the collector received.
    """
    page = source.newest(limit, before, flt)
    if as_json:
        terminal.display_json_lines(record_json(e.seq, e.record(), e.location) for e in page.entries)
    elif page.entries:
        terminal.display_table(LIST_COLUMNS, (list_row(e) for e in page.entries), outcome_column="OUTCOME")
    else:
        terminal.display_info(
            "no records" + (" match" if not flt.empty else "") + (f" before {before}" if before else "")
        )
    report_warnings(source)
    if page.next_before is not None:
        terminal.display_info(f"next page: --before {page.next_before}")
