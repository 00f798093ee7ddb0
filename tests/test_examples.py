"""The examples run as written: quickstart without and with a collector, the web apps on real servers, the demo."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otel_audit.testing import FakeCollector

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PYTHON = sys.executable


@pytest.fixture
def collector() -> Iterator[FakeCollector]:
    with FakeCollector() as c:
        yield c


def env_for(tmp_path: Path, endpoint: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "OTEL_AUDIT_WAL_DIR": str(tmp_path / "wal"),
        "OTEL_AUDIT_ENDPOINT": endpoint,
        "OTEL_AUDIT_RETRY_MAX_BACKOFF_MILLIS": "1000",
        **extra,
    }


def attributes(record: LogRecord) -> dict[str, Any]:
    return {
        kv.key: getattr(kv.value, kv.value.WhichOneof("value") or "string_value") for kv in record.attributes
    }


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_quickstart_persists_without_a_collector_and_delivers_on_the_next_run(
    tmp_path: Path, collector: FakeCollector
) -> None:
    down = env_for(tmp_path, f"http://127.0.0.1:{closed_port()}")
    first = subprocess.run(
        [PYTHON, EXAMPLES / "quickstart.py"], env=down, capture_output=True, text=True, timeout=30
    )
    assert first.returncode == 0, first.stderr
    assert "persisted record" in first.stdout
    assert "safe in the WAL (1 waiting)" in first.stdout

    up = env_for(tmp_path, collector.grpc_endpoint)
    second = subprocess.run(
        [PYTHON, EXAMPLES / "quickstart.py"], env=up, capture_output=True, text=True, timeout=30
    )
    assert second.returncode == 0, second.stderr
    assert "delivered to the collector" in second.stdout
    logins = [r for r in collector.records if r.event_name == "user.login.success"]
    assert len(logins) == 2, "the first run's record was not replayed"


class Server:
    """An example app run as written (`python examples/X.py`) on a free port; killed at the end."""

    def __init__(self, script: str, env: dict[str, str]) -> None:
        self.port = closed_port()
        self.process = subprocess.Popen(
            [PYTHON, str(EXAMPLES / script)],
            env={**env, "PORT": str(self.port)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while True:
            assert self.process.poll() is None, self.output()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                assert time.monotonic() < deadline, f"{script} did not listen within 20 s"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def output(self) -> str:
        self.stop()
        assert self.process.stdout is not None
        return self.process.stdout.read().decode(errors="replace")


def by_path(records: list[LogRecord]) -> dict[str, dict[str, Any]]:
    return {attributes(r)["url.path"]: attributes(r) for r in records if r.event_name == "http.request"}


def test_fastapi_example_audits_requests_on_uvicorn(tmp_path: Path, collector: FakeCollector) -> None:
    server = Server("fastapi_app.py", env_for(tmp_path, collector.grpc_endpoint))
    try:
        with httpx.Client(base_url=server.url) as client:
            assert client.get("/accounts/7").status_code == 200
            assert client.post("/login", headers={"x-user": "ann"}).status_code == 200
            assert client.delete("/accounts/7", headers={"x-user": "ann"}).status_code == 403
            assert client.get("/healthz").status_code == 200
        assert collector.wait_for(3, 10)
    finally:
        server.stop()
    got = by_path(collector.records)
    assert set(got) == {"/accounts/7", "/login"}, got.keys()
    login = got["/login"]
    assert (login["audit.actor.id"], login["audit.action"], login["audit.outcome"]) == (
        "ann",
        "LOGIN",
        "success",
    )
    delete = [r for r in collector.records if attributes(r).get("http.request.method") == "DELETE"][0]
    assert (attributes(delete)["audit.outcome"], attributes(delete)["error.type"]) == ("failure", "403")
    assert all(len(r.trace_id) == 16 for r in collector.records if r.event_name == "http.request")


def test_flask_example_audits_requests_on_its_server(tmp_path: Path, collector: FakeCollector) -> None:
    server = Server("flask_app.py", env_for(tmp_path, collector.grpc_endpoint))
    try:
        with httpx.Client(base_url=server.url) as client:
            assert client.get("/documents/3").status_code == 200
            assert client.put("/documents/3", headers={"x-user": "ann"}).status_code == 200
            assert client.put("/documents/4").status_code == 401
            assert client.get("/healthz").status_code == 200
        assert collector.wait_for(3, 10)
    finally:
        server.stop()
    got = by_path(collector.records)
    assert set(got) == {"/documents/3", "/documents/4"}
    updates = [attributes(r) for r in collector.records if attributes(r).get("http.request.method") == "PUT"]
    ok = next(a for a in updates if a["url.path"] == "/documents/3")
    assert (ok["audit.actor.id"], ok["audit.action"], ok["document.version"]) == ("ann", "UPDATE", 2)
    assert ok["http.route"] == "/documents/<int:doc_id>"
    refused = next(a for a in updates if a["url.path"] == "/documents/4")
    assert (refused["audit.actor.id"], refused["error.type"]) == ("anonymous", "401")


def test_outage_app_writes_one_id_per_receipt_and_delivers_them(
    tmp_path: Path, collector: FakeCollector
) -> None:
    ids_file = tmp_path / "ids.txt"
    result = subprocess.run(
        [PYTHON, EXAMPLES / "outage_demo.py", "--rate", "50", "--duration", "1", "--ids-file", str(ids_file)],
        env=env_for(tmp_path, collector.grpc_endpoint),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "all delivered" in result.stdout
    sent = ids_file.read_text().split()
    assert len(sent) >= 10
    received = collector.record_ids()
    assert set(sent) <= set(received)
    traced = [r for r in collector.records if r.event_name != "audit.stream.end"]
    assert all(len(r.trace_id) == 16 and len(r.span_id) == 8 for r in traced)


@pytest.mark.e2e
def test_make_demo_runs_the_outage_story_and_loses_nothing() -> None:
    # demo.py finds the collector as the e2e tests do: $OTEL_AUDIT_COLLECTOR_BIN, else the build script.
    started = time.monotonic()
    result = subprocess.run(
        [PYTHON, EXAMPLES / "demo.py"], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    sent, archived, lost = (int(part.split()[1]) for part in last.split(", "))
    assert sent > 100 and archived == sent and lost == 0, last
    assert "backlog" in result.stdout and "no writer" in result.stdout
    assert elapsed < 60, f"the demo took {elapsed:.1f} s"
