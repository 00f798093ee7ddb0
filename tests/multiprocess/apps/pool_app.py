"""configure(), then a multiprocessing.Pool (fork) whose workers record: run by tests/multiprocess/test_pool.py.

Usage: ``python pool_app.py close|terminate WAL_DIR ENDPOINT WORKERS RECORDS``. ``close`` ends the pool
with close()+join() (workers exit normally: multiprocessing's finalizers flush them); ``terminate``
SIGTERMs them once every record is persisted, so what they had not sent is left in their shards
(the test runs it with the collector down): it prints the orphans it sees, waits for a line on
stdin (the test starts the collector), then drains them. Last line: the workers' pids, the
parent's shard id, timings.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from typing import Any

import otel_audit
from otel_audit.shards import ShardRoot

LOGIN: dict[str, Any] = {"actor_id": "u-1", "actor_type": "user", "action": "LOGIN", "outcome": "success"}
_barrier: Any = None


def init(barrier: Any) -> None:
    global _barrier
    _barrier = barrier


def work(task: int, records: int) -> int:
    # Every worker waits here until all have a task: one task per process, all recording at once.
    _barrier.wait(timeout=60)
    audit = otel_audit.get_audit()
    for i in range(records):
        audit.record("user.login.success", **LOGIN, attributes={"who": f"task-{task}", "i": i})
    return os.getpid()


def main(mode: str, wal_dir: str, endpoint: str, workers: int, records: int) -> None:
    audit = otel_audit.configure(
        service_name="pool", wal_dir=wal_dir, endpoint=endpoint, retry_max_backoff=0.5
    )
    ctx = multiprocessing.get_context("fork")
    pool = ctx.Pool(workers, initializer=init, initargs=(ctx.Barrier(workers),))
    started = time.monotonic()
    pids = pool.starmap(work, [(k, records) for k in range(workers)], chunksize=1)
    recorded = time.monotonic() - started
    if mode == "close":
        pool.close()
    else:
        pool.terminate()
    pool.join()
    if mode == "terminate":
        orphans = [
            s for s in ShardRoot(wal_dir).status() if s.holder_pid is None and s.stats["backlog_records"]
        ]
        print(
            json.dumps({"orphans": len(orphans), "backlog": sum(s.stats["backlog_records"] for s in orphans)})
        )
        sys.stdout.flush()
        sys.stdin.readline()
        started = time.monotonic()
    # Whatever a worker left unsent is an orphan now: this process adopts and drains them one by one.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        # Done when the workers' shards are gone: one being drained is held by this process meanwhile.
        left = [s for s in ShardRoot(wal_dir).status() if s.id != audit.stats()["shard_id"]]
        if not left:
            break
        time.sleep(0.1)
    drained = time.monotonic() - started
    assert audit.force_flush(30)
    print(
        json.dumps(
            {
                "pids": pids,
                "shard": audit.stats()["shard_id"],
                "orphans_left": len(left),
                "recorded_s": round(recorded, 2),
                "delivered_s": round(drained, 2),
            }
        ),
        flush=True,
    )
    audit.shutdown(timeout=10)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
