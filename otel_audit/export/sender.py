"""The background sender: reads the WAL from the ack checkpoint, exports, acks, retries, dead-letters."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from otel_audit.exceptions import ExportError, WALError
from otel_audit.export.contexts import ContextStore
from otel_audit.export.request import RequestBuilder
from otel_audit.export.retry import (
    DEFAULT_INITIAL_BACKOFF,
    DEFAULT_MAX_BACKOFF,
    DEFAULT_MAX_RETRY_AFTER,
    RetryInterrupted,
    RetryPolicy,
)
from otel_audit.export.transport.base import ExportResult, Transport

_log = logging.getLogger("otel_audit.export.sender")

THREAD_NAME = "otel-audit-sender"

Batch = Sequence[tuple[int, bytes]]


class WALCursor(Protocol):
    def next_batch(self, max_records: int, max_bytes: int) -> list[tuple[int, bytes]]: ...

    def seek(self, after: int) -> None: ...

    def close(self) -> None: ...


class SenderWAL(Protocol):
    """The part of :class:`otel_audit.wal.WAL` the sender uses."""

    @property
    def acked_seq(self) -> int: ...

    @property
    def last_seq(self) -> int: ...

    def cursor(self, after: int) -> WALCursor: ...

    def wait_for_append(self, after_seq: int, timeout: float) -> bool: ...

    def ack(self, upto_seq: int) -> None: ...

    def dead_letter(self, seq: int, payload: bytes, reason: str) -> Path: ...


ExportCallback = Callable[[int, float, str], None]
"""``on_export(records, duration_s, outcome)``; outcomes:

- ``success``: ``records`` accepted by the collector in one request (its duration)
- ``partial_rejected``: ``records`` the collector said it rejected in a partial_success
- ``retry``: a request of ``records`` failed and will be retried
- ``rejected``: a request of ``records`` was refused for its content (it is then bisected)
- ``dead_letter``: ``records`` moved to dead-letter/ (duration 0)
"""

# How long the idle loop sleeps in wait_for_append before checking for shutdown.
_IDLE_POLL = 0.1
DEFAULT_LINGER = 0.005
_HOOK_INTERVAL = 1.0
# Dead-lettered seqs remembered for dead_letter_reason(): bounded, like any per-record state here.
_RECENT_DEAD = 10_000


class Sender:
    """Ships the WAL's records to the collector from one daemon thread, oldest first.

    Delivery is at-least-once and in WAL order: ``wal.ack`` is called only after the collector
    acknowledged every record up to that seq (or they were dead-lettered), so a crash at any point
    re-sends from the checkpoint; receivers deduplicate by ``log.record.uid``. Retryable failures
    are retried forever (see :class:`~otel_audit.export.retry.RetryPolicy`): nothing is deleted
    because a collector was down. A request refused for its content is bisected until the refused
    records are isolated; those go to dead-letter/ and the rest flows. Memory is bounded by one
    batch whatever the backlog: replay after a restart is the same loop reading from the checkpoint.

    The sender owns ``transport`` once started: ``shutdown`` closes it. Public methods are
    thread-safe.
    """

    def __init__(
        self,
        wal: SenderWAL,
        contexts: ContextStore,
        transport: Transport,
        *,
        max_batch_records: int = 512,
        max_batch_bytes: int = 4 << 20,
        export_timeout: float = 10.0,
        initial_backoff: float = DEFAULT_INITIAL_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        on_export: ExportCallback | None = None,
        sleep: Callable[[float], None] | None = None,
        idle_hook: Callable[[], object] | None = None,
        state_path: Path | None = None,
        linger: float = DEFAULT_LINGER,
    ) -> None:
        """
        Args:
            max_batch_records, max_batch_bytes: bounds of one request (payload bytes; a collector's
                default gRPC limit is 4 MiB, a larger request is refused and bisected).
            export_timeout: deadline of one request, seconds.
            initial_backoff, max_backoff, max_retry_after: the retry policy (seconds).
            on_export: metrics hook, see :data:`ExportCallback`; exceptions from it are logged.
            sleep: replaces the backoff wait (tests); shutdown still interrupts retries.
            idle_hook: called (at most once a second) when the WAL has nothing to send, e.g. to
                append records an operator requeued from dead-letter/; exceptions are logged.
            linger: seconds to wait for more records before sending a batch that is not full.
            state_path: where to publish the last error and success as JSON for other processes
                (``otel-audit status``); written atomically, at most once a second.
        """
        if max_batch_records < 1 or max_batch_bytes < 1 or export_timeout <= 0:
            raise ValueError("max_batch_records, max_batch_bytes and export_timeout must be positive")
        self._wal = wal
        self._contexts = contexts
        self._transport = transport
        self._max_records = max_batch_records
        self._max_bytes = max_batch_bytes
        self._timeout = export_timeout
        self._on_export = on_export
        self._idle_hook = idle_hook
        self._linger = linger
        self._checkpoint_behind = False
        self._state_path = state_path
        self._last_idle_hook = 0.0
        self._last_state_write = 0.0
        self._last_success_time: float | None = None
        self._stop = threading.Event()
        self.retry_policy = RetryPolicy(
            initial_backoff=initial_backoff,
            max_backoff=max_backoff,
            max_retry_after=max_retry_after,
            stop_event=self._stop,
            sleep=sleep,
            on_retry=self._on_retry,
        )
        self._builder = RequestBuilder(contexts.get)
        self._cond = threading.Condition()
        self._delivered = wal.acked_seq
        self._thread: threading.Thread | None = None
        self._dead: OrderedDict[int, str] = OrderedDict()
        self._stats_lock = threading.Lock()
        self._exported = 0
        self._requests = 0
        self._retries = 0
        self._dead_lettered = 0
        self._partial_rejected = 0
        self._partial_last_message = ""
        self._last_error = ""
        self._last_error_time: float | None = None
        self._last_duration: float | None = None
        self._consecutive_failures = 0

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the daemon thread (once)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
        self._thread.start()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop within ``timeout`` seconds, even mid-backoff or with a hanging collector.

        Does not drain (call :meth:`force_flush` first for that): what is not acknowledged stays in
        the WAL for the next start. A gRPC request in flight is cancelled; an HTTP request in
        flight cannot be, so the daemon thread may outlive this call by up to ``export_timeout``
        (it acks if that request succeeds, and sends nothing more).
        """
        deadline = time.monotonic() + max(0.0, timeout)
        self._stop.set()
        thread = self._thread
        if thread is not None:
            # Give a request in flight most of the budget to finish cleanly, then cut it.
            thread.join(max(0.0, deadline - time.monotonic() - min(0.5, timeout / 4)))
        self._transport.close()
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                _log.warning(
                    "sender to %s still waiting on a request after the %.1fs shutdown timeout; "
                    "unacknowledged records stay in the WAL",
                    self._transport.endpoint,
                    timeout,
                )
        with self._cond:
            self._cond.notify_all()

    # -- delivery progress ---------------------------------------------------------------------

    @property
    def delivered_seq(self) -> int:
        """Highest seq acked in the WAL by this sender: delivered or dead-lettered, all before it too."""
        return self._delivered

    def wait_delivered(self, seq: int, timeout: float) -> bool:
        """Block until ``seq`` is acked (or dead-lettered: see :meth:`dead_letter_reason`); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._delivered >= seq, timeout)

    def force_flush(self, timeout: float = 10.0) -> bool:
        """Wait until every record appended before this call is acked; False on timeout."""
        return self.wait_delivered(self._wal.last_seq, timeout)

    def dead_letter_reason(self, seq: int) -> str | None:
        """Why ``seq`` went to dead-letter/, if it did recently (the last 10,000 are remembered)."""
        return self._dead.get(seq)

    def stats(self) -> dict[str, Any]:
        """Counters since start; ``last_error`` holds messages only, never headers or credentials."""
        with self._stats_lock:
            return {
                "delivered_seq": self._delivered,
                "exported": self._exported,
                "requests": self._requests,
                "retries": self._retries,
                "dead_lettered": self._dead_lettered,
                "partial_rejected": self._partial_rejected,
                "partial_last_message": self._partial_last_message,
                "last_error": self._last_error,
                "last_error_time": self._last_error_time,
                "last_export_duration": self._last_duration,
                "consecutive_failures": self._consecutive_failures,
                "endpoint": self._transport.endpoint,
                "running": self._thread is not None and self._thread.is_alive() and not self._stop.is_set(),
            }

    # -- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._pump()
            except RetryInterrupted:
                break
            except Exception as exc:  # noqa: BLE001 - the sender must outlive WAL hiccups
                if self._stop.is_set():
                    break
                failures += 1
                self._note_error(f"sender loop: {type(exc).__name__}: {exc}")
                _log.exception("otel-audit sender loop failed; restarting from the WAL checkpoint")
                if self._stop.wait(min(self.retry_policy.max_backoff, 0.1 * 2 ** min(failures, 10))):
                    break
            else:
                failures = 0

    def _pump(self) -> None:
        """Stream batches from the checkpoint until stopped; any error restarts from the checkpoint."""
        after = self._wal.acked_seq
        cursor = self._wal.cursor(after=after)
        try:
            while not self._stop.is_set():
                batch = cursor.next_batch(self._max_records, self._max_bytes)
                if not batch:
                    self._on_idle()
                    self._wal.wait_for_append(after, _IDLE_POLL)
                    continue
                if len(batch) < self._max_records and self._linger > 0:
                    batch = self._fill(cursor, batch)
                after = batch[-1][0]
                self._deliver(batch)
        finally:
            cursor.close()

    def _fill(self, cursor: WALCursor, batch: list[tuple[int, bytes]]) -> list[tuple[int, bytes]]:
        """Linger briefly so a trickle of appends leaves as one request, not one request per record.

        Without it, slow appenders (``always`` mode) make the sender ship tiny batches, each paying
        a round trip and a checkpoint write: measured, 20k records became ~5k requests. The wait
        is only taken when the batch is not full, so a backlog drains without it.
        """
        if self._stop.wait(self._linger):
            return batch
        used = sum(len(payload) for _, payload in batch)
        more = cursor.next_batch(self._max_records - len(batch), max(1, self._max_bytes - used))
        if more and used + sum(len(p) for _, p in more) <= self._max_bytes:
            return [*batch, *more]
        if more:
            # The extra frames do not fit this request; send them with the next one.
            cursor.seek(batch[-1][0])
        return batch

    def _on_idle(self) -> None:
        if self._checkpoint_behind:
            self._checkpoint(self._delivered)
        now = time.monotonic()
        if self._idle_hook is not None and now - self._last_idle_hook >= _HOOK_INTERVAL:
            self._last_idle_hook = now
            try:
                self._idle_hook()
            except Exception:  # noqa: BLE001 - an idle chore must not stop delivery
                _log.exception("otel-audit sender idle hook failed")
        self._publish_state()

    def _publish_state(self, *, force: bool = False) -> None:
        """Write what other processes cannot see in the WAL: the last error and the last success."""
        if self._state_path is None:
            return
        now = time.monotonic()
        if not force and now - self._last_state_write < _HOOK_INTERVAL:
            return
        self._last_state_write = now
        with self._stats_lock:
            state = {
                "pid": os.getpid(),
                "endpoint": self._transport.endpoint,
                "delivered_seq": self._delivered,
                "last_error": self._last_error,
                "last_error_time": self._last_error_time,
                "last_success_time": self._last_success_time,
                "consecutive_failures": self._consecutive_failures,
                "updated": time.time(),
            }
        try:
            self._state_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = self._state_path.with_name(self._state_path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, json.dumps(state).encode())
            finally:
                os.close(fd)
            # No fsync: this is a monitoring hint, rewritten every second, not a durable record.
            os.replace(tmp, self._state_path)
        except OSError as exc:
            _log.debug("cannot publish sender state to %s: %s", self._state_path, exc)

    def _deliver(self, batch: Batch) -> None:
        """Get every record of ``batch`` delivered or dead-lettered, then ack its last seq."""
        try:
            request = self._builder.build([payload for _, payload in batch])
        except (WALError, ValueError):
            self._deliver_buildable(batch)
            return
        try:
            result = self.retry_policy.call(lambda: self._attempt(request, len(batch)))
        except ExportError as exc:
            if len(batch) == 1:
                seq, payload = batch[0]
                self._dead_letter(seq, payload, f"rejected by the collector ({exc.status}): {exc}")
                self._ack(seq)
                return
            # Refused for its content: halve until the refused records stand alone. A whole
            # request refused for its size (413, RESOURCE_EXHAUSTED) goes through in halves.
            mid = len(batch) // 2
            self._deliver(batch[:mid])
            self._deliver(batch[mid:])
            return
        if result.rejected_count:
            self._partial(result, batch)
        self._ack(batch[-1][0])

    def _deliver_buildable(self, batch: Batch) -> None:
        """Dead-letter the records that cannot be rebuilt (unknown version, lost context), send the rest."""
        good = []
        for seq, payload in batch:
            try:
                self._builder.check(payload)
            except (WALError, ValueError) as exc:
                self._dead_letter(seq, payload, f"cannot rebuild the record: {exc}")
            else:
                good.append((seq, payload))
        if good:
            self._deliver(good)
        self._ack(batch[-1][0])

    def _attempt(self, request: bytes, records: int) -> ExportResult:
        start = time.monotonic()
        try:
            result = self._transport.send(request, self._timeout)
        except ExportError as exc:
            duration = time.monotonic() - start
            with self._stats_lock:
                self._requests += 1
                self._last_duration = duration
            self._note_error(str(exc))
            self._emit(records, duration, "retry" if exc.retryable else "rejected")
            raise
        duration = time.monotonic() - start
        with self._stats_lock:
            self._requests += 1
            self._last_duration = duration
            self._exported += records - min(records, result.rejected_count)
            self._last_success_time = time.time()
            recovered, self._consecutive_failures = self._consecutive_failures, 0
        if recovered:
            _log.info("export to %s recovered after %d failed attempts", self._transport.endpoint, recovered)
        self._emit(records - min(records, result.rejected_count), duration, "success")
        return result

    def _on_retry(self, exc: ExportError, wait: float, attempt: int) -> None:
        with self._stats_lock:
            self._retries += 1
            failures = self._consecutive_failures
        # Warn on the first failure and then at 10, 100, 1000...: an outage stays visible without a log flood.
        self._publish_state()
        if failures == 1 or (failures >= 10 and str(failures).strip("0") == "1"):
            _log.warning(
                "export failed (%d consecutive failures), retrying in %.2fs; records stay in the WAL: %s",
                failures,
                wait,
                exc,
            )

    def _note_error(self, message: str) -> None:
        with self._stats_lock:
            self._last_error = message
            self._last_error_time = time.time()
            self._consecutive_failures += 1

    def _partial(self, result: ExportResult, batch: Batch) -> None:
        # The response does not say which records were rejected. Re-sending the request would
        # duplicate the accepted ones and most likely be rejected again. So every record of the
        # batch is copied to dead-letter/ with the collector's message: nothing is lost silently,
        # and an operator who requeues them creates only duplicates, deduplicated by record id.
        records = len(batch)
        rejected = min(records, result.rejected_count)
        with self._stats_lock:
            self._partial_rejected += rejected
            self._partial_last_message = result.error_message
        _log.warning(
            "collector %s accepted a request of %d records but rejected %d of them (partial_success): %s; "
            "the batch is copied to dead-letter/ since the response does not say which",
            self._transport.endpoint,
            records,
            rejected,
            result.error_message or "no message",
        )
        reason = (
            f"partial_success: the collector rejected {rejected} of the {records} records of this request "
            f"(seq {batch[0][0]}..{batch[-1][0]}) without saying which: {result.error_message or 'no message'}"
        )
        for seq, payload in batch:
            self._dead_letter(seq, payload, reason, quiet=True)
        self._emit(rejected, 0.0, "partial_rejected")

    def _dead_letter(self, seq: int, payload: bytes, reason: str, *, quiet: bool = False) -> None:
        path = self._wal.dead_letter(seq, payload, reason)
        with self._stats_lock:
            self._dead_lettered += 1
            self._dead[seq] = reason
            if len(self._dead) > _RECENT_DEAD:
                self._dead.popitem(last=False)
        if not quiet:
            _log.warning("record seq %d moved to %s: %s", seq, path, reason)
        self._emit(1, 0.0, "dead_letter")

    def _ack(self, seq: int) -> None:
        if seq <= self._delivered:
            return
        self._checkpoint(seq)
        with self._cond:
            self._delivered = seq
            self._cond.notify_all()

    def _checkpoint(self, seq: int) -> None:
        """Record delivery in the WAL; on a disk fault keep delivering and catch up later.

        The collector already has these records, so a failed checkpoint must not stop delivery
        (re-sending the same batch at every back-off would only duplicate it). The next ack, or
        the idle loop, writes the checkpoint once the disk recovers; a crash before then re-sends
        them: duplicates, never a loss.
        """
        try:
            self._wal.ack(seq)
        except WALError as exc:
            self._note_error(f"checkpoint not written, will retry: {exc}")
            if not self._checkpoint_behind:
                _log.warning("records up to seq %d are delivered but the WAL could not record it: %s", seq, exc)
            self._checkpoint_behind = True
        else:
            if self._checkpoint_behind:
                _log.info("the WAL checkpoint caught up with delivery at seq %d", seq)
            self._checkpoint_behind = False

    def _emit(self, records: int, duration: float, outcome: str) -> None:
        if self._on_export is None or records <= 0:
            return
        try:
            self._on_export(records, duration, outcome)
        except Exception:  # noqa: BLE001 - a metrics bug must not stop delivery
            _log.exception("otel-audit on_export callback failed")


__all__ = ["THREAD_NAME", "ExportCallback", "Sender", "SenderWAL", "WALCursor"]
