"""A multiprocessing.Pool (fork) of 8 workers recording 5,000 records each: all delivered, each worker's in order."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from e2e.harness import Collector

from otel_audit.archive import ArchivedRecord
from otel_audit.shards import SHARD_ID_ATTRIBUTE

from .conftest import orphans, unique_by_uid

APP = Path(__file__).parent / "apps" / "pool_app.py"
ROOT = Path(__file__).resolve().parents[2]
WORKERS = 8
RECORDS = 5000


@pytest.mark.parametrize("ending", ["close", "terminate"])
def test_every_record_of_every_pool_worker_arrives_in_the_order_the_worker_wrote_it(
    ending: str, tmp_path: Path, collector: Collector
) -> None:
    """``close``: workers flush at exit. ``terminate``: killed while the collector is down, every
    worker leaves all its records in its shard, and the parent adopts and drains the 8 orphans."""
    wal_dir = tmp_path / "wal"
    if ending == "terminate":
        collector.stop()
    process = subprocess.Popen(
        [sys.executable, str(APP), ending, str(wal_dir), collector.grpc_endpoint, str(WORKERS), str(RECORDS)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        if ending == "terminate":
            assert process.stdout is not None and process.stdin is not None
            left = json.loads(process.stdout.readline())
            # Every record is still there (and the streams' digest records, one per 1,000).
            assert left["orphans"] == WORKERS and left["backlog"] >= WORKERS * RECORDS, left
            collector.start()
            process.stdin.write("go\n")
            process.stdin.flush()
        out, _ = process.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    assert process.returncode == 0, out
    result = json.loads(out.splitlines()[-1])
    print(f"\npool ({ending}): {result}")
    assert result["orphans_left"] == 0 and len(set(result["pids"])) == WORKERS

    records = unique_by_uid(collector.wait_for_records(WORKERS * RECORDS, timeout_s=60))
    per_task: dict[str, list[ArchivedRecord]] = defaultdict(list)
    for record in records.values():
        if "who" in record.attributes:  # not a stream digest record
            per_task[str(record.attributes["who"])].append(record)
    assert sorted(per_task) == sorted(f"task-{k}" for k in range(WORKERS))
    shards = set()
    for task, written in per_task.items():
        # In the archive's order (first arrival of each record): exactly the order the worker wrote.
        assert [r.attributes["i"] for r in written] == list(range(RECORDS)), task
        numbers = [int(r.attributes["audit.sequence.number"]) for r in written]  # type: ignore[arg-type]
        assert numbers == sorted(set(numbers)), task  # the chain's order too (digest records take numbers)
        assert len({r.attributes["audit.sequence.stream_id"] for r in written}) == 1, task
        [shard] = {r.resource[SHARD_ID_ATTRIBUTE] for r in written}
        shards.add(shard)
    # Each worker was its own producer, none of them the parent.
    assert len(shards) == WORKERS and result["shard"] not in shards
    assert orphans(wal_dir) == []
