"""The `otel-audit` command: a click group whose failures are one line on stderr, never a traceback."""

from __future__ import annotations

import errno
from typing import Any

import click

from otel_audit.exceptions import OtelAuditError
from otel_audit.version import __version__

from . import terminal
from .sources import SourceError


class AuditGroup(click.Group):
    """Turns the errors an operator can cause or fix (bad path, damaged file) into one-line messages.

    Anything else is a bug and keeps its traceback.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (SourceError, OtelAuditError) as exc:
            terminal.abort(str(exc))
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                raise  # click closes stdout quietly when the reader of a pipe went away
            where = f": {exc.filename}" if exc.filename else ""
            terminal.abort(f"{exc.strerror or exc}{where}")


@click.group(
    cls=AuditGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(__version__, prog_name="otel-audit")
def main() -> None:
    """Inspect the audit trail: the local write-ahead log (--wal) or the collector's archive (--archive)."""


def _register() -> None:
    from .dead_letter import dead_letter
    from .export import export
    from .get import get
    from .list import list_records
    from .status import status
    from .tail import tail
    from .verify import verify

    for command in (status, list_records, get, tail, export, dead_letter, verify):
        main.add_command(command)


_register()

__all__ = ["AuditGroup", "main"]
