"""The gateway tier holds the guarantee once it acknowledged, and a hanging gateway does not hold the backlog."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from .delivery import check_delivery
from .topology import build_site

pytestmark = pytest.mark.e2e


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def test_a_gateway_sigkilled_with_acknowledged_records_in_its_queue_delivers_them_after_restart(
    collector_binary: Path, tmp_path: Path, site_mode: str
) -> None:
    """Archive down; the app's records are all acked by the gateway (its WAL lets go); gateway SIGKILLed; all arrive."""
    with build_site(collector_binary, tmp_path, mode=site_mode, apps=1, gateways=1) as site:
        gateway, archive = site.gateways[0], site.archive
        archive.kill()
        empty_queue = _dir_bytes(gateway.queue_dir)

        app = site.start_app("app1", 3_000, 0)
        assert app.wait(timeout_s=60) == 0, app.lines
        # force_flush returned True: every record was acknowledged by the gateway, so the app's WAL
        # has let go of them, and the archive is down: the gateway's queue is their only copy.
        assert app.line("flushed True") is not None, app.lines
        assert archive.records() == []
        queued = _dir_bytes(gateway.queue_dir) - empty_queue
        gateway.kill()
        archive.start()
        gateway.start()

        acked = {"app1": app.acked_ids()}
        archive.wait_for_records(len(acked["app1"]), timeout_s=60)
        report = check_delivery(archive.records(), archive.log_protos(), acked)

    print(f"mode={site_mode} queued_bytes={queued} archived={report.archived} duplicates={report.duplicates}")
    assert queued > 0, "the gateway's queue directory did not grow while the archive was down"


def test_a_hanging_gateway_is_ejected_and_the_backlog_flows_through_the_other(
    collector_binary: Path, tmp_path: Path, site_mode: str
) -> None:
    """gw1 SIGSTOPped mid-stream (connections open, nothing answers): the app's flush is not held behind it.

    Without ejection every other request would wait the 2 s export timeout: about 20k records
    recorded at 2k/s would drain at one batch per ~2 s and the final flush would take tens of seconds.
    """
    with build_site(collector_binary, tmp_path, mode=site_mode, apps=1, gateways=2) as site:
        gw1 = site.gateways[0]
        app = site.start_app("app1", 20_000, 2_000)
        time.sleep(2.0)
        assert gw1.process is not None
        os.kill(gw1.process.pid, signal.SIGSTOP)
        try:
            assert app.wait(timeout_s=90) == 0, app.lines
        finally:
            os.kill(gw1.process.pid, signal.SIGCONT)
        flushed = app.line("flushed True")
        assert flushed is not None, app.lines
        flush_seconds = float(flushed.split()[2])
        stats = app.sender_stats()

        acked = {"app1": app.acked_ids()}
        site.archive.wait_for_records(len(acked["app1"]), timeout_s=60)
        report = check_delivery(site.archive.records(), site.archive.log_protos(), acked)

    print(
        f"mode={site_mode} flush_after_last_record={flush_seconds:.2f}s failed_attempts={stats['retries']} "
        f"requests={stats['requests']} duplicates={report.duplicates}"
    )
    assert stats["retries"] >= 1, "no request ever hit the stopped gateway: the test did not test a hang"
    assert flush_seconds < 5.0, f"the backlog waited {flush_seconds:.1f}s behind the hanging gateway"
