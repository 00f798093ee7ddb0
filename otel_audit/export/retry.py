"""The sender's retry policy: exponential backoff with full jitter, never giving up, cut short by shutdown."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_never, wait_random_exponential

from otel_audit.exceptions import ExportError

T = TypeVar("T")

DEFAULT_INITIAL_BACKOFF = 0.5
DEFAULT_MAX_BACKOFF = 30.0
DEFAULT_MAX_RETRY_AFTER = 300.0


class RetryInterrupted(Exception):
    """The stop event was set while waiting between attempts; the request was not sent again."""


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, ExportError) and exc.retryable


class RetryPolicy:
    """Runs an export until it succeeds, waiting between retryable failures.

    Wait before retry n (n = 1, 2, ...) is uniform in [0, min(max_backoff, initial_backoff * 2**(n-1))]
    ("full jitter", tenacity's ``wait_random_exponential``), so many producers restarting together
    do not hit a recovering collector in lockstep. When the server asked for a delay (gRPC RetryInfo,
    HTTP Retry-After) the wait is at least that, clamped to ``max_retry_after`` so a bogus header
    cannot park the queue for hours. There is no attempt limit: audit records are never dropped
    because retries ran out. Permanent errors (``retryable=False``) are raised at once.

    Every computed wait is appended to :attr:`schedule` (the last 1,000), and ``sleep`` can be
    replaced, so tests check the policy without waiting. Thread-safe for one caller at a time.
    """

    def __init__(
        self,
        *,
        initial_backoff: float = DEFAULT_INITIAL_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        stop_event: threading.Event | None = None,
        sleep: Callable[[float], None] | None = None,
        on_retry: Callable[[ExportError, float, int], None] | None = None,
    ) -> None:
        if initial_backoff <= 0 or max_backoff < initial_backoff:
            raise ValueError(f"need 0 < initial_backoff <= max_backoff, got {initial_backoff}, {max_backoff}")
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self.stop_event = stop_event or threading.Event()
        self.schedule: deque[float] = deque(maxlen=1000)
        self._sleep_fn = sleep
        self._on_retry = on_retry
        self._jitter = wait_random_exponential(multiplier=initial_backoff, max=max_backoff)
        self._retrying = Retrying(
            retry=retry_if_exception(_is_retryable),
            wait=self._wait,
            stop=stop_never,
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )

    def wait_seconds(self, attempt: int, error: ExportError | None = None) -> float:
        """The wait after failed attempt number ``attempt`` (1-based), honouring ``error.retry_after``."""
        state = RetryCallState(self._retrying, fn=None, args=(), kwargs={})
        state.attempt_number = attempt
        wait = float(self._jitter(state))
        if error is not None and error.retry_after is not None:
            wait = max(wait, min(error.retry_after, self.max_retry_after))
        return wait

    def call(self, fn: Callable[[], T]) -> T:
        """Call ``fn`` until it returns; retry on retryable ExportError, forever.

        Raises:
            ExportError: a permanent error (``retryable=False``), at once.
            RetryInterrupted: the stop event was set before or during a wait.
        """
        return self._retrying(fn)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = self.wait_seconds(state.attempt_number, exc if isinstance(exc, ExportError) else None)
        self.schedule.append(wait)
        return wait

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if self._on_retry is not None and isinstance(exc, ExportError):
            wait = state.next_action.sleep if state.next_action is not None else 0.0
            self._on_retry(exc, float(wait), state.attempt_number)

    def _sleep(self, seconds: float) -> None:
        if self._sleep_fn is not None:
            if self.stop_event.is_set():
                raise RetryInterrupted()
            self._sleep_fn(seconds)
            if self.stop_event.is_set():
                raise RetryInterrupted()
            return
        if self.stop_event.wait(seconds):
            raise RetryInterrupted()


__all__ = [
    "DEFAULT_INITIAL_BACKOFF",
    "DEFAULT_MAX_BACKOFF",
    "DEFAULT_MAX_RETRY_AFTER",
    "RetryInterrupted",
    "RetryPolicy",
]
