"""One process's part of a WAL root: its shard, its context store, its sender, and the drain of one orphan at a time."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.proto.logs.v1.logs_pb2 import ResourceLogs

from otel_audit.config import AuditConfig
from otel_audit.exceptions import AuditTimeoutError, WALError
from otel_audit.export.contexts import ContextStore
from otel_audit.export.payload import encode_payload
from otel_audit.export.requeue import drain_inbox
from otel_audit.export.requeue import pending as requeue_pending
from otel_audit.export.retry import DEFAULT_INITIAL_BACKOFF
from otel_audit.export.sender import Sender
from otel_audit.export.transport import Transport, create_transport
from otel_audit.fork_gate import BorrowedTransport, ForkGate, HookedTransport
from otel_audit.integrity import StreamChain
from otel_audit.metrics import AuditMetrics
from otel_audit.record import AuditRecord
from otel_audit.shards import SHARD_ID_ATTRIBUTE, ShardBudget, ShardRoot, mark_draining, set_wal_cap, shard_id
from otel_audit.wal import WAL

_log = logging.getLogger("otel_audit")

# Receipts are looked up by record id for wait_delivered(); remember only the recent ones so memory
# stays bounded whatever the rate. Older ids fall back to "persisted earlier": see wait_delivered.
_RECENT_IDS = 65536

SHARD_CHORE_SECONDS = 2.0
"""How often a process rebalances its byte budget and looks for orphan shards to drain."""

_MIN_SHARD_SEGMENT_BYTES = 64 << 10


def shard_segment_bytes(config: AuditConfig) -> int:
    """Segment size of a shard: the configured one, smaller when max_bytes leaves little room per shard.

    A shard's budget never goes below one segment, so a 32 MiB segment under a 64 MiB root would
    let two processes alone fill it; 1/16 of max_bytes keeps many shards within the root's cap.
    """
    return min(config.segment_bytes, max(_MIN_SHARD_SEGMENT_BYTES, config.max_bytes // 16))


# -- one orphan shard being drained -------------------------------------------------------------


class _Drain:
    """An adopted orphan shard and the sender that empties it; the shard is removed once drained."""

    def __init__(
        self,
        wal: WAL,
        transport: Transport,
        config: AuditConfig,
        on_export: Callable[[int, float, str], None],
        on_idle: Callable[[], None],
    ) -> None:
        self.wal = wal
        self.path = wal.directory
        self.records = wal.last_seq - wal.acked_seq
        self._on_idle = on_idle
        self.sender = _make_sender(wal, ContextStore(wal.directory), transport, config, on_export, self._idle)
        self.sender.start()

    def _idle(self) -> None:
        drain_inbox(self.wal)
        self._on_idle()

    def done(self) -> bool:
        return self.sender.delivered_seq >= self.wal.last_seq and not requeue_pending(self.path)

    def stop(self, timeout: float) -> None:
        """Stop sending; what is not delivered stays in the shard, an orphan again for any process."""
        try:
            self.sender.shutdown(timeout)
        finally:
            self.wal.close()


def _make_sender(
    wal: WAL,
    contexts: ContextStore,
    transport: Transport,
    config: AuditConfig,
    on_export: Callable[[int, float, str], None],
    idle_hook: Callable[[], object],
) -> Sender:
    return Sender(
        wal,
        contexts,
        transport,
        max_batch_records=config.batch_max_records,
        max_batch_bytes=config.batch_max_bytes,
        export_timeout=config.exporter.timeout,
        # A cap below the default first wait lowers the first wait too.
        initial_backoff=min(DEFAULT_INITIAL_BACKOFF, config.retry_max_backoff),
        max_backoff=config.retry_max_backoff,
        on_export=on_export,
        idle_hook=idle_hook,
        state_path=wal.directory / "state" / "sender.json",
    )


def with_shard_id(context_blob: bytes, shard: str) -> bytes:
    """The context with ``otel_audit.shard.id`` set on its resource: records then name their producer."""
    message = ResourceLogs.FromString(context_blob)
    attributes = message.resource.attributes
    for i in reversed(range(len(attributes))):
        if attributes[i].key == SHARD_ID_ATTRIBUTE:
            del attributes[i]
    kv = attributes.add()
    kv.key = SHARD_ID_ATTRIBUTE
    kv.value.string_value = shard
    blob: bytes = message.SerializeToString()
    return blob


# -- the process's shard ------------------------------------------------------------------------


class ShardPipeline:
    """What one process owns under a WAL root: its shard (WAL + contexts), one sender, the chores.

    Created in the process that uses it and never used in another: after fork the child makes its
    own (see :class:`AuditPipeline`).
    """

    def __init__(self, config: AuditConfig, blobs: dict[bytes, bytes], metrics: AuditMetrics) -> None:
        self.config = config
        self.pid = os.getpid()
        self.metrics = metrics
        self._blobs = blobs
        self._roots = ShardRoot(config.wal_dir)
        self._segment_bytes = shard_segment_bytes(config)
        self._budget = ShardBudget(self._roots, config.max_bytes, self._segment_bytes)
        self._wal = self._roots.claim_own(self._open_own)
        try:
            self.path = self._wal.directory
            self.shard_id = shard_id(self.path)
            self._rebalance()
            self._contexts = ContextStore(self.path)
            self._cids: dict[bytes, bytes] = {}
            self._gate = ForkGate(lambda: create_transport(config.exporter))
            self._sender = _make_sender(
                self._wal,
                self._contexts,
                HookedTransport(self._gate, self._chore),
                config,
                self._on_export,
                self._on_idle,
            )
        except BaseException:
            self._wal.close()
            raise
        # Serialises "seal the chain, then append" so the chain's order is the WAL's order.
        self._append_lock = threading.Lock()
        self._recent: OrderedDict[str, int] = OrderedDict()
        self._chore_lock = threading.Lock()
        self._next_chore = 0.0
        self._drain: _Drain | None = None
        self._closing = False
        _LIVE.add(self)
        self._sender.start()

    def _open_own(self, path: Path) -> WAL:
        config = self.config
        return WAL.open(
            path,
            durability=config.durability,
            fsync_interval=config.fsync_interval,
            segment_bytes=self._segment_bytes,
            max_bytes=max(self._segment_bytes, config.max_bytes),  # the budget sets the real cap at once
            full_policy=config.full_policy,
            full_timeout=config.full_timeout,
        )

    def _open_orphan(self, path: Path) -> WAL:
        # "always": nothing is appended (so no fsync thread and no cost), and each ack is fsynced.
        return WAL.open(
            path, durability="always", segment_bytes=self._segment_bytes, max_bytes=self.config.max_bytes
        )

    # -- writing ------------------------------------------------------------------------------

    def stored_context(self, caller_id: bytes) -> bytes:
        """The id under which this shard stores the caller's context (with the shard id added)."""
        stored = self._cids.get(caller_id)
        if stored is None:
            blob = self._blobs.get(caller_id)
            if blob is None:
                raise WALError(f"context {caller_id.hex()} was never registered with context_id()")
            stored = self._contexts.put(with_shard_id(blob, self.shard_id))
            self._cids[caller_id] = stored
        return stored

    def persist(self, context_id: bytes, records: Sequence[bytes]) -> list[int]:
        stored = self.stored_context(context_id)
        payloads = [encode_payload(stored, r) for r in records]
        seqs = self._wal.append_many(payloads)
        self._count_appended(seqs)
        return seqs

    def persist_audit(
        self, context_id: bytes, record: AuditRecord, chain: StreamChain | None, *, end: bool = False
    ) -> tuple[int, bytes]:
        stored = self.stored_context(context_id)
        with self._append_lock:
            if chain is not None:
                digest = chain.seal(record, end=end)
            else:
                digest = hashlib.sha256(record.canonical_bytes()).digest()
            payload = encode_payload(stored, record.proto.SerializeToString())
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

    def _remember(self, record_id: str, seq: int) -> None:
        recent = self._recent
        recent[record_id] = seq
        if len(recent) > _RECENT_IDS:
            recent.popitem(last=False)

    # -- delivery ------------------------------------------------------------------------------

    def wait_seq_delivered(self, seq: int, timeout: float, record_id: str | None = None) -> None:
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

    def force_flush(self, timeout: float) -> bool:
        return self._sender.force_flush(timeout)

    # -- chores: the byte budget, orphans ------------------------------------------------------

    def _on_idle(self) -> None:
        drain_inbox(self._wal)
        self._chore()

    def _chore(self) -> None:
        """Rebalance the budget and drive the orphan drain, at most every SHARD_CHORE_SECONDS."""
        now = time.monotonic()
        if now < self._next_chore or self._closing or not self._chore_lock.acquire(blocking=False):
            return
        try:
            self._next_chore = now + SHARD_CHORE_SECONDS
            self._rebalance()
            self._drain_step()
        except Exception:  # noqa: BLE001 - housekeeping must never stop delivery
            _log.exception("otel-audit shard housekeeping failed; retrying in %.0fs", SHARD_CHORE_SECONDS)
        finally:
            self._chore_lock.release()

    def _rebalance(self) -> None:
        used = int(self._wal.stats()["bytes_on_disk"])
        set_wal_cap(self._wal, self._budget.reserve(self.path, used))

    def _drain_step(self) -> None:
        drain = self._drain
        if drain is not None:
            if not drain.done():
                return
            self._drain = None
            drain.stop(1.0)
            _log.info("drained orphan shard %s (%d records)", drain.path, drain.records)
            self._roots.remove(drain.path)
        wal = self._roots.adopt_orphan(self._open_orphan, exclude=self.path)
        if wal is None:
            return
        if self._closing:  # shutdown began while the orphan was being opened: leave it to another process
            wal.close()
            return
        mark_draining(wal.directory)
        self._drain = _Drain(wal, BorrowedTransport(self._gate), self.config, self._on_export, self._poke)

    def _poke(self) -> None:
        """Run the next chore without waiting for the period: a drain just went idle (probably done)."""
        self._next_chore = 0.0

    # -- state and lifecycle ---------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        wal = self._wal.stats()
        sender = self._sender.stats()
        drain = self._drain
        return {
            **wal,
            **{f"sender_{k}": v for k, v in sender.items()},
            "shard_id": self.shard_id,
            "shard_dir": str(self.path),
            "max_bytes_share": self._wal.options.max_bytes,
            "draining_shard": str(drain.path) if drain is not None else None,
        }

    @property
    def wal(self) -> WAL:
        return self._wal

    @property
    def gate(self) -> ForkGate:
        """The process's transport; the fork hooks hold it still while the process forks."""
        return self._gate

    def shutdown(self, timeout: float) -> None:
        """Deliver what fits in ``timeout``, stop, and remove the shard if nothing is left in it."""
        deadline = time.monotonic() + timeout
        self._closing = True
        got_chores = self._chore_lock.acquire(timeout=max(0.0, timeout / 4))
        try:
            drain, self._drain = self._drain, None
            if drain is not None:
                # Unless it is drained (remove checks, under its lock), the orphan goes back to the
                # pool for another process.
                drain.stop(min(1.0, max(0.0, deadline - time.monotonic()) / 4))
                self._roots.remove(drain.path)
            try:
                # Deliver what we can within the bound, as the SDK's shutdown does; the rest is replayed.
                # Not while the collector is known to be failing: waiting would only delay the exit.
                if self._sender.stats()["consecutive_failures"] == 0:
                    self._sender.force_flush(max(0.0, deadline - time.monotonic()) * 0.8)
                self._sender.shutdown(max(0.0, deadline - time.monotonic()))
            finally:
                drained = self._wal.last_seq <= self._sender.delivered_seq
                self._wal.close()
            if drained:
                self._roots.remove(self.path)
        finally:
            if got_chores:
                self._chore_lock.release()
            _LIVE.discard(self)


# -- fork: the parent's side --------------------------------------------------------------------

_LIVE: weakref.WeakSet[ShardPipeline] = weakref.WeakSet()
# The parent's shard pipelines as a forked child inherited them: kept (never collected, never shut
# down: their WAL and lock belong to the parent) until the child builds its own.
_INHERITED: list[ShardPipeline] = []


def _before_fork() -> None:
    pid = os.getpid()
    for core in list(_LIVE):
        if core.pid == pid:
            core.gate.before_fork()


def _after_fork_in_parent() -> None:
    pid = os.getpid()
    for core in list(_LIVE):
        if core.pid == pid:
            core.gate.after_fork_in_parent()


def _after_fork_in_child() -> None:
    _LIVE.clear()


def inherited(core: ShardPipeline) -> None:
    """Keep a forked child's copy of the parent's shard pipeline until the child has its own."""
    _INHERITED.append(core)


def release_inherited() -> None:
    """In a forked child, before its own channel is made: close the copies of the parent's."""
    while _INHERITED:
        _INHERITED.pop().gate.discard_in_child()


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)


__all__ = [
    "SHARD_CHORE_SECONDS",
    "ShardPipeline",
    "inherited",
    "release_inherited",
    "shard_segment_bytes",
    "with_shard_id",
]
