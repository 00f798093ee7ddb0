"""Scale-out against real collectors: 3 app hosts -> 2 gateways -> 1 archive, with a gateway crash and a cut link."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .delivery import check_delivery
from .topology import Site, build_site

pytestmark = pytest.mark.e2e

RECORDS_PER_APP = 20_000
RATE_PER_APP = 1_000.0
"""Records per second per app: the stream lasts ~20 s, so the crash and the cut link land mid-stream."""
GATEWAY_DOWN_AT_S, GATEWAY_DOWN_FOR_S = 4.0, 3.0
LINK_DOWN_AT_S, LINK_DOWN_FOR_S = 9.0, 6.0


def _at(start: float, offset_s: float) -> None:
    time.sleep(max(0.0, start + offset_s - time.monotonic()))


def _wait_for_ids(site: Site, expected: set[str], timeout_s: float) -> None:
    """Poll the archive until it holds every expected id (a count is not enough: duplicates count too)."""
    deadline = time.monotonic() + timeout_s
    site.archive.wait_for_records(len(expected), timeout_s=timeout_s)
    while True:
        missing = expected - {r.record_id for r in site.archive.records()}
        if not missing or time.monotonic() > deadline:
            return
        time.sleep(1.0)


def test_every_acknowledged_record_arrives_once_in_order_through_a_gateway_crash_and_a_cut_link(
    collector_binary: Path, tmp_path: Path, site_mode: str
) -> None:
    """3 apps x 20k records via 2 gateways; gw1 SIGKILLed and restarted, app3's link down 6 s: all arrive."""
    mode = site_mode

    with build_site(collector_binary, tmp_path, mode=mode, apps=3, gateways=2, linkable=("app3",)) as site:
        gw1 = site.gateways[0]
        start = time.monotonic()
        apps = [site.start_app(name, RECORDS_PER_APP, RATE_PER_APP) for name in site.app_hosts]

        _at(start, GATEWAY_DOWN_AT_S)
        gw1.kill()
        queued_at_kill = sum(1 for _ in gw1.queue_dir.rglob("*") if _.is_file())
        _at(start, GATEWAY_DOWN_AT_S + GATEWAY_DOWN_FOR_S)
        gw1.start()
        _at(start, LINK_DOWN_AT_S)
        site.cut_link("app3")
        _at(start, LINK_DOWN_AT_S + LINK_DOWN_FOR_S)
        site.restore_link("app3")

        exit_codes = {app.name: app.wait(timeout_s=90) for app in apps}
        flushed_at = time.monotonic() - start
        assert exit_codes == {app.name: 0 for app in apps}, {a.name: a.lines for a in apps}
        acked = {app.name: app.acked_ids() for app in apps}
        assert all(len(ids) == RECORDS_PER_APP for ids in acked.values())
        cut_app = next(app for app in apps if app.name == "app3")
        assert cut_app.sender_stats()["retries"] > 0, "app3's cut link never made an export fail"

        _wait_for_ids(site, {i for ids in acked.values() for i in ids}, timeout_s=60)
        archived_at = time.monotonic() - start
        records, stats = site.archive.read_archive()
        report = check_delivery(records, site.archive.log_protos(), acked)

    print(
        f"mode={mode} apps_flushed={flushed_at:.1f}s archive_complete={archived_at:.1f}s "
        f"archived={report.archived} unique={report.unique} duplicates={report.duplicates} "
        f"late_arrivals={report.late_arrivals} torn_lines={stats.torn_lines} gw1_queue_files={queued_at_kill}"
    )
    for app in apps:
        print(f"  {app.name}: {' | '.join(app.lines[1:])}")
