"""The shard layout on its own: which shard a starting process gets, what is adopted, removed, kept, and the byte budget.

OFD locks conflict inside one process too, so a WAL held open here stands for a live writer.
"""

from __future__ import annotations

import fcntl
import os
import signal
import time
from pathlib import Path

from opentelemetry.proto.logs.v1.logs_pb2 import ResourceLogs
from opentelemetry.sdk.resources import Resource

from otel_audit.encoding import encode_context
from otel_audit.shard_pipeline import with_shard_id
from otel_audit.shards import (
    SHARD_ID_ATTRIBUTE,
    SHARDS_DIRNAME,
    ShardBudget,
    ShardRoot,
    read_budget,
    segment_bytes,
    shard_id,
)
from otel_audit.wal import WAL


def open_wal(path: Path) -> WAL:
    return WAL.open(path, durability="never", segment_bytes=4096, max_bytes=1 << 20)


def orphan_with_backlog(root: Path, records: int = 3) -> Path:
    """A shard whose writer went away with ``records`` unsent (closed = its lock released, as at exit)."""
    path = ShardRoot(root).new_path()
    wal = open_wal(path)
    for i in range(records):
        wal.append(b"record %d" % i)
    wal.close()
    return path


def test_a_lone_process_writes_the_root_as_before_shards_existed(tmp_path: Path) -> None:
    """With nobody else around, the root is the process's shard and gets a random producer id."""
    wal = ShardRoot(tmp_path).claim_own(open_wal)
    try:
        assert wal.directory == tmp_path
        assert len(shard_id(tmp_path)) == 16 and shard_id(tmp_path) != tmp_path.name
        assert ShardRoot(tmp_path).paths() == [tmp_path]  # shards/ holds only its lock file
    finally:
        wal.close()


def test_each_further_process_gets_its_own_shard_under_shards(tmp_path: Path) -> None:
    """The root and every shard are held by one writer each; a shard's id is its directory name."""
    roots = ShardRoot(tmp_path)
    first, second, third = (roots.claim_own(open_wal) for _ in range(3))
    try:
        assert first.directory == tmp_path
        assert {second.directory.parent, third.directory.parent} == {tmp_path / SHARDS_DIRNAME}
        assert second.directory != third.directory
        assert shard_id(second.directory) == second.directory.name
        assert {s.holder_pid for s in roots.status()} == {os.getpid()}
    finally:
        for wal in (first, second, third):
            wal.close()


def test_a_starting_process_takes_an_orphan_with_a_backlog_before_the_free_root(tmp_path: Path) -> None:
    """The backlog stays where it is and is sent first: the new process continues that producer."""
    path = orphan_with_backlog(tmp_path, 5)
    wal = ShardRoot(tmp_path).claim_own(open_wal)
    try:
        assert wal.directory == path
        assert [p for _, p in wal.read(0)] == [b"record %d" % i for i in range(5)]
        assert wal.append(b"next") == 6
    finally:
        wal.close()


def test_a_drained_orphan_is_removed_and_one_with_dead_letters_is_kept(tmp_path: Path) -> None:
    """Nothing an operator needs is deleted: a dead letter keeps its shard on disk."""
    roots = ShardRoot(tmp_path)
    drained = orphan_with_backlog(tmp_path, 2)
    with open_wal(drained) as wal:
        wal.ack(2)
    kept = orphan_with_backlog(tmp_path, 2)
    with open_wal(kept) as wal:
        wal.dead_letter(1, b"record 0", "rejected by the collector")
        wal.ack(2)
    own = roots.claim_own(open_wal)
    try:
        assert own.directory == tmp_path  # neither had a backlog: the root was free
        assert not drained.exists()
        assert kept.is_dir()
        assert not any(n.startswith(".removed") for n in os.listdir(tmp_path / SHARDS_DIRNAME))
    finally:
        own.close()


def test_a_shard_held_by_a_live_writer_is_never_adopted_nor_removed(tmp_path: Path) -> None:
    roots = ShardRoot(tmp_path)
    live = roots.claim_own(open_wal)
    busy = roots.claim_own(open_wal)
    busy.append(b"unsent")
    try:
        assert roots.adopt_orphan(open_wal, exclude=live.directory) is None
        assert not roots.remove(busy.directory)
        assert busy.directory.is_dir()
    finally:
        live.close()
        busy.close()


def test_adopting_for_a_drain_skips_the_callers_shard_and_returns_the_orphan(tmp_path: Path) -> None:
    roots = ShardRoot(tmp_path)
    own = roots.claim_own(open_wal)
    path = orphan_with_backlog(tmp_path)
    try:
        drained = roots.adopt_orphan(open_wal, exclude=own.directory)
        assert drained is not None and drained.directory == path
        drained.ack(drained.last_seq)
        drained.close()
        assert roots.remove(path) and not path.exists()
        assert not roots.remove(tmp_path)  # the root is never removed
    finally:
        own.close()


def test_the_budget_splits_max_bytes_between_live_writers_and_counts_orphans_as_they_are(
    tmp_path: Path,
) -> None:
    """Reservations never add up to more than max_bytes, and nobody is cut below what it holds."""
    roots = ShardRoot(tmp_path)
    budget = ShardBudget(roots, max_bytes=100_000, floor_bytes=4096)
    a = roots.claim_own(open_wal)
    assert budget.reserve(a.directory, 0) == 100_000  # alone: everything
    b = roots.claim_own(open_wal)
    try:
        assert budget.reserve(b.directory, 0) == 4096  # a still holds it all; b gets its floor
        assert budget.reserve(a.directory, 30_000) == 50_000  # a gives back down to its fair share
        assert budget.reserve(b.directory, 0) == 50_000
        orphan = orphan_with_backlog(tmp_path, 20)
        size = segment_bytes(orphan)
        assert size > 0
        # Only what b does not reserve and the orphan does not hold is free.
        assert budget.reserve(a.directory, 0) == 100_000 - 50_000 - size
        assert read_budget(a.directory) + read_budget(b.directory) + size == 100_000  # type: ignore[operator]
        # What a WAL already holds is never evicted, even above its fair share.
        assert budget.reserve(b.directory, 60_000) == 60_000
    finally:
        a.close()
        b.close()


def test_the_shard_id_is_added_to_the_resource_of_every_stored_context() -> None:
    blob = encode_context(Resource.create({"service.name": "billing", SHARD_ID_ATTRIBUTE: "stale"}), None)
    message = ResourceLogs.FromString(with_shard_id(blob, "0123456789abcdef"))
    attributes = {kv.key: kv.value.string_value for kv in message.resource.attributes}
    assert attributes[SHARD_ID_ATTRIBUTE] == "0123456789abcdef"
    assert attributes["service.name"] == "billing"
    assert [kv.key for kv in message.resource.attributes].count(SHARD_ID_ATTRIBUTE) == 1


def test_a_child_forked_while_the_root_lock_is_held_does_not_keep_the_root_locked(tmp_path: Path) -> None:
    """The child shares the lock's descriptor; leaving the block must still free the root for everyone."""
    roots = ShardRoot(tmp_path)
    with roots.locked():
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child only waits to be killed
            time.sleep(30)
            os._exit(0)
    try:
        fd = os.open(tmp_path / SHARDS_DIRNAME / ".lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError if the child's copy held it
        finally:
            os.close(fd)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
