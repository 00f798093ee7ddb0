"""The ASGI middleware on real FastAPI and Starlette apps, inside OpenTelemetry's ASGI instrumentation."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from fastapi.testclient import TestClient
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.routing import Mount, Route

import otel_audit
from otel_audit.testing import FakeCollector
from otel_audit.web import set_audit_action, set_audit_actor
from otel_audit.web.asgi import AuditMiddleware

from .conftest import AuditFactory, attributes, http_records, server_spans


class PaymentDeclined(Exception):
    """An application error whose qualified name must reach error.type."""


def fastapi_app(audit: otel_audit.Audit, tracer_provider: TracerProvider, **options: Any) -> Any:
    app = FastAPI()

    @app.api_route("/items/{item_id}", methods=["GET", "HEAD"])
    async def read_item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @app.post("/items", status_code=201)
    async def create_item() -> dict[str, str]:
        return {"ok": "yes"}

    @app.api_route("/items/{item_id}", methods=["PUT", "PATCH"])
    def replace_item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    @app.delete("/items/{item_id}", status_code=204)
    async def delete_item(item_id: int) -> None:
        return None

    @app.get("/private")
    async def private() -> None:
        raise HTTPException(status_code=401, detail="log in first")

    @app.get("/admin")
    async def admin() -> None:
        raise HTTPException(status_code=403, detail="not yours")

    @app.get("/boom")
    async def boom() -> None:
        raise PaymentDeclined("card refused")

    @app.get("/bad-gateway")
    async def bad_gateway() -> PlainTextResponse:
        return PlainTextResponse("upstream down", status_code=502)

    @app.get("/healthz")
    async def healthz() -> str:
        return "ok"

    @app.post("/login")
    async def login(request: Request) -> str:
        set_audit_actor(request, "u-42")
        return "welcome"

    @app.post("/reset/{user_id}")
    async def reset(request: Request, user_id: str) -> str:
        set_audit_action(request, "PASSWORD_RESET")
        return "done"

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks() -> Any:
            for i in range(3):
                yield f"chunk {i}\n"

        return StreamingResponse(chunks(), media_type="text/plain")

    app.add_middleware(AuditMiddleware, audit=audit, **options)
    return OpenTelemetryMiddleware(app, tracer_provider=tracer_provider)


def by_path(records: list[Any]) -> dict[str, dict[str, Any]]:
    return {attributes(r)["url.path"]: attributes(r) for r in records}


def test_read_request_becomes_one_record_with_route_template_and_http_attributes(
    audit: otel_audit.Audit, tracer_provider: TracerProvider, collector: FakeCollector
) -> None:
    client = TestClient(fastapi_app(audit, tracer_provider), headers={"user-agent": "pytest-agent/1"})
    assert client.get("/items/7").json() == {"id": 7}
    [record] = http_records(collector, 1)
    attrs = attributes(record)
    assert record.event_name == "http.request"
    assert attrs["audit.actor.id"] == "anonymous"
    assert attrs["audit.actor.type"] == "user"
    assert attrs["audit.action"] == "READ"
    assert attrs["audit.outcome"] == "success"
    assert attrs["audit.target.type"] == "http.endpoint"
    assert attrs["audit.target.id"] == "/items/{item_id}"
    assert attrs["audit.source.id"] == "testclient"
    assert attrs["audit.source.type"] == "hostname"
    assert attrs["http.request.method"] == "GET"
    assert attrs["http.route"] == "/items/{item_id}"
    assert attrs["url.path"] == "/items/7"
    assert attrs["http.response.status_code"] == 200
    assert 0 < attrs["http.server.request.duration"] < 5
    assert attrs["user_agent.original"] == "pytest-agent/1"
    assert "error.type" not in attrs


def test_record_carries_the_trace_and_span_of_the_instrumentation_server_span(
    audit: otel_audit.Audit,
    tracer_provider: TracerProvider,
    spans: InMemorySpanExporter,
    collector: FakeCollector,
) -> None:
    client = TestClient(fastapi_app(audit, tracer_provider))
    client.get("/items/1")
    client.post("/items")
    records = http_records(collector, 2)
    server = server_spans(spans)
    assert len(server) == 2
    expected = {(s.context.trace_id, s.context.span_id) for s in server}
    got = {(int.from_bytes(r.trace_id, "big"), int.from_bytes(r.span_id, "big")) for r in records}
    assert got == expected


def test_methods_map_to_actions(
    audit: otel_audit.Audit, tracer_provider: TracerProvider, collector: FakeCollector
) -> None:
    client = TestClient(fastapi_app(audit, tracer_provider))
    assert client.post("/items").status_code == 201
    assert client.put("/items/3").status_code == 200
    assert client.delete("/items/3").status_code == 204
    assert client.head("/items/3").status_code == 200
    assert client.patch("/items/3").status_code == 200
    records = http_records(collector, 5)
    actions = [(attributes(r)["http.request.method"], attributes(r)["audit.action"]) for r in records]
    assert actions == [
        ("POST", "CREATE"),
        ("PUT", "UPDATE"),
        ("DELETE", "DELETE"),
        ("HEAD", "READ"),
        ("PATCH", "UPDATE"),
    ]


def test_401_and_403_are_failures_with_the_status_as_error_type(
    audit: otel_audit.Audit, tracer_provider: TracerProvider, collector: FakeCollector
) -> None:
    client = TestClient(fastapi_app(audit, tracer_provider))
    assert client.get("/private").status_code == 401
    assert client.get("/admin").status_code == 403
    got = by_path(http_records(collector, 2))
    assert (got["/private"]["audit.outcome"], got["/private"]["error.type"]) == ("failure", "401")
    assert (got["/admin"]["audit.outcome"], got["/admin"]["error.type"]) == ("failure", "403")
    assert got["/admin"]["http.response.status_code"] == 403


def test_exception_is_a_failure_named_by_its_qualified_type_and_5xx_is_a_failure(
    audit: otel_audit.Audit, tracer_provider: TracerProvider, collector: FakeCollector
) -> None:
    client = TestClient(fastapi_app(audit, tracer_provider), raise_server_exceptions=False)
    assert client.get("/boom").status_code == 500
    assert client.get("/bad-gateway").status_code == 502
    got = by_path(http_records(collector, 2))
    assert got["/boom"]["audit.outcome"] == "failure"
    assert got["/boom"]["error.type"] == f"{__name__}.PaymentDeclined"
    assert got["/boom"]["http.response.status_code"] == 500
    assert (got["/bad-gateway"]["audit.outcome"], got["/bad-gateway"]["error.type"]) == ("failure", "502")


def test_excluded_paths_write_no_record(
    audit: otel_audit.Audit, tracer_provider: TracerProvider, collector: FakeCollector
) -> None:
    client = TestClient(fastapi_app(audit, tracer_provider, exclude_paths=["/healthz", "/items/*"]))
    client.get("/healthz")
    client.get("/items/5")
    client.post("/items")
    records = http_records(collector, 1)
    time.sleep(0.3)
    assert [attributes(r)["url.path"] for r in records] == ["/items"]
    assert len(collector.records) == 1


def test_actor_callable_route_actions_and_per_request_overrides(
    audit: otel_audit.Audit, tracer_provider: TracerProvider, collector: FakeCollector
) -> None:
    def actor(scope: Any) -> tuple[str, str] | None:
        key = dict(scope["headers"]).get(b"x-api-key")
        return ("svc-billing", "service") if key == b"k1" else None

    app = fastapi_app(audit, tracer_provider, actor=actor, actions={"GET /items/{item_id}": "VIEW"})
    client = TestClient(app)
    client.get("/items/1", headers={"x-api-key": "k1"})
    client.post("/login")
    client.post("/reset/u-9")
    got = by_path(http_records(collector, 3))
    assert (got["/items/1"]["audit.actor.id"], got["/items/1"]["audit.actor.type"]) == (
        "svc-billing",
        "service",
    )
    assert got["/items/1"]["audit.action"] == "VIEW"
    assert got["/login"]["audit.actor.id"] == "u-42"  # set_audit_actor wins over the callable
    assert got["/reset/u-9"]["audit.action"] == "PASSWORD_RESET"
    assert got["/reset/u-9"]["audit.actor.id"] == "anonymous"


def test_streaming_response_is_recorded_before_its_body_goes_out(
    audit: otel_audit.Audit, tracer_provider: TracerProvider, collector: FakeCollector
) -> None:
    client = TestClient(fastapi_app(audit, tracer_provider))
    response = client.get("/stream")
    assert response.text == "chunk 0\nchunk 1\nchunk 2\n"
    [record] = http_records(collector, 1)
    assert attributes(record)["http.response.status_code"] == 200


def test_starlette_mounted_routes_record_the_full_template(
    audit: otel_audit.Audit, tracer_provider: TracerProvider, collector: FakeCollector
) -> None:
    async def user(request: Any) -> PlainTextResponse:
        return PlainTextResponse(request.path_params["name"])

    async def raw_asgi(scope: Any, receive: Any, send: Any) -> None:
        await PlainTextResponse("static")(scope, receive, send)

    app = Starlette(
        routes=[Mount("/api", routes=[Route("/users/{name}", user)]), Mount("/static", app=raw_asgi)]
    )
    app.add_middleware(AuditMiddleware, audit=audit)
    client = TestClient(OpenTelemetryMiddleware(app, tracer_provider=tracer_provider))
    assert client.get("/api/users/ann").text == "ann"
    assert client.get("/static/logo.png").text == "static"
    assert client.get("/nowhere").status_code == 404
    got = by_path(http_records(collector, 3))
    assert got["/api/users/ann"]["http.route"] == "/api/users/{name}"
    assert got["/static/logo.png"]["http.route"] == "/static/{path}"
    assert "http.route" not in got["/nowhere"]
    assert got["/nowhere"]["audit.target.id"] == "/nowhere"
    assert got["/nowhere"]["error.type"] == "404"


def test_collector_down_neither_breaks_nor_slows_requests_and_records_arrive_later(
    audit: otel_audit.Audit, tracer_provider: TracerProvider, collector: FakeCollector
) -> None:
    collector.down()
    client = TestClient(fastapi_app(audit, tracer_provider))
    slowest = 0.0
    for i in range(30):
        started = time.perf_counter()
        assert client.get(f"/items/{i}").status_code == 200
        slowest = max(slowest, time.perf_counter() - started)
    assert slowest < 0.5, f"a request took {slowest:.3f}s with the collector down"
    assert audit.stats()["sender_consecutive_failures"] >= 1
    collector.up()
    records = http_records(collector, 30, timeout=15)
    assert sorted(attributes(r)["url.path"] for r in records) == sorted(f"/items/{i}" for i in range(30))


def test_fail_closed_answers_503_when_the_wal_cannot_persist(
    make_audit: AuditFactory, tracer_provider: TracerProvider, collector: FakeCollector
) -> None:
    collector.down()
    audit = make_audit(max_bytes=4096, segment_bytes=4096, full_policy="raise", fail_closed=True)
    client = TestClient(fastapi_app(audit, tracer_provider))
    statuses = [client.get(f"/items/{i}").status_code for i in range(20)]
    assert statuses[0] == 200
    first_refusal = statuses.index(503)
    assert set(statuses[first_refusal:]) == {503}, statuses
    refused = client.get("/items/99")
    assert refused.status_code == 503
    assert "audit log unavailable" in refused.text
    assert audit.stats()["sender_delivered_seq"] == 0


def test_fail_open_serves_the_response_when_the_wal_cannot_persist(
    make_audit: AuditFactory, tracer_provider: TracerProvider, collector: FakeCollector
) -> None:
    collector.down()
    audit = make_audit(max_bytes=4096, segment_bytes=4096, full_policy="raise", fail_closed=False)
    client = TestClient(fastapi_app(audit, tracer_provider))
    assert {client.get(f"/items/{i}").status_code for i in range(20)} == {200}


def test_record_is_in_the_wal_before_the_response_start_reaches_the_server(audit: otel_audit.Audit) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await PlainTextResponse("hi")(scope, receive, send)

    seen: list[tuple[str, int]] = []

    async def server_send(message: Any) -> None:
        seen.append((message["type"], audit.stats()["last_seq"]))

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": "/hi", "headers": [], "client": ("10.0.0.1", 5000)}
    asyncio.run(AuditMiddleware(app, audit, offload=False)(scope, receive, server_send))
    assert seen == [("http.response.start", 1), ("http.response.body", 1)]
