"""Every byte the CLI prints goes through here, so colours, widths and errors are decided once."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import IO, Any, NoReturn

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

# Width used when stdout is not a terminal: wide enough that a table piped to grep or a file
# keeps one record per line instead of wrapping at rich's default of 80 columns.
_PIPE_WIDTH = 240

_OUTCOME_STYLES = {"success": "green", "failure": "bold red", "unknown": "yellow"}


class CliError(click.ClickException):
    """A user-facing failure: printed as one `error:` line, no traceback, then exit `exit_code`."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        # click declares exit_code a class variable; click's runner reads it from the instance.
        setattr(self, "exit_code", exit_code)  # noqa: B010

    def show(self, file: IO[Any] | None = None) -> None:
        display_error(self.message)


def _console(*, stderr: bool = False) -> Console:
    # Built per call on purpose: click's test runner swaps sys.stdout/sys.stderr per invocation,
    # and a console created at import time would keep writing to the old streams.
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else _PIPE_WIDTH
    return Console(file=stream, width=width, highlight=False, soft_wrap=False)


def _print(renderable: Any) -> None:
    """Print to stdout; when it is not a terminal, without the padding rich adds to line ends."""
    console = _console()
    if console.is_terminal:
        console.print(renderable)
        return
    with console.capture() as capture:
        console.print(renderable)
    text = "\n".join(line.rstrip() for line in capture.get().splitlines())
    click.echo(text)


def abort(message: str, code: int = 1) -> NoReturn:
    """Stop the command with a one-line error on stderr and a non-zero exit status."""
    raise CliError(message, code)


def display_error(message: str) -> None:
    _console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)


def display_warning(message: str) -> None:
    _console(stderr=True).print(f"[yellow]warning:[/] {escape(message)}", soft_wrap=True)


def display_info(message: str) -> None:
    """A hint for the human (e.g. the next-page cursor): on stderr, so piped data stays clean."""
    _console(stderr=True).print(f"[dim]{escape(message)}[/]", soft_wrap=True)


def display_success(message: str) -> None:
    _console().print(f"[green]{escape(message)}[/]", soft_wrap=True)


def display_json(data: Any) -> None:
    """Print one JSON document (pretty on a terminal, compact otherwise)."""
    indent = 2 if sys.stdout.isatty() else None
    click.echo(json.dumps(data, indent=indent, default=_json_default, ensure_ascii=False))


def display_json_lines(rows: Iterable[Mapping[str, Any]]) -> None:
    """Print one compact JSON object per line (JSON Lines), flushing as it goes."""
    for row in rows:
        click.echo(dumps_compact(row))


def dumps_compact(row: Mapping[str, Any]) -> str:
    return json.dumps(row, separators=(",", ":"), default=_json_default, ensure_ascii=False)


def _json_default(value: object) -> Any:
    if isinstance(value, bytes | bytearray):
        import base64

        return base64.b64encode(bytes(value)).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def display_table(
    columns: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    outcome_column: str | None = None,
    widths: Sequence[int] | None = None,
    header: bool = True,
    wrap: Sequence[str] = (),
) -> None:
    """Print rows under upper-case headings; an `outcome` column is coloured by value.

    With `widths`, columns have fixed widths, so rows printed by separate calls (tail -f) line up.
    Columns named in `wrap` (free text such as an error message) wrap instead of squeezing the others.
    """
    table = Table(box=None, show_edge=False, pad_edge=False, header_style="bold", show_header=header)
    for i, name in enumerate(columns):
        width = widths[i] if widths is not None else None
        if name in wrap:
            table.add_column(name, overflow="fold", ratio=1)
        else:
            table.add_column(name, no_wrap=True, overflow="ellipsis", width=width, min_width=width)
    outcome_at = columns.index(outcome_column) if outcome_column in columns else -1
    for row in rows:
        cells = [escape(c) for c in row]
        if outcome_at >= 0:
            style = _OUTCOME_STYLES.get(row[outcome_at])
            if style:
                cells[outcome_at] = f"[{style}]{cells[outcome_at]}[/]"
        table.add_row(*cells)
    _print(table)


def display_fields(title: str | None, pairs: Iterable[tuple[str, str]]) -> None:
    """Print `name  value` lines aligned in two columns, under an optional bold title."""
    if title:
        _print(f"[bold]{escape(title)}[/]")
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="cyan", no_wrap=True)
    grid.add_column(overflow="fold")
    for name, value in pairs:
        grid.add_row(escape(name), escape(value))
    _print(grid)


def display_blank() -> None:
    click.echo("")


def progress_wanted(output_is_file: bool) -> bool:
    """Show a progress bar only to a human watching stderr while the data goes to a file.

    When the data is piped into another program, or printed on the very terminal the bar would
    use, there is no bar: it would interleave with the data or feed noise to a log collector.
    """
    if not sys.stderr.isatty():
        return False
    if output_is_file:
        return True
    import os
    import stat

    try:
        mode = os.fstat(sys.stdout.fileno()).st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISREG(mode)


class ProgressReporter:
    """A rich progress bar on stderr; `advance` is cheap enough to call once per record."""

    def __init__(self, progress: Progress | None, task: Any) -> None:
        self._progress = progress
        self._task = task

    def update(self, completed: float, total: float | None = None) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, total=total)


@contextmanager
def progress_bar(
    description: str, total: float | None, *, enabled: bool, unit: str
) -> Iterator[ProgressReporter]:
    """Yield a reporter that draws on stderr when `enabled`, and does nothing otherwise."""
    if not enabled:
        yield ProgressReporter(None, None)
        return
    console = Console(file=sys.stderr, force_terminal=True)
    columns = [
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(unit),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total)
        yield ProgressReporter(progress, task)


__all__ = [
    "CliError",
    "ProgressReporter",
    "abort",
    "display_blank",
    "display_error",
    "display_fields",
    "display_info",
    "display_json",
    "display_json_lines",
    "display_success",
    "display_table",
    "display_warning",
    "dumps_compact",
    "progress_bar",
    "progress_wanted",
]
