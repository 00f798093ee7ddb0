"""The durable pipeline of a WAL root as the API sees it: one handle per root and process, fork-safe."""

from __future__ import annotations

import logging
import os
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from otel_audit.config import AuditConfig
from otel_audit.exceptions import AuditWriteError, OtelAuditError, WALError
from otel_audit.export.contexts import context_id_of
from otel_audit.integrity import StreamChain
from otel_audit.metrics import AuditMetrics
from otel_audit.record import AuditRecord
from otel_audit.shard_pipeline import ShardPipeline, inherited, release_inherited
from otel_audit.wal import WAL

_log = logging.getLogger("otel_audit")

# A process holds few distinct contexts (resource x scope); this only bounds a caller that mints many.
_MAX_CONTEXTS = 4096


class AuditPipeline:
    """The durable pipeline of one WAL root: persist records, wait for delivery, flush, shut down.

    Thread-safe and fork-safe. Each process writes its own shard of the root (see
    :mod:`otel_audit.shards`): the one creating this object gets its shard at once; a child forked
    afterwards gets a shard, a sender and a channel of its own when it first persists a record, and
    never touches the parent's. One instance per root per process (see :func:`get_pipeline`).
    """

    def __init__(self, config: AuditConfig) -> None:
        self.config = config
        self._blobs: dict[bytes, bytes] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._core: ShardPipeline | None = None
        self.metrics = AuditMetrics(self.stats, {"otel_audit.wal.dir": str(config.wal_dir)})
        self._core = ShardPipeline(config, self._blobs, self.metrics)
        _HANDLES.add(self)

    def _current(self) -> ShardPipeline:
        core = self._core
        if core is not None:
            return core
        with self._lock:
            if self._closed:
                raise WALError(f"the audit pipeline of {self.config.wal_dir} is shut down")
            if self._core is None:
                release_inherited()
                self._core = ShardPipeline(self.config, self._blobs, self.metrics)
                _flush_at_multiprocessing_exit(self)
            return self._core

    # -- writing ------------------------------------------------------------------------------

    def context_id(self, context_blob: bytes) -> bytes:
        """Store a resource+scope context once (fsynced) and return the id records refer to.

        The id names the caller's blob; each shard stores it with its ``otel_audit.shard.id``, so the
        same id stays valid in a forked child that writes another shard.
        """
        caller_id = context_id_of(context_blob)
        if caller_id not in self._blobs and len(self._blobs) < _MAX_CONTEXTS:
            self._blobs[caller_id] = context_blob
        self._current().stored_context(caller_id)
        return caller_id

    def persist(self, context_id: bytes, records: Sequence[bytes]) -> list[int]:
        """Append already-encoded LogRecords; returns their seqs (0 for a record drop_newest refused).

        Raises WALError (including WALFullError) when nothing could be persisted.
        """
        return self._current().persist(context_id, records)

    def persist_audit(
        self, context_id: bytes, record: AuditRecord, chain: StreamChain | None, *, end: bool = False
    ) -> tuple[int, bytes]:
        """Seal (chain and sign) then append one audit record; returns (seq, integrity hash).

        Sealing and appending happen under one lock so the chain's order is the WAL's order, and a
        record that was not persisted is rolled back out of the chain: the next record must point
        at a record that exists. seq is 0 when drop_newest refused the record.
        """
        return self._current().persist_audit(context_id, record, chain, end=end)

    def count_dropped(self, n: int = 1) -> None:
        self.metrics.dropped.add(n, self.metrics.attributes)

    # -- delivery ------------------------------------------------------------------------------

    def wait_seq_delivered(self, seq: int, timeout: float, record_id: str | None = None) -> None:
        """Block until the collector acknowledged ``seq``; AuditTimeoutError (with the id) otherwise."""
        self._current().wait_seq_delivered(seq, timeout, record_id)

    def wait_delivered(self, record_id: str, timeout: float) -> None:
        self._current().wait_delivered(record_id, timeout)

    def force_flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything this process persisted so far is acknowledged by the collector."""
        core = self._core
        return True if core is None else core.force_flush(timeout)

    def stats(self) -> dict[str, Any]:
        """The shard's WAL and sender figures; empty in a forked child that has not written yet."""
        core = self._core
        if core is None or self._closed:
            return {}
        return core.stats()

    @property
    def wal(self) -> WAL:
        """This process's shard."""
        return self._current().wal

    @property
    def closed(self) -> bool:
        return self._closed

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the sender (bounded by ``timeout``) and close the shard; unsent records stay on disk.

        A shard left with nothing in it is removed; one with a backlog is an orphan that the next
        process to start (or any running one) adopts.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            core, self._core = self._core, None
        try:
            if core is not None:
                core.shutdown(timeout)
        finally:
            self.metrics.close()
            _forget(self)

    def _forget_core_in_child(self) -> None:
        self._lock = threading.Lock()
        if self._core is not None:
            inherited(self._core)
            self._core = None


# -- fork: the child's side ---------------------------------------------------------------------

_HANDLES: weakref.WeakSet[AuditPipeline] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()  # another thread of the parent may have held it at fork
    for handle in list(_HANDLES):
        handle._forget_core_in_child()  # noqa: SLF001 - the fork protocol is this module's own


os.register_at_fork(after_in_child=_after_fork_in_child)


def _flush_at_multiprocessing_exit(pipeline: AuditPipeline) -> None:
    """multiprocessing children end with os._exit (no atexit): flush and close there too, bounded."""
    mp = sys.modules.get("multiprocessing")
    if mp is None or mp.parent_process() is None:
        return
    from multiprocessing import util

    util.Finalize(None, pipeline.shutdown, kwargs={"timeout": 5.0}, exitpriority=10)


# -- one pipeline per root per process ---------------------------------------------------------

_registry: dict[str, AuditPipeline] = {}
_registry_lock = threading.Lock()


def _key(wal_dir: Path) -> str:
    return os.path.realpath(os.fspath(wal_dir))


def get_pipeline(config: AuditConfig) -> AuditPipeline:
    """Return the process's pipeline for ``config.wal_dir``, creating it on first use.

    fcntl locks are per process, so a second WAL.open on the same directory in the same process
    would not be refused by the kernel: this registry is what keeps one writer per shard. After a
    fork the child finds the same object, which then builds the child's own shard when first used.
    """
    key = _key(config.wal_dir)
    with _registry_lock:
        existing = _registry.get(key)
        if existing is not None and not existing.closed:
            return existing
        pipeline = AuditPipeline(config)
        _registry[key] = pipeline
        return pipeline


def _forget(pipeline: AuditPipeline) -> None:
    with _registry_lock:
        key = _key(pipeline.config.wal_dir)
        if _registry.get(key) is pipeline:
            del _registry[key]


def persist_or_fail(
    action: Callable[[], tuple[int, bytes]], *, fail_closed: bool, record_id: str, pipeline: AuditPipeline
) -> tuple[int, bytes] | None:
    """Run an append and apply the failure policy: fail-closed raises AuditWriteError, fail-open counts."""
    try:
        seq, digest = action()
    except (WALError, OSError) as exc:
        if fail_closed:
            raise AuditWriteError(
                f"audit record {record_id} was not persisted: {exc}", record_id=record_id
            ) from exc
        pipeline.count_dropped()
        _log.error("audit record %s was not persisted and is dropped (fail_closed=False): %s", record_id, exc)
        return None
    if seq == 0:
        # drop_newest refused it; the WAL already counted and warned.
        if fail_closed:
            raise AuditWriteError(
                f"audit record {record_id} was dropped: the WAL is full (full_policy=drop_newest)",
                record_id=record_id,
            )
        return None
    return seq, digest


__all__ = ["AuditPipeline", "OtelAuditError", "get_pipeline", "persist_or_fail"]
