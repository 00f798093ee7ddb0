"""A real OpenTelemetry Collector process for end-to-end tests: start, kill, restart, read its archive."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel_audit.archive import ArchivedRecord, ArchiveReader, ArchiveStats, archive_files

from . import raw_archive

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = ROOT / "collector-config.yaml"
BUILD_SCRIPT = ROOT / "scripts" / "build-collector.sh"
BINARY_ENV = "OTEL_AUDIT_COLLECTOR_BIN"


class CollectorError(RuntimeError):
    """The collector could not be built, started or stopped; the message carries its log tail."""


def resolve_binary() -> Path:
    """The collector binary: $OTEL_AUDIT_COLLECTOR_BIN, else built (or found cached) by the script."""
    configured = os.environ.get(BINARY_ENV)
    if configured:
        path = Path(configured)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise CollectorError(f"{BINARY_ENV}={configured} is not an executable file")
        return path
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print"], capture_output=True, text=True, check=False, timeout=900
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise CollectorError(
            f"`bash {BUILD_SCRIPT} --print` failed (exit {result.returncode}):\n{result.stderr[-3000:]}"
        )
    return Path(lines[-1])


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # the Linux default


def free_port() -> int:
    """A TCP port nothing listens on right now, chosen OUTSIDE the kernel's ephemeral range.

    A port from the ephemeral range (what binding port 0 returns) can be taken at any moment as
    the source port of some outgoing connection on the machine, and a client that keeps
    reconnecting to a stopped collector's port can even connect to itself (TCP simultaneous
    open): both made the collector's bind fail on start or restart. Ports below the range are
    only ever taken by an explicit bind. Still a race with other explicit binds, which
    `Collector.start` absorbs by picking again on the first start.
    """
    low, high = _ephemeral_range()
    span = (10000, low - 1) if low > 11000 else (high + 1, 65535)
    for _ in range(200):
        port = random.randint(*span)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise CollectorError(f"no free TCP port in {span[0]}-{span[1]} after 200 tries")


class Collector:
    """One collector process with fixed ports and archive, so it can be restarted in place.

    The ports, the archive and the log are chosen once at construction: `stop()`, `kill()` and
    `start()` keep them, which is what restart tests need (the sender reconnects to the same
    address; the archive accumulates across runs). Not thread-safe; one test drives it.
    """

    def __init__(
        self,
        binary: Path,
        workdir: Path,
        *,
        config: Path = DEFAULT_CONFIG,
        env: Mapping[str, str] | None = None,
        ready_timeout_s: float = 20.0,
    ) -> None:
        self.binary = binary
        self.config = config
        self.workdir = workdir
        self.grpc_port, self.http_port, self.health_port = self._pick_ports()
        self.archive_path = workdir / "archive" / "audit.jsonl"
        self.traces_path = workdir / "archive" / "traces.jsonl"
        self.queue_dir = workdir / "queue"
        self.log_path = workdir / "collector.log"
        self.ready_timeout_s = ready_timeout_s
        self.extra_env = dict(env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        workdir.mkdir(parents=True, exist_ok=True)

    # -- addresses ---------------------------------------------------------------------------

    @staticmethod
    def _pick_ports() -> tuple[int, int, int]:
        ports: set[int] = set()
        while len(ports) < 3:
            ports.add(free_port())
        grpc, http, health = sorted(ports, key=lambda _: random.random())
        return grpc, http, health

    @property
    def grpc_endpoint(self) -> str:
        """The OTLP/gRPC endpoint as OTLP exporters take it."""
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def grpc_address(self) -> str:
        """host:port, as `grpc.insecure_channel` takes it."""
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """The OTLP/HTTP base URL; logs go to `http_endpoint + "/v1/logs"`."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def http_logs_url(self) -> str:
        return f"{self.http_endpoint}/v1/logs"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.health_port}/"

    def environment(self) -> dict[str, str]:
        """The variables collector-config.yaml reads, set to this instance's ports and files."""
        return {
            "OTEL_AUDIT_GRPC_ENDPOINT": f"127.0.0.1:{self.grpc_port}",
            "OTEL_AUDIT_HTTP_ENDPOINT": f"127.0.0.1:{self.http_port}",
            "OTEL_AUDIT_HEALTH_ENDPOINT": f"127.0.0.1:{self.health_port}",
            "OTEL_AUDIT_ARCHIVE": str(self.archive_path),
            "OTEL_AUDIT_TRACES_ARCHIVE": str(self.traces_path),
            "OTEL_AUDIT_QUEUE_DIR": str(self.queue_dir),
            **self.extra_env,
        }

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> Collector:
        """Start the process and return once its health check answers 200.

        On the first start only, a port taken meanwhile by someone else ("address already in
        use") makes it pick fresh ports and try again (3 attempts): nothing can have been pointed
        at the old ones yet, so read the addresses after the first `start()`. Later starts keep
        the ports, which is what restart tests need.

        Raises:
            CollectorError: it exited, or was not healthy within `ready_timeout_s`; the message
                holds the end of its log.
        """
        attempts = 3 if self.starts == 0 else 1
        for attempt in range(1, attempts + 1):
            try:
                return self._start_once()
            except CollectorError as exc:
                if attempt == attempts or "address already in use" not in str(exc):
                    raise
                self.grpc_port, self.http_port, self.health_port = self._pick_ports()
                self.starts = 0
        raise AssertionError("unreachable")

    def _start_once(self) -> Collector:
        if self.running:
            raise CollectorError(f"collector already running (pid {self.process and self.process.pid})")
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== start #{self.starts} ====\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [str(self.binary), "--config", str(self.config)],
                cwd=self.workdir,
                env={**os.environ, **self.environment()},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise CollectorError(
                    f"collector exited with {self.process.returncode} during start-up:\n{self.log_tail()}"
                )
            if self._healthy():
                return self
            time.sleep(0.05)
        self.kill()
        raise CollectorError(f"collector not healthy within {self.ready_timeout_s} s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 15.0) -> int:
        """SIGTERM and wait for a graceful shutdown; returns the exit code.

        Raises:
            CollectorError: it did not exit within `timeout_s` (it is SIGKILLed first).
        """
        return self._signal_and_wait(signal.SIGTERM, timeout_s)

    def kill(self) -> int:
        """SIGKILL: no flush, no shutdown hooks, exactly like a crash or an OOM kill."""
        return self._signal_and_wait(signal.SIGKILL, 10.0)

    def restart(self) -> Collector:
        """Graceful stop (if running), then start on the same ports and archive."""
        if self.running:
            self.stop()
        return self.start()

    def _signal_and_wait(self, sig: signal.Signals, timeout_s: float) -> int:
        process = self.process
        if process is None:
            raise CollectorError("collector was never started")
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise CollectorError(
                    f"collector ignored {sig.name} for {timeout_s} s; killed:\n{self.log_tail()}"
                ) from None
        return process.returncode

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.health_url, timeout=0.5) as response:
                return int(response.status) == 200
        except (urllib.error.URLError, OSError):
            return False

    def close(self) -> None:
        """Make sure no process outlives the test, whatever state it was left in."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(CollectorError):
                self.kill()

    # -- the archive -------------------------------------------------------------------------

    def reader(self) -> ArchiveReader:
        """A reader over the active archive file and any rotated ones, oldest first."""
        return ArchiveReader(archive_files(self.archive_path) or [self.archive_path], missing_ok=True)

    def records(self) -> list[ArchivedRecord]:
        """Every log record archived so far, in write order (duplicates kept)."""
        return list(self.reader().records())

    def archive_stats(self) -> ArchiveStats:
        return self.read_archive()[1]

    def read_archive(self) -> tuple[list[ArchivedRecord], ArchiveStats]:
        """Every record and the pass's stats (torn lines...) from one parse of the archive."""
        reader = self.reader()
        records = list(reader.records())
        return records, reader.stats

    def log_protos(self) -> list[LogRecord]:
        """Every archived record as an OTLP LogRecord, parsed independently of otel_audit.archive."""
        return raw_archive.log_records(self.archive_path)

    def spans(self) -> list[Span]:
        """Every span the collector wrote to its traces file (`traces_path`), in write order."""
        return raw_archive.spans(self.traces_path)

    def wait_for_records(self, count: int, timeout_s: float = 30.0) -> list[ArchivedRecord]:
        """Poll the archive until it holds at least `count` records; return them all.

        Raises:
            AssertionError: fewer than `count` within `timeout_s` (the message gives how many).
        """
        deadline = time.monotonic() + timeout_s
        seen = self._archive_signature()
        records = self.records()
        while len(records) < count:
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"archive {self.archive_path} holds {len(records)} records after {timeout_s} s, "
                    f"expected at least {count}; collector log tail:\n{self.log_tail(20)}"
                )
            time.sleep(0.1)
            # Re-parse only when a file grew or rotated: a big archive costs ~10 us a record.
            current = self._archive_signature()
            if current != seen:
                seen = current
                records = self.records()
        return records

    def _archive_signature(self) -> list[tuple[str, int]]:
        signature = []
        for path in archive_files(self.archive_path):
            with contextlib.suppress(FileNotFoundError):  # renamed by a rotation meanwhile
                signature.append((path.name, path.stat().st_size))
        return signature

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"
