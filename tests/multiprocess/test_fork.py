"""configure() before fork(): each child writes its own shard and streams, and what a dead child leaves is drained."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from e2e.harness import Collector

from otel_audit.archive import ArchivedRecord
from otel_audit.shards import SHARD_ID_ATTRIBUTE, SHARDS_DIRNAME

from .conftest import orphans, unique_by_uid

APP = Path(__file__).parent / "apps" / "fork_app.py"
ROOT = Path(__file__).resolve().parents[2]


def start(scenario: str, wal_dir: Path, collector: Collector) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(APP), scenario, str(wal_dir), collector.grpc_endpoint],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a hung child is killed with its parent's process group
    )


def events(process: subprocess.Popen[str], timeout: float = 60) -> list[dict[str, Any]]:
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    assert process.returncode == 0, f"fork_app failed with {process.returncode}: {out}"
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def by_who(records: dict[str, ArchivedRecord]) -> dict[str, list[ArchivedRecord]]:
    """Each writer's records in archive order (end-of-stream records have no ``who``)."""
    out: dict[str, list[ArchivedRecord]] = defaultdict(list)
    for record in records.values():
        who = record.attributes.get("who")
        if isinstance(who, str):
            out[who].append(record)
    return out


def stream_of(records: list[ArchivedRecord]) -> set[Any]:
    return {r.attributes["audit.sequence.stream_id"] for r in records}


def test_children_forked_after_configure_write_their_own_shards_and_streams(
    tmp_path: Path, collector: Collector
) -> None:
    """The parent's shard, chain and channel are never used by a child; each child leaves nothing behind."""
    wal_dir = tmp_path / "wal"
    log = events(start("graceful", wal_dir, collector))
    assert log[1] == {"event": "children", "codes": [0, 0, 0]}
    records = unique_by_uid(collector.wait_for_records(6 + 3 * 200))
    who = by_who(records)
    assert sorted(who) == ["child-0", "child-1", "child-2", "parent"]
    assert [r.attributes["i"] for r in who["parent"]] == [0, 1, 2, 0, 1, 2]
    parent_shard = log[0]["shard"]
    shards = {k: {r.resource[SHARD_ID_ATTRIBUTE] for r in v} for k, v in who.items()}
    assert shards["parent"] == {parent_shard}
    child_shards = [shards[f"child-{k}"] for k in range(3)]
    assert all(len(s) == 1 for s in child_shards) and len(set.union(*child_shards) | {parent_shard}) == 4
    # The parent's chain runs 1..6 unbroken: no child wrote into its stream.
    assert [r.attributes["audit.sequence.number"] for r in who["parent"]] == [1, 2, 3, 4, 5, 6]
    streams = [stream_of(v) for v in who.values()]
    assert all(len(s) == 1 for s in streams) and len(set.union(*streams)) == 4
    for k in range(3):
        assert [r.attributes["i"] for r in who[f"child-{k}"]] == list(range(200))
    # Children exited cleanly with everything delivered: their shards are gone, the parent's (the root) is empty.
    assert not (wal_dir / SHARDS_DIRNAME).exists() or not [
        p for p in (wal_dir / SHARDS_DIRNAME).iterdir() if not p.name.startswith(".")
    ]
    assert orphans(wal_dir) == []


def test_what_a_killed_child_left_unsent_is_drained_by_its_parent_and_its_shard_removed(
    tmp_path: Path, collector: Collector
) -> None:
    collector.stop()
    wal_dir = tmp_path / "wal"
    process = start("killed", wal_dir, collector)
    assert process.stdout is not None and process.stdin is not None
    line = json.loads(process.stdout.readline())
    assert line["event"] == "configured"
    assert json.loads(process.stdout.readline()) == {"event": "child-dead", "codes": [-9]}
    [orphan] = orphans(wal_dir)
    assert "backlog 500" in orphan
    collector.start()
    process.stdin.write("go\n")
    process.stdin.flush()
    log = events(process)
    assert log[0] == {"event": "drained", "ok": True}
    who = by_who(unique_by_uid(collector.wait_for_records(500)))
    assert [r.attributes["i"] for r in who["child"]] == list(range(500))
    assert orphans(wal_dir) == []
    assert not [p for p in (wal_dir / SHARDS_DIRNAME).iterdir() if not p.name.startswith(".")]


def test_forking_while_the_parent_exports_leaves_grpc_working_in_parent_and_children(
    tmp_path: Path, collector: Collector
) -> None:
    """gRPC breaks in a child forked mid-call; the pipeline holds its calls while the process forks."""
    log = events(start("busy", tmp_path / "wal", collector))
    children = log[1]
    assert children["codes"] == [0] * 10
    expected = children["parent_records"] + 10 * 50
    who = by_who(unique_by_uid(collector.wait_for_records(expected, timeout_s=60)))
    assert len(who["parent"]) == children["parent_records"]
    assert [r.attributes["i"] for r in who["parent"]] == list(range(children["parent_records"]))
    for k in range(10):
        assert [r.attributes["i"] for r in who[f"child-{k}"]] == list(range(50))
