"""A Flask service whose every request leaves a durable audit record, linked to the request's trace.

Run it (a collector on localhost:4317 is optional; records wait in the WAL until one answers):

    .venv/bin/python examples/flask_app.py            # PORT=8000 by default
    curl localhost:8000/documents/3
    curl -X PUT -H 'x-user: ann' localhost:8000/documents/3
    curl -X PUT localhost:8000/documents/3                         # 401: anonymous
"""

import os

from flask import Flask, abort, request
from opentelemetry import trace
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider

import otel_audit
from otel_audit.web import add_audit_attributes, set_audit_actor
from otel_audit.web.wsgi import instrument_flask

trace.set_tracer_provider(TracerProvider())
audit = otel_audit.configure(service_name=os.environ.get("OTEL_SERVICE_NAME", "documents-api"))

app = Flask("documents")


@app.before_request
def authenticate() -> None:
    """Stand-in for real authentication: the caller names itself in a header."""
    user = request.headers.get("x-user")
    if user:
        set_audit_actor(request, user)


@app.get("/documents/<int:doc_id>")
def read_document(doc_id: int) -> dict[str, int | str]:
    return {"id": doc_id, "title": "Q3 report"}


@app.put("/documents/<int:doc_id>")
def update_document(doc_id: int) -> dict[str, int]:
    if not request.headers.get("x-user"):
        abort(401)
    add_audit_attributes(request, {"document.version": 2})
    return {"id": doc_id, "version": 2}


@app.get("/healthz")
def healthz() -> str:
    return "ok"


instrument_flask(app, audit, exclude_paths=["/healthz"])
# OpenTelemetry's middleware goes OUTSIDE (wrapped last): the audit middleware runs inside its span.
app.wsgi_app = OpenTelemetryMiddleware(app.wsgi_app)  # type: ignore[method-assign]

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
