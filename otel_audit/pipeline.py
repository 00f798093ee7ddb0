"""One WAL directory, its context store and its sender: the durable path every record of a process takes."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from otel_audit.config import AuditConfig
from otel_audit.exceptions import AuditTimeoutError, AuditWriteError, OtelAuditError, WALError
from otel_audit.export.contexts import ContextStore
from otel_audit.export.payload import encode_payload
from otel_audit.export.requeue import drain_inbox
from otel_audit.export.retry import DEFAULT_INITIAL_BACKOFF
from otel_audit.export.sender import Sender
from otel_audit.export.transport import create_transport
from otel_audit.integrity import StreamChain
from otel_audit.metrics import AuditMetrics
from otel_audit.record import AuditRecord
from otel_audit.wal import WAL

_log = logging.getLogger("otel_audit")

# Receipts are looked up by record id for wait_delivered(); remember only the recent ones so memory
# stays bounded whatever the rate. Older ids fall back to "persisted earlier": see wait_delivered.
_RECENT_IDS = 65536


class AuditPipeline:
    """Persists encoded records to the WAL and ships them with a background sender.

    Thread-safe. One instance per WAL directory per process (see :func:`get_pipeline`): the WAL's
    LOCK admits one writer, and two pipelines on one directory would race on the checkpoint.
    """

    def __init__(self, config: AuditConfig) -> None:
        self.config = config
        self._wal = WAL.open(
            config.wal_dir,
            durability=config.durability,
            fsync_interval=config.fsync_interval,
            segment_bytes=config.segment_bytes,
            max_bytes=config.max_bytes,
            full_policy=config.full_policy,
            full_timeout=config.full_timeout,
        )
        try:
            self._contexts = ContextStore(config.wal_dir)
            self._transport = create_transport(config.exporter)
            self.metrics = AuditMetrics(self.stats, {"otel_audit.wal.dir": str(config.wal_dir)})
            self._sender = Sender(
                self._wal,
                self._contexts,
                self._transport,
                max_batch_records=config.batch_max_records,
                max_batch_bytes=config.batch_max_bytes,
                export_timeout=config.exporter.timeout,
                # A cap below the default first wait lowers the first wait too.
                initial_backoff=min(DEFAULT_INITIAL_BACKOFF, config.retry_max_backoff),
                max_backoff=config.retry_max_backoff,
                on_export=self._on_export,
                idle_hook=lambda: drain_inbox(self._wal),
                state_path=config.wal_dir / "state" / "sender.json",
            )
        except BaseException:
            self._wal.close()
            raise
        # Serialises "seal the chain, then append" so the chain's order is the WAL's order.
        self._append_lock = threading.Lock()
        self._recent: OrderedDict[str, int] = OrderedDict()
        self._closed = False
        self._sender.start()

    # -- writing ------------------------------------------------------------------------------

    def context_id(self, context_blob: bytes) -> bytes:
        """Store a resource+scope context once (fsynced) and return the id records refer to."""
        return self._contexts.put(context_blob)

    def persist(self, context_id: bytes, records: Sequence[bytes]) -> list[int]:
        """Append already-encoded LogRecords; returns their seqs (0 for a record drop_newest refused).

        Raises WALError (including WALFullError) when nothing could be persisted.
        """
        payloads = [encode_payload(context_id, r) for r in records]
        seqs = self._wal.append_many(payloads)
        self._count_appended(seqs)
        return seqs

    def persist_audit(self, context_id: bytes, record: AuditRecord, chain: StreamChain | None, *, end: bool = False) -> tuple[int, bytes]:
        """Seal (chain and sign) then append one audit record; returns (seq, integrity hash).

        Sealing and appending happen under one lock so the chain's order is the WAL's order, and a
        record that was not persisted is rolled back out of the chain: the next record must point
        at a record that exists. seq is 0 when drop_newest refused the record.
        """
        with self._append_lock:
            if chain is not None:
                digest = chain.seal(record, end=end)
            else:
                digest = hashlib.sha256(record.canonical_bytes()).digest()
            payload = encode_payload(context_id, record.proto.SerializeToString())
            try:
                # The fsync (always mode) waits outside the lock, so concurrent emitters share it.
                seq = self._wal.append(payload, sync=False)
            except BaseException:
                if chain is not None:
                    chain.rollback(record)
                raise
            if seq == 0 and chain is not None:
                chain.rollback(record)
        # A failed fsync cannot be rolled back out of the chain (later records may follow it);
        # the WAL then refuses every append, and the caller learns this record is not durable.
        self._wal.sync_to(seq)
        self._count_appended([seq])
        if seq:
            self._remember(record.record_id, seq)
        return seq, digest

    def _count_appended(self, seqs: Sequence[int]) -> None:
        ok = sum(1 for s in seqs if s)
        attrs = self.metrics.attributes
        if ok:
            self.metrics.emitted.add(ok, attrs)
        if ok != len(seqs):
            self.metrics.dropped.add(len(seqs) - ok, attrs)

    def count_dropped(self, n: int = 1) -> None:
        self.metrics.dropped.add(n, self.metrics.attributes)

    def _remember(self, record_id: str, seq: int) -> None:
        recent = self._recent
        recent[record_id] = seq
        if len(recent) > _RECENT_IDS:
            recent.popitem(last=False)

    # -- delivery ------------------------------------------------------------------------------

    def wait_seq_delivered(self, seq: int, timeout: float, record_id: str | None = None) -> None:
        """Block until the collector acknowledged ``seq``; AuditTimeoutError (with the id) otherwise."""
        if not self._sender.wait_delivered(seq, timeout):
            raise AuditTimeoutError(
                f"record {record_id or seq} was not acknowledged by the collector within {timeout}s; "
                "it stays in the WAL and will still be delivered",
                record_id=record_id,
            )

    def wait_delivered(self, record_id: str, timeout: float) -> None:
        seq = self._recent.get(record_id)
        if seq is None:
            raise KeyError(
                f"record {record_id!r} was not persisted by this process recently "
                f"(only the last {_RECENT_IDS} ids are remembered)"
            )
        self.wait_seq_delivered(seq, timeout, record_id)

    def _on_export(self, records: int, duration_s: float, outcome: str) -> None:
        attrs = self.metrics.attributes
        self.metrics.export_duration.record(duration_s, {**attrs, "outcome": outcome})
        if outcome == "success":
            self.metrics.exported.add(records, attrs)
        elif outcome == "retry":
            self.metrics.retries.add(1, attrs)
        elif outcome == "dead_letter":
            self.metrics.dead_lettered.add(records, attrs)

    # -- lifecycle -----------------------------------------------------------------------------

    def force_flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything persisted so far is acknowledged by the collector."""
        return self._sender.force_flush(timeout)

    def stats(self) -> dict[str, Any]:
        wal = self._wal.stats()
        sender = self._sender.stats() if hasattr(self, "_sender") else {}
        return {**wal, **{f"sender_{k}": v for k, v in sender.items()}}

    @property
    def wal(self) -> WAL:
        return self._wal

    @property
    def closed(self) -> bool:
        return self._closed

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the sender (bounded by ``timeout``) and close the WAL; unsent records stay on disk."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout
        try:
            # Deliver what we can within the bound, as the SDK's shutdown does; the rest is replayed.
            self._sender.force_flush(max(0.0, deadline - time.monotonic()) * 0.8)
            self._sender.shutdown(max(0.0, deadline - time.monotonic()))
        finally:
            self._wal.close()
            _forget(self)


# -- one pipeline per directory per process ---------------------------------------------------------

_registry: dict[str, AuditPipeline] = {}
_registry_lock = threading.Lock()


def _key(wal_dir: Path) -> str:
    return os.path.realpath(os.fspath(wal_dir))


def get_pipeline(config: AuditConfig) -> AuditPipeline:
    """Return the process's pipeline for ``config.wal_dir``, creating it on first use.

    fcntl locks are per process, so a second WAL.open on the same directory in the same process
    would not be refused by the kernel: this registry is what keeps one writer per directory.
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
            raise AuditWriteError(f"audit record {record_id} was not persisted: {exc}", record_id=record_id) from exc
        pipeline.count_dropped()
        _log.error("audit record %s was not persisted and is dropped (fail_closed=False): %s", record_id, exc)
        return None
    if seq == 0:
        # drop_newest refused it; the WAL already counted and warned.
        if fail_closed:
            raise AuditWriteError(
                f"audit record {record_id} was dropped: the WAL is full (full_policy=drop_newest)", record_id=record_id
            )
        return None
    return seq, digest


__all__ = ["AuditPipeline", "OtelAuditError", "get_pipeline", "persist_or_fail"]
