"""uvicorn --workers 2 (spawned workers), the FastAPI app with the ASGI middleware, stopped with SIGTERM while the collector is down."""

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

from .conftest import backlog, orphans, wait_until
from .load import Load, wait_for_http

APPS = Path(__file__).parent / "apps"


class Uvicorn:
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

    def start(self) -> None:
        args = [
            sys.executable,
            "-m",
            "uvicorn",
            "--workers",
            "2",
            "--port",
            str(self.port),
            "fastapi_app:app",
        ]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                args, cwd=APPS, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        supervisor = psutil.Process(self.process.pid)
        # Spawned workers: the supervisor's children that are Python (not the resource tracker) and serve.
        wait_for_http(self.port, timeout=60, check=lambda: len(_workers(supervisor)) == 2)

    def terminate(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)

    def kill_everything(self) -> None:
        if self.process is None:
            return
        try:
            procs = [
                psutil.Process(self.process.pid),
                *psutil.Process(self.process.pid).children(recursive=True),
            ]
        except psutil.NoSuchProcess:
            return
        for proc in procs:
            proc.kill()


def _workers(supervisor: psutil.Process) -> list[psutil.Process]:
    return [p for p in supervisor.children() if "resource_tracker" not in " ".join(p.cmdline())]


@pytest.fixture
def uvicorn(tmp_path: Path, collector: Collector) -> Iterator[Uvicorn]:
    server = Uvicorn(tmp_path / "wal", collector, tmp_path / "uvicorn.log")
    yield server
    server.kill_everything()


def test_uvicorn_stopped_while_the_collector_is_down_sends_its_backlog_after_the_next_start(
    uvicorn: Uvicorn, collector: Collector, tmp_path: Path
) -> None:
    wal_dir = tmp_path / "wal"
    started = time.monotonic()
    uvicorn.start()
    first = Load(uvicorn.port, 1000, prefix="up").start()
    first.join()
    collector.kill()
    second = Load(uvicorn.port, 1000, prefix="down").start()
    second.join()
    assert len(first.responded) == len(second.responded) == 1000  # the app never waits for the collector
    assert uvicorn.terminate() == 0
    left = orphans(wal_dir)
    # Each worker flushed for its bounded shutdown time, then left its backlog in its shard.
    assert left and backlog(wal_dir) >= 1000, left

    collector.start()
    uvicorn.start()
    wait_until(lambda: not orphans(wal_dir) and backlog(wal_dir) == 0, 60, "the backlog to be sent")
    uids: dict[str, set[str]] = defaultdict(set)
    for record in collector.records():
        path = record.attributes.get("url.path")
        if isinstance(path, str) and path.startswith(("/items/up-", "/items/down-")):
            uids[path.removeprefix("/items/")].add(str(record.attributes["log.record.uid"]))
    answered = first.responded + second.responded
    assert sorted(uids) == sorted(answered)
    assert all(len(ids) == 1 for ids in uids.values())
    assert uvicorn.terminate() == 0
    print(f"\nuvicorn: {len(left)} shards left with a backlog at stop; {time.monotonic() - started:.1f} s")
