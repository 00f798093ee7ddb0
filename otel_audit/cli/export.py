"""`otel-audit export`: stream records oldest first as JSON Lines or CSV, to stdout or a file."""

from __future__ import annotations

import csv
import sys
from typing import IO

import click

from . import terminal
from .filters import RecordFilter
from .options import filter_options, report_warnings, source_options
from .sources import Source
from .views import CSV_COLUMNS, csv_row, record_json


@click.command("export")
@source_options
@filter_options
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    show_default=True,
    help="JSON Lines (every field) or CSV (audit columns, other attributes as JSON).",
)
@click.option(
    "--output", "-o", type=click.Path(dir_okay=False, writable=True), help="Write to FILE instead of stdout."
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Force the progress bar on or off (default: on when stderr is a terminal and the data goes to a file).",
)
def export(source: Source, flt: RecordFilter, fmt: str, output: str | None, progress: bool | None) -> None:
    """Export every matching record, oldest first, streaming (memory stays flat whatever the size)."""
    show = terminal.progress_wanted(output is not None) if progress is None else progress
    total = source.progress_total() if show else None
    out: IO[str]
    out = open(output, "w", newline="", encoding="utf-8") if output else sys.stdout
    written = 0
    try:
        writer = csv.writer(out) if fmt == "csv" else None
        if writer is not None:
            writer.writerow(CSV_COLUMNS)
        with terminal.progress_bar("exporting", total, enabled=show, unit="records") as bar:
            for n, entry in enumerate(source.entries(0, flt), 1):
                record = entry.record()
                if writer is not None:
                    writer.writerow(csv_row(entry.key, record))
                else:
                    out.write(
                        terminal.dumps_compact(record_json(entry.seq, record, entry.location, entry.shard))
                    )
                    out.write("\n")
                written += 1
                if n % 1000 == 0:
                    bar.update(source.progress_done(entry), total)
            bar.update(total if total is not None else written, total if total is not None else written)
    finally:
        if output:
            out.close()
        else:
            out.flush()
    report_warnings(source)
    if output:
        terminal.display_info(f"exported {written} records to {output}")
