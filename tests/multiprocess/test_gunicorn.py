"""Real gunicorn, 4 sync workers, a Flask app with the WSGI middleware: workers and master SIGKILLed under load.

After a restart with 2 workers and no load, every request that got a response is in the collector's
archive exactly once (dedup by ``log.record.uid``), and every orphan shard is drained and removed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from e2e.harness import Collector, free_port

from otel_audit.shards import ShardRoot

from .conftest import backlog, orphans, wait_until
from .load import Load, wait_for_http

APPS = Path(__file__).parent / "apps"
REQUESTS = 20_000
"""About 25 s a test on the 2-core machine, with the collector and the client on the same cores."""


class Gunicorn:
    def __init__(self, wal_dir: Path, collector: Collector, log: Path) -> None:
        self.port = free_port()
        self.env = {
            **os.environ,
            "OTEL_AUDIT_WAL_DIR": str(wal_dir),
            "OTEL_AUDIT_ENDPOINT": collector.grpc_endpoint,
            "OTEL_AUDIT_RETRY_MAX_BACKOFF_MILLIS": "500",
        }
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, workers: int, *, preload: bool) -> psutil.Process:
        args = [sys.executable, "-m", "gunicorn", "-w", str(workers), "-b", f"127.0.0.1:{self.port}"]
        args += (
            ["--timeout", "6", "--graceful-timeout", "10"]
            + (["--preload"] if preload else [])
            + ["flask_app:app"]
        )
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                args, cwd=APPS, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        master = psutil.Process(self.process.pid)
        wait_for_http(self.port, check=lambda: len(master.children()) == workers)
        return master

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)

    def kill_everything(self) -> None:
        if self.process is None:
            return
        for proc in _tree(self.process.pid):
            proc.kill()


def _tree(pid: int) -> list[psutil.Process]:
    try:
        master = psutil.Process(pid)
        return [master, *master.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


@pytest.fixture
def gunicorn(tmp_path: Path, collector: Collector) -> Iterator[Gunicorn]:
    server = Gunicorn(tmp_path / "wal", collector, tmp_path / "gunicorn.log")
    yield server
    server.kill_everything()


def crash_under_load(
    server: Gunicorn, collector: Collector, *, preload: bool, kill_workers_with_master: bool
) -> Load:
    """4 workers under load; two SIGKILLed (respawned), then the master SIGKILLed.

    With ``kill_workers_with_master`` the whole service dies at once, as a container does, after
    the collector was stopped for the last quarter of the load: the shards are left with thousands
    of unsent records. Otherwise the workers, orphaned, finish the load and exit on their own.
    """
    master = server.start(4, preload=preload)
    load = Load(server.port, REQUESTS, prefix="r").start()
    for fraction in (0.25, 0.5):
        load.wait_for(int(REQUESTS * fraction))
        victim = master.children()[0]
        victim.kill()
        victim.wait(10)
    load.wait_for(int(REQUESTS * 0.75))
    if kill_workers_with_master:
        collector.stop()
        load.wait_for(int(REQUESTS * 0.9))
    workers = master.children()
    assert len(workers) == 4
    master.kill()
    master.wait(10)
    if kill_workers_with_master:
        for worker in workers:  # as a container runtime does when the container's main process dies
            worker.kill()
    load.join()
    # Workers left alive notice their master is gone once idle, and exit (flushing what they can).
    psutil.wait_procs(workers, timeout=30)
    assert not [w for w in workers if w.is_running()]
    return load


def restart_and_check(
    server: Gunicorn, collector: Collector, load: Load, *, preload: bool, wal_dir: Path
) -> None:
    left = orphans(wal_dir)
    print(f"\nbefore the restart: {len(left)} orphan shards, {backlog(wal_dir)} records not yet sent")
    if not collector.running:
        collector.start()
    server.start(2, preload=preload)
    wait_until(lambda: not orphans(wal_dir) and backlog(wal_dir) == 0, 60, "every orphan drained and removed")
    records = collector.records()
    uids: dict[str, set[str]] = defaultdict(set)
    for record in records:
        path = record.attributes.get("url.path")
        if isinstance(path, str) and path.startswith("/items/r-"):
            uids[path.removeprefix("/items/")].add(str(record.attributes["log.record.uid"]))
    missing = [item for item in load.responded if item not in uids]
    assert not missing, f"{len(missing)} answered requests are not in the archive, e.g. {missing[:5]}"
    twice = {item: ids for item, ids in uids.items() if len(ids) != 1}
    assert not twice, f"requests with more than one audit record: {list(twice.items())[:3]}"
    # What a running service keeps: its own shards (one per process holding one), all empty.
    assert all(s.holder_pid is not None or s.is_root for s in ShardRoot(wal_dir).status())
    server.stop()
    print(
        f"{len(load.responded)} answered, {load.failed} unanswered, {len(records)} records archived "
        f"({len(records) - len({u for ids in uids.values() for u in ids})} re-sent duplicates)"
    )


def test_gunicorn_workers_and_master_killed_under_load_lose_nothing(
    gunicorn: Gunicorn, collector: Collector, tmp_path: Path
) -> None:
    started = time.monotonic()
    load = crash_under_load(gunicorn, collector, preload=False, kill_workers_with_master=True)
    restart_and_check(gunicorn, collector, load, preload=False, wal_dir=tmp_path / "wal")
    print(f"gunicorn: {time.monotonic() - started:.1f} s")


def test_gunicorn_preload_configures_in_the_master_and_every_worker_still_writes_its_own_shard(
    gunicorn: Gunicorn, collector: Collector, tmp_path: Path
) -> None:
    started = time.monotonic()
    load = crash_under_load(gunicorn, collector, preload=True, kill_workers_with_master=False)
    restart_and_check(gunicorn, collector, load, preload=True, wal_dir=tmp_path / "wal")
    print(f"gunicorn --preload: {time.monotonic() - started:.1f} s")
