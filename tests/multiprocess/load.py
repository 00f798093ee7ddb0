"""An HTTP load from the test process: many short GETs, each with its own id, remembering which got a response."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable


class Load:
    """GET ``/items/<prefix>-<n>`` for n in 0..total-1 from ``threads`` threads, one connection per request.

    ``responded`` lists the ids whose response was a 200: those records must be in the archive.
    A request the server never answered (killed meanwhile) is only counted in ``failed``.
    """

    def __init__(self, port: int, total: int, *, prefix: str, threads: int = 8) -> None:
        self.port = port
        self.total = total
        self.prefix = prefix
        self.threads = threads
        self.responded: list[str] = []
        self.failed = 0
        self.started = 0
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []

    def _next(self) -> int | None:
        with self._lock:
            if self.started >= self.total:
                return None
            self.started += 1
            return self.started - 1

    def _run(self) -> None:
        while (n := self._next()) is not None:
            item = f"{self.prefix}-{n}"
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                conn.request("GET", f"/items/{item}")
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):  # refused, reset, cut mid-response by a kill
                ok = False
            finally:
                conn.close()
            with self._lock:
                if ok:
                    self.responded.append(item)
                else:
                    self.failed += 1

    def start(self) -> Load:
        self._workers = [threading.Thread(target=self._run, name=f"load-{i}") for i in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    @property
    def done(self) -> int:
        with self._lock:
            return len(self.responded) + self.failed

    def wait_for(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.done < count and any(w.is_alive() for w in self._workers):
            assert time.monotonic() < deadline, f"load stuck at {self.done} of {count} requests"
            time.sleep(0.02)

    def join(self, timeout: float = 120) -> None:
        for worker in self._workers:
            worker.join(timeout)
        assert not any(w.is_alive() for w in self._workers), "load threads did not finish"


def wait_for_http(port: int, timeout: float = 30, check: Callable[[], bool] = lambda: True) -> None:
    """Poll until the server answers 200 on /items/ready (and ``check`` holds)."""
    deadline = time.monotonic() + timeout
    while True:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/items/ready")
            if conn.getresponse().status == 200 and check():
                return
        except OSError:
            pass
        finally:
            conn.close()
        assert time.monotonic() < deadline, f"nothing answered on port {port} within {timeout} s"
        time.sleep(0.1)
