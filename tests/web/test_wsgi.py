"""The WSGI middleware on a real Flask app, inside OpenTelemetry's WSGI instrumentation."""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask import Flask, Response, abort, request, stream_with_context
from flask.testing import FlaskClient
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import otel_audit
from otel_audit.testing import FakeCollector
from otel_audit.web import add_audit_attributes, set_audit_actor
from otel_audit.web.wsgi import AuditWSGIMiddleware, instrument_flask

from .conftest import AuditFactory, attributes, http_records, server_spans


class LedgerLocked(Exception):
    """An application error Flask turns into a 500."""


class BufferedClient(FlaskClient):
    """Reads and closes every response, as a WSGI server does.

    werkzeug's test client leaves an unread response open; the WSGI instrumentation detaches its
    span's context only when the response is closed, so an open one leaks that context into
    whatever runs next on the thread.
    """

    def open(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)


def flask_app(audit: otel_audit.Audit, tracer_provider: TracerProvider, **options: Any) -> Flask:
    app = Flask("audit-test")
    app.test_client_class = BufferedClient

    @app.get("/accounts/<int:account_id>")
    def read_account(account_id: int) -> dict[str, int]:
        return {"id": account_id}

    @app.post("/accounts")
    def create_account() -> tuple[str, int]:
        set_audit_actor(request, "ann", "user")
        add_audit_attributes(request, {"user.roles": ["admin", "ops"]})
        return "created", 201

    @app.delete("/accounts/<int:account_id>")
    def delete_account(account_id: int) -> tuple[str, int]:
        return "", 204

    @app.get("/private")
    def private() -> None:
        abort(401)

    @app.get("/admin")
    def admin() -> None:
        abort(403)

    @app.get("/boom")
    def boom() -> None:
        raise LedgerLocked("ledger is locked")

    @app.get("/healthz")
    def healthz() -> str:
        return "ok"

    @app.get("/stream")
    def stream() -> Response:
        def chunks() -> Any:
            yield from ("a", "b", "c")

        return Response(stream_with_context(chunks()))

    instrument_flask(app, audit, **options)
    app.wsgi_app = OpenTelemetryMiddleware(app.wsgi_app, tracer_provider=tracer_provider)  # type: ignore[method-assign]
    return app


def by_path(records: list[Any]) -> dict[str, dict[str, Any]]:
    return {attributes(r)["url.path"]: attributes(r) for r in records}


def test_request_becomes_one_record_with_url_rule_and_http_attributes(
    audit: otel_audit.Audit, tracer_provider: TracerProvider, collector: FakeCollector
) -> None:
    client = flask_app(audit, tracer_provider).test_client()
    assert client.get("/accounts/12", headers={"User-Agent": "curl/8"}).json == {"id": 12}
    [record] = http_records(collector, 1)
    attrs = attributes(record)
    assert record.event_name == "http.request"
    assert attrs["audit.actor.id"] == "anonymous"
    assert attrs["audit.action"] == "READ"
    assert attrs["audit.outcome"] == "success"
    assert attrs["audit.target.type"] == "http.endpoint"
    assert attrs["audit.target.id"] == "/accounts/<int:account_id>"
    assert attrs["http.route"] == "/accounts/<int:account_id>"
    assert attrs["url.path"] == "/accounts/12"
    assert attrs["audit.source.id"] == "127.0.0.1"
    assert attrs["audit.source.type"] == "ipv4"
    assert attrs["http.request.method"] == "GET"
    assert attrs["http.response.status_code"] == 200
    assert attrs["user_agent.original"] == "curl/8"
    assert 0 < attrs["http.server.request.duration"] < 5


def test_record_carries_the_wsgi_instrumentation_span(
    audit: otel_audit.Audit,
    tracer_provider: TracerProvider,
    spans: InMemorySpanExporter,
    collector: FakeCollector,
) -> None:
    client = flask_app(audit, tracer_provider).test_client()
    client.get("/accounts/1")
    [record] = http_records(collector, 1)
    [span] = server_spans(spans)
    assert int.from_bytes(record.trace_id, "big") == span.context.trace_id
    assert int.from_bytes(record.span_id, "big") == span.context.span_id


def test_actor_attributes_and_actions_from_the_view(
    audit: otel_audit.Audit, tracer_provider: TracerProvider, collector: FakeCollector
) -> None:
    client = flask_app(audit, tracer_provider).test_client()
    assert client.post("/accounts").status_code == 201
    assert client.delete("/accounts/4").status_code == 204
    got = by_path(http_records(collector, 2))
    assert got["/accounts"]["audit.actor.id"] == "ann"
    assert got["/accounts"]["audit.action"] == "CREATE"
    assert got["/accounts"]["user.roles"] == ["admin", "ops"]
    assert got["/accounts/4"]["audit.action"] == "DELETE"


def test_remote_user_is_the_default_actor(
    audit: otel_audit.Audit, tracer_provider: TracerProvider, collector: FakeCollector
) -> None:
    client = flask_app(audit, tracer_provider).test_client()
    client.get("/accounts/1", environ_base={"REMOTE_USER": "bob"})
    [record] = http_records(collector, 1)
    assert attributes(record)["audit.actor.id"] == "bob"


def test_refusals_exceptions_and_exclusions(
    audit: otel_audit.Audit, tracer_provider: TracerProvider, collector: FakeCollector
) -> None:
    client = flask_app(audit, tracer_provider, exclude_paths=["/healthz"]).test_client()
    assert client.get("/private").status_code == 401
    assert client.get("/admin").status_code == 403
    assert client.get("/boom").status_code == 500
    assert client.get("/healthz").status_code == 200
    got = by_path(http_records(collector, 3))
    time.sleep(0.3)
    assert len(collector.records) == 3
    assert (got["/private"]["audit.outcome"], got["/private"]["error.type"]) == ("failure", "401")
    assert (got["/admin"]["audit.outcome"], got["/admin"]["error.type"]) == ("failure", "403")
    assert got["/boom"]["audit.outcome"] == "failure"
    assert got["/boom"]["error.type"] == f"{__name__}.LedgerLocked"
    assert got["/boom"]["http.response.status_code"] == 500


def test_exception_propagating_out_of_the_app_is_recorded_and_re_raised(
    audit: otel_audit.Audit, collector: FakeCollector
) -> None:
    def app(environ: Any, start_response: Any) -> list[bytes]:
        raise KeyError("missing")

    middleware = AuditWSGIMiddleware(app, audit)
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/orders", "wsgi.url_scheme": "http"}
    try:
        middleware(environ, lambda *a: lambda data: None)
    except KeyError:
        pass
    else:
        raise AssertionError("the app's exception was swallowed")
    [record] = http_records(collector, 1)
    attrs = attributes(record)
    assert (attrs["audit.outcome"], attrs["error.type"], attrs["audit.action"]) == (
        "failure",
        "KeyError",
        "CREATE",
    )


def test_streaming_body_passes_through(
    audit: otel_audit.Audit, tracer_provider: TracerProvider, collector: FakeCollector
) -> None:
    client = flask_app(audit, tracer_provider).test_client()
    assert client.get("/stream").data == b"abc"
    [record] = http_records(collector, 1)
    assert attributes(record)["http.response.status_code"] == 200


def test_fail_closed_flask_answers_503_once_the_wal_is_full(
    make_audit: AuditFactory, tracer_provider: TracerProvider, collector: FakeCollector
) -> None:
    collector.down()
    audit = make_audit(max_bytes=4096, segment_bytes=4096, full_policy="raise", fail_closed=True)
    client = flask_app(audit, tracer_provider).test_client()
    statuses = [client.get(f"/accounts/{i}").status_code for i in range(20)]
    assert statuses[0] == 200
    assert set(statuses[statuses.index(503) :]) == {503}, statuses
    refused = client.get("/accounts/99")
    assert refused.status_code == 503
    assert b"audit log unavailable" in refused.data


def test_legacy_write_callable_records_before_the_first_write(
    audit: otel_audit.Audit, collector: FakeCollector
) -> None:
    written: list[bytes] = []
    started: list[str] = []
    persisted_at_start: list[int] = []

    def app(environ: Any, start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"early ")
        return [b"late"]

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        started.append(status)
        persisted_at_start.append(audit.stats()["last_seq"])
        return written.append

    body = AuditWSGIMiddleware(app, audit)({"REQUEST_METHOD": "GET", "PATH_INFO": "/legacy"}, start_response)
    assert started == ["200 OK"]
    assert persisted_at_start == [1], "the status went to the server before the record was in the WAL"
    assert written == [b"early "]
    assert list(body) == [b"late"]
    [record] = http_records(collector, 1)
    assert attributes(record)["http.response.status_code"] == 200


def test_refused_response_iterable_is_closed_and_replaced(
    make_audit: AuditFactory, collector: FakeCollector
) -> None:
    collector.down()
    audit = make_audit(max_bytes=4096, segment_bytes=4096, full_policy="raise", fail_closed=True)
    with pytest.raises(otel_audit.AuditWriteError):
        for _ in range(50):
            audit.record("fill.up", actor_id="x", actor_type="system", action="FILL", outcome="success")

    class Body:
        closed = False

        def __iter__(self) -> Any:
            return iter([b"secret account data"])

        def close(self) -> None:
            Body.closed = True

    def app(environ: Any, start_response: Any) -> Body:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()

    statuses: list[str] = []
    body = AuditWSGIMiddleware(app, audit)(
        {"REQUEST_METHOD": "GET", "PATH_INFO": "/accounts/1"},
        lambda status, headers, exc_info=None: statuses.append(status),
    )
    assert statuses == ["503 Service Unavailable"]
    assert b"".join(body).startswith(b"audit log unavailable")
    assert Body.closed
