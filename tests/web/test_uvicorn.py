"""One end-to-end case on a real uvicorn server: a socket, a real client address, the instrumentation's span."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, HTTPException
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_audit
from otel_audit.testing import FakeCollector
from otel_audit.web.asgi import AuditMiddleware

from .conftest import attributes, http_records, server_spans


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(audit: otel_audit.Audit, tracer_provider: TracerProvider) -> Iterator[str]:
    app = FastAPI()

    @app.get("/orders/{order_id}")
    async def order(order_id: int) -> dict[str, Any]:
        if order_id == 0:
            raise HTTPException(status_code=403)
        return {"order": order_id}

    app.add_middleware(AuditMiddleware, audit=audit)
    port = _free_port()
    config = uvicorn.Config(
        OpenTelemetryMiddleware(app, tracer_provider=tracer_provider),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
    )
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not instance.started:
        assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        instance.should_exit = True
        thread.join(10)


def test_uvicorn_request_is_audited_with_client_address_and_trace(
    server: str, collector: FakeCollector, spans: InMemorySpanExporter
) -> None:
    with httpx.Client(base_url=server) as client:
        assert client.get("/orders/5").json() == {"order": 5}
        assert client.get("/orders/0").status_code == 403
    records = http_records(collector, 2)
    ok, refused = sorted(records, key=lambda r: attributes(r)["url.path"], reverse=True)
    assert attributes(ok)["audit.source.id"] == "127.0.0.1"
    assert attributes(ok)["audit.source.type"] == "ipv4"
    assert attributes(ok)["http.route"] == "/orders/{order_id}"
    assert (attributes(refused)["audit.outcome"], attributes(refused)["error.type"]) == ("failure", "403")
    span_ids = {(s.context.trace_id, s.context.span_id) for s in server_spans(spans)}
    assert {
        (int.from_bytes(r.trace_id, "big"), int.from_bytes(r.span_id, "big")) for r in records
    } == span_ids
