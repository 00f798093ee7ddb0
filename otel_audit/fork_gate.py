"""The process's one transport, held still while the process forks, and the views its senders get of it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from otel_audit.exceptions import ExportError
from otel_audit.export.transport import ExportResult, Transport

_log = logging.getLogger("otel_audit")

FORK_WAIT_SECONDS = 0.5
"""How long fork() waits for an export in flight before cancelling it (it is retried after the fork)."""


class ForkGate:
    """The process's one transport, with no request in flight while the process forks.

    gRPC's core library breaks in a child forked while another thread is inside a call (measured
    here with grpcio 1.85: children whose new channel never connects, or a hang with
    GRPC_ENABLE_FORK_SUPPORT=1), so ``before_fork`` holds new sends and waits for the one in
    flight; one still running after FORK_WAIT_SECONDS is cancelled by closing the channel, and a
    new channel is made on the next send. The child never uses this object.
    """

    def __init__(self, factory: Callable[[], Transport]) -> None:
        self._factory = factory
        self._inner: Transport | None = factory()  # now: a bad certificate fails configure(), not the sender
        self._endpoint = self._inner.endpoint
        self._cond = threading.Condition()
        self._paused = False
        self._closed = False
        self._in_flight = 0

    @property
    def endpoint(self) -> str:
        return self._endpoint

    def send(self, request: bytes, timeout: float) -> ExportResult:
        with self._cond:
            self._cond.wait_for(lambda: not self._paused or self._closed)
            if self._closed:
                raise ExportError(f"transport to {self._endpoint} is closed", retryable=True, status="CLOSED")
            if self._inner is None:
                self._inner = self._factory()
            inner = self._inner
            self._in_flight += 1
        try:
            return inner.send(request, timeout)
        finally:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            inner, self._inner = self._inner, None
            self._cond.notify_all()
        if inner is not None:
            inner.close()

    def before_fork(self) -> None:
        with self._cond:
            self._paused = True
            if self._cond.wait_for(lambda: self._in_flight == 0, FORK_WAIT_SECONDS):
                return
            inner, self._inner = self._inner, None
        if inner is not None:
            inner.close()  # cancels the call; the sender retries it after the fork
        with self._cond:
            self._cond.wait_for(lambda: self._in_flight == 0, FORK_WAIT_SECONDS)

    def after_fork_in_parent(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def discard_in_child(self) -> None:
        """Close the child's copy of the parent's channel (its fds), so the child's own channel starts clean."""
        inner, self._inner = self._inner, None
        if inner is not None:
            try:
                inner.close()
            except Exception:  # noqa: BLE001 - best effort on inherited state
                _log.debug("closing an inherited transport in a forked child failed", exc_info=True)


class HookedTransport:
    """The own sender's view of the gate: each send first runs the shard chore (it is time-gated)."""

    def __init__(self, gate: ForkGate, chore: Callable[[], None]) -> None:
        self._gate = gate
        self._chore = chore

    @property
    def endpoint(self) -> str:
        return self._gate.endpoint

    def send(self, request: bytes, timeout: float) -> ExportResult:
        # Sending is the one thing the sender does in every state (busy, and retrying through an
        # outage), so housekeeping keeps its cadence even while the collector is down.
        self._chore()
        return self._gate.send(request, timeout)

    def close(self) -> None:
        self._gate.close()


class BorrowedTransport:
    """A drain sender's view of the gate: it shares the process's channel and never closes it."""

    def __init__(self, gate: ForkGate) -> None:
        self._gate = gate

    @property
    def endpoint(self) -> str:
        return self._gate.endpoint

    def send(self, request: bytes, timeout: float) -> ExportResult:
        return self._gate.send(request, timeout)

    def close(self) -> None:
        pass


__all__ = ["FORK_WAIT_SECONDS", "BorrowedTransport", "ForkGate", "HookedTransport"]
