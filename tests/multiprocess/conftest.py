"""Fixtures of the multi-process tests: the real collector (as in tests/e2e) and archive helpers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from e2e.harness import Collector, CollectorError, resolve_binary

from otel_audit.archive import ArchivedRecord
from otel_audit.shards import ShardRoot


@pytest.fixture(scope="session")
def collector_binary() -> Path:
    """The built collector. A build or lookup failure FAILS the tests: these never skip."""
    try:
        return resolve_binary()
    except CollectorError as exc:
        pytest.fail(f"cannot get the collector binary: {exc}", pytrace=False)


@pytest.fixture
def collector(collector_binary: Path, tmp_path: Path) -> Iterator[Collector]:
    """A running collector with collector-config.yaml on free ports and a fresh archive."""
    instance = Collector(collector_binary, tmp_path / "collector")
    try:
        instance.start()
    except CollectorError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield instance
    instance.close()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def unique_by_uid(records: list[ArchivedRecord]) -> dict[str, ArchivedRecord]:
    """First occurrence of each record id (a record re-sent after a lost acknowledgement counts once)."""
    out: dict[str, ArchivedRecord] = {}
    for record in records:
        uid = record.attributes.get("log.record.uid")
        assert isinstance(uid, str) and uid, f"record without log.record.uid: {record}"
        out.setdefault(uid, record)
    return out


def orphans(root: Path) -> list[str]:
    """Shards nobody holds (root excluded when it is empty): what a running service still has to drain."""
    left = []
    for shard in ShardRoot(root).status():
        if shard.holder_pid is None and (not shard.is_root or shard.stats["backlog_records"]):
            left.append(f"{shard.path} (backlog {shard.stats['backlog_records']})")
    return left


def backlog(root: Path) -> int:
    return sum(int(s.stats["backlog_records"]) for s in ShardRoot(root).status())
