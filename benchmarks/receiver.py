"""A counting OTLP/gRPC logs receiver in its own process, so it never shares the producer's GIL.

Run as ``python -m benchmarks.receiver [--port N]``: it prints one line ``ready <grpc port> <control
port>`` and serves until stdin closes. The control port answers ``GET /stats`` with JSON (records,
requests, bytes, first/last arrival as ``time.monotonic()``, which is system-wide on Linux and so
comparable with the producer's clock) and ``POST /reset``. :class:`Receiver` starts and drives one.
"""

from __future__ import annotations

import argparse
import collections
import http.server
import json
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent import futures
from typing import Any

import grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
# An empty ExportLogsServiceResponse serialises to no bytes at all.
_EMPTY_RESPONSE = b""


class Counter:
    """What arrived: parsed like a real receiver would, counted, timestamped."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.records = 0
            self.requests = 0
            self.bytes = 0
            self.first: float | None = None
            self.last: float | None = None
            self.events: collections.Counter[str] = collections.Counter()

    def add(self, body: bytes) -> None:
        request = ExportLogsServiceRequest.FromString(body)
        # Per event name, so records the library adds (stream digests) are told from the workload's.
        events = collections.Counter(
            lr.event_name for rl in request.resource_logs for sl in rl.scope_logs for lr in sl.log_records
        )
        n = sum(events.values())
        now = time.monotonic()
        with self._lock:
            self.events.update(events)
            self.records += n
            self.requests += 1
            self.bytes += len(body)
            if self.first is None:
                self.first = now
            self.last = now

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "records": self.records,
                "requests": self.requests,
                "bytes": self.bytes,
                "first": self.first,
                "last": self.last,
                "events": dict(self.events),
            }


def serve(port: int) -> None:
    counter = Counter()

    def export(body: bytes, context: grpc.ServicerContext) -> bytes:
        counter.add(body)
        return _EMPTY_RESPONSE

    # Raw bytes in and out (no (de)serializers): the body size is the OTLP request size, and the
    # parse in Counter.add is the only protobuf work, as in a collector's receiver.
    handler = grpc.method_handlers_generic_handler(
        SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(export)}
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="bench-receiver"),
        options=[("grpc.max_receive_message_length", 64 << 20)],
    )
    server.add_generic_rpc_handlers((handler,))
    grpc_port = server.add_insecure_port(f"127.0.0.1:{port}")
    if not grpc_port:
        raise SystemExit(f"benchmark receiver: cannot bind 127.0.0.1:{port}")
    server.start()

    class Control(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
            return

        def do_GET(self) -> None:  # noqa: N802
            self._reply(counter.snapshot())

        def do_POST(self) -> None:  # noqa: N802
            counter.reset()
            self._reply({"reset": True})

        def _reply(self, data: dict[str, Any]) -> None:
            body = json.dumps(data).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    control = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Control)
    threading.Thread(target=control.serve_forever, daemon=True, name="bench-receiver-control").start()
    print(f"ready {grpc_port} {control.server_address[1]}", flush=True)
    sys.stdin.read()  # the parent closing our stdin (or dying) ends the receiver
    server.stop(grace=None)
    control.shutdown()


def fetch_stats(control_url: str) -> dict[str, Any]:
    """The counters of the receiver whose control port is ``control_url``."""
    with urllib.request.urlopen(control_url, timeout=10) as response:
        data: dict[str, Any] = json.loads(response.read())
    return data


class Receiver:
    """Handle on a receiver process: its endpoint, its counters. Use as a context manager."""

    def __init__(self, port: int = 0) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.receiver", "--port", str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline().split()
        if len(line) != 3 or line[0] != "ready":
            self.close()
            raise RuntimeError(f"benchmark receiver did not start on port {port}: {line!r}")
        self.port = int(line[1])
        self._control = f"http://127.0.0.1:{line[2]}/"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self._process.pid

    @property
    def control_url(self) -> str:
        """Where :func:`fetch_stats` reads the counters, from any process."""
        return self._control

    def stats(self) -> dict[str, Any]:
        return fetch_stats(self._control)

    def reset(self) -> None:
        request = urllib.request.Request(self._control, data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def wait_quiet(self, quiet_s: float = 0.3, timeout_s: float = 60.0) -> dict[str, Any]:
        """Stats once nothing new has arrived for ``quiet_s`` (stragglers after a flush)."""
        deadline = time.monotonic() + timeout_s
        stats = self.stats()
        while time.monotonic() < deadline:
            time.sleep(quiet_s)
            now = self.stats()
            if now["records"] == stats["records"]:
                return now
            stats = now
        return stats

    def close(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    serve(parser.parse_args().port)


if __name__ == "__main__":
    main()
