"""Options shared by the commands: where to read (--wal/--archive) and which records (filters)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from otel_audit.config import OTEL_AUDIT_WAL_DIR

from . import terminal
from .filters import RecordFilter, TimeSpecError, parse_time
from .sources import ArchiveSource, Source, SourceError
from .walroot import WalRootSource

F = TypeVar("F", bound=Callable[..., Any])


class TimeSpec(click.ParamType[int, str]):
    """An ISO-8601 time or a relative age, as ns since the epoch; a bad value is a one-line error."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_time(str(value))
        except TimeSpecError as exc:
            opt = param.opts[0] if param is not None and param.opts else "time"
            terminal.abort(f"{opt}: {exc}", 2)


def open_source(ctx: click.Context, wal: str | None, archive: tuple[str, ...]) -> Source:
    """Pick the source: --archive wins over a --wal that only came from OTEL_AUDIT_WAL_DIR."""
    wal_from_env = ctx.get_parameter_source("wal") in (ParameterSource.ENVIRONMENT, ParameterSource.DEFAULT)
    if archive and wal and not wal_from_env:
        terminal.abort("give either --wal or --archive, not both", 2)
    try:
        if archive:
            return ArchiveSource(archive)
        if wal:
            return WalRootSource(wal)
    except SourceError as exc:
        terminal.abort(str(exc))
    terminal.abort(f"no source: give --wal DIR or --archive FILE (or set {OTEL_AUDIT_WAL_DIR})", 2)


def wal_option(f: F) -> F:
    return click.option(
        "--wal",
        "wal",
        metavar="DIR",
        envvar=OTEL_AUDIT_WAL_DIR,
        show_envvar=True,
        help="The application's WAL directory (its wal_dir: the root shard and shards/*), "
        "read without any lock while the application writes.",
    )(f)


def source_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add --wal/--archive and hand the command a ready `source` instead."""

    def wrapper(*args: Any, wal: str | None, archive: tuple[str, ...], **kwargs: Any) -> Any:
        source = open_source(click.get_current_context(), wal, archive)
        return f(*args, source=source, **kwargs)

    functools.update_wrapper(wrapper, f)
    with_wal = wal_option(wrapper)
    return click.option(
        "--archive",
        "archive",
        metavar="PATH",
        multiple=True,
        help="The collector's file-exporter output (JSON lines, gzip allowed; rotated "
        "predecessors are included). Repeat for several files, oldest first.",
    )(with_wal)


def filter_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add the record filters and hand the command one RecordFilter (`flt`)."""

    @click.option("--user", metavar="ID", help="Only records whose audit.actor.id is ID.")
    @click.option(
        "--event", metavar="NAME", help="Only this event name; a glob such as 'user.login.*' works."
    )
    @click.option(
        "--outcome", type=click.Choice(["success", "failure", "unknown"]), help="Only this outcome."
    )
    @click.option(
        "--trace-id", "trace_id", metavar="HEX", help="Only records whose trace id starts with HEX."
    )
    @click.option(
        "--since",
        type=TimeSpec(),
        help="Not before TIME: ISO-8601 (2026-04-02T06:28Z) or an age (15m, 2h, 1d).",
    )
    @click.option("--until", type=TimeSpec(), help="Not after TIME: ISO-8601 or an age (15m, 2h, 1d).")
    @functools.wraps(f)
    def wrapper(
        *args: Any,
        user: str | None,
        event: str | None,
        outcome: str | None,
        trace_id: str | None,
        since: int | None,
        until: int | None,
        **kwargs: Any,
    ) -> Any:
        try:
            flt = RecordFilter(user, event, outcome, trace_id, since, until)
        except ValueError as exc:
            terminal.abort(str(exc), 2)
        return f(*args, flt=flt, **kwargs)

    return wrapper


def report_warnings(source: Source) -> None:
    for warning in source.warnings():
        terminal.display_warning(warning)


__all__ = ["TimeSpec", "filter_options", "open_source", "report_warnings", "source_options", "wal_option"]
