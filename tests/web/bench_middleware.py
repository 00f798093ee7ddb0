"""Cost of the audit middleware per request, on a bare ASGI app: `.venv/bin/python -m tests.web.bench_middleware`."""

from __future__ import annotations

import asyncio
import tempfile
import time
from typing import Any

import otel_audit
from otel_audit.config import resolve_config
from otel_audit.testing import FakeCollector
from otel_audit.web.asgi import AuditMiddleware

SCOPE = {
    "type": "http",
    "method": "GET",
    "path": "/items/1",
    "headers": [(b"user-agent", b"bench")],
    "client": ("10.0.0.1", 40000),
    "scheme": "http",
}


async def app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b""}


async def send(message: Any) -> None:
    return None


async def per_request_us(handler: Any, n: int = 3000) -> float:
    for _ in range(200):
        await handler(dict(SCOPE), receive, send)
    started = time.perf_counter()
    for _ in range(n):
        await handler(dict(SCOPE), receive, send)
    return (time.perf_counter() - started) / n * 1e6


async def run(audit: otel_audit.Audit, label: str) -> None:
    bare = await per_request_us(app)
    inline = await per_request_us(AuditMiddleware(app, audit, offload=False))
    offload = await per_request_us(AuditMiddleware(app, audit))
    print(f"| {label} | {bare:.1f} | {inline:.0f} | {offload:.0f} |")


def main() -> None:
    print("| collector | bare app µs | audit inline µs | audit offloaded µs |\n|---|---:|---:|---:|")
    with FakeCollector() as collector:
        for label, endpoint in (
            ("up (in-process fake)", collector.grpc_endpoint),
            ("down", "http://127.0.0.1:9"),
        ):
            audit = otel_audit.Audit(
                resolve_config(service_name="bench", wal_dir=tempfile.mkdtemp(), endpoint=endpoint)
            )
            try:
                asyncio.run(run(audit, label))
            finally:
                audit.shutdown(timeout=0.5)


if __name__ == "__main__":
    main()
