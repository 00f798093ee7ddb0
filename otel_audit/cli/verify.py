"""`otel-audit verify`: check hash chains, proofs and digests of a WAL or an archive; exit 1 on a problem."""

from __future__ import annotations

import sys

import click

from otel_audit.integrity.signing import Verifier, hmac_verifier_from_key_file, load_public_key
from otel_audit.integrity.verify import (
    DEFAULT_MAX_FINDINGS,
    SEVERITY_PROBLEM,
    VerifyReport,
    verify_archive,
    verify_wal,
)

from . import terminal
from .options import open_source, wal_option
from .sources import ArchiveSource
from .walroot import WalRootSource

EXIT_PROBLEMS = 1
# A progress bar is worth drawing only for inputs that take a while (~1 s and more).
_BIG_ARCHIVE_BYTES = 32 << 20
_BIG_WAL_RECORDS = 50_000


@click.command("verify")
@click.option(
    "--archive",
    "archive",
    metavar="PATH",
    multiple=True,
    help="Verify the collector's archive file(s) (rotated predecessors included) instead of a WAL.",
)
@wal_option
@click.option(
    "--key-file",
    "key_files",
    metavar="FILE",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="HMAC-SHA256 key file, as OTEL_AUDIT_HMAC_KEY_FILE reads it. Repeat for rotated keys.",
)
@click.option(
    "--public-key",
    "public_keys",
    metavar="FILE",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="PEM public key (Ed25519 for EdDSA, P-256 for ES256). Repeat for rotated keys.",
)
@click.option(
    "--complete",
    is_flag=True,
    help="The input holds whole streams: one that does not start at 1 or was not closed is a problem.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@click.option(
    "--max-findings",
    type=click.IntRange(1),
    default=DEFAULT_MAX_FINDINGS,
    show_default=True,
    help="Findings listed in detail; the rest are counted.",
)
@click.option("--progress/--no-progress", default=None, help="Force the progress bar (stderr) on or off.")
@click.pass_context
def verify(
    ctx: click.Context,
    wal: str | None,
    archive: tuple[str, ...],
    key_files: tuple[str, ...],
    public_keys: tuple[str, ...],
    complete: bool,
    as_json: bool,
    max_findings: int,
    progress: bool | None,
) -> None:
    """Verify hash chains, proofs and digests; exit 0 when clean, 1 on evidence of tampering or loss.

    Records are grouped by audit.sequence.stream_id and checked by sequence number, so the order
    of lines in an archive does not matter; identical copies are redeliveries, not problems.
    """
    source = open_source(ctx, wal, archive)
    keys: list[Verifier] = [hmac_verifier_from_key_file(f) for f in key_files]
    keys += [load_public_key(f) for f in public_keys]
    if isinstance(source, WalRootSource):  # verify_wal reads every shard of the root
        total = sum(int(shard.reader.stats()["last_seq"]) for shard in source.sources)
        show = _show_progress(progress, total >= _BIG_WAL_RECORDS)
        with terminal.progress_bar("verifying", None, enabled=show, unit="records") as bar:
            report = verify_wal(
                source.directory, keys, complete=complete, progress=bar.update, max_findings=max_findings
            )
    else:
        assert isinstance(source, ArchiveSource)
        size = sum(p.stat().st_size for p in source.files)
        show = _show_progress(progress, size >= _BIG_ARCHIVE_BYTES)
        with terminal.progress_bar("verifying", None, enabled=show, unit="bytes") as bar:
            report = verify_archive(
                source.files, keys, complete=complete, progress=bar.update, max_findings=max_findings
            )
    if as_json:
        terminal.display_json(report.to_dict())
    else:
        _print_report(report)
    if not report.ok:
        ctx.exit(EXIT_PROBLEMS)


def _show_progress(forced: bool | None, big: bool) -> bool:
    if forced is not None:
        return forced
    return big and sys.stderr.isatty()


def _print_report(report: VerifyReport) -> None:
    if report.streams:
        terminal.display_table(
            [
                "STREAM",
                "FIRST",
                "LAST",
                "RECORDS",
                "REDELIVERED",
                "CLOSED",
                "DIGESTS",
                "UNATTESTED",
                "PROBLEMS",
            ],
            [
                [
                    s.stream_id,
                    str(s.first_number),
                    str(s.last_number),
                    str(s.records),
                    str(s.redelivered),
                    "yes" if s.closed else "no",
                    str(s.digests),
                    str(s.unattested),
                    str(s.problems),
                ]
                for s in report.streams
            ],
        )
        terminal.display_blank()
    if report.findings:
        terminal.display_table(
            ["SEVERITY", "KIND", "POSITION", "STREAM", "NUMBER", "DETAIL"],
            [
                [
                    f.severity,
                    f.kind,
                    f.position or "-",
                    (f.stream_id or "-")[:8],
                    "-" if f.number is None else str(f.number),
                    f.detail,
                ]
                for f in report.findings
            ],
            wrap=("DETAIL",),
        )
        if report.truncated_findings:
            terminal.display_info(
                f"{report.truncated_findings} more finding(s) not listed (raise --max-findings, or use --json)"
            )
        terminal.display_blank()
    keys = ", ".join(report.algorithms) if report.algorithms else "no keys: proofs not checked"
    summary = (
        f"{report.records_read} records in {len(report.streams)} stream(s) from {report.source}"
        f" ({keys}; {report.elapsed_seconds:.1f}s)"
    )
    if report.ok:
        notices = f", {report.notices} notice(s)" if report.notices else ""
        terminal.display_success(f"OK: {summary}{notices}")
    else:
        kinds = sorted({f.kind for f in report.findings if f.severity == SEVERITY_PROBLEM})
        terminal.display_error(f"FAILED: {report.problems} problem(s) ({', '.join(kinds)}) in {summary}")


__all__ = ["verify"]
