"""A FastAPI service whose every request leaves a durable audit record, linked to the request's trace.

Run it (a collector on localhost:4317 is optional; records wait in the WAL until one answers):

    .venv/bin/python examples/fastapi_app.py          # PORT=8000 by default
    curl localhost:8000/accounts/7
    curl -X POST -H 'x-user: ann' localhost:8000/login
    curl -X DELETE -H 'x-user: ann' localhost:8000/accounts/7      # 403: only admin deletes
"""

import os

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider

import otel_audit
from otel_audit.web import set_audit_actor
from otel_audit.web.asgi import AuditMiddleware

# Spans give the records their trace ids; add a span exporter to see the traces in a backend.
trace.set_tracer_provider(TracerProvider())
audit = otel_audit.configure(service_name=os.environ.get("OTEL_SERVICE_NAME", "accounts-api"))

api = FastAPI(title="accounts")


def current_user(request: Request) -> str | None:
    """Stand-in for real authentication: the caller names itself in a header."""
    return request.headers.get("x-user")


@api.get("/accounts/{account_id}")
async def read_account(account_id: int) -> dict[str, int | str]:
    return {"id": account_id, "owner": "ann"}


@api.post("/login")
async def login(request: Request) -> dict[str, str]:
    user = current_user(request)
    if user is None:
        raise HTTPException(status_code=401, detail="who are you?")
    set_audit_actor(request, user)  # the record names the user who just logged in
    return {"welcome": user}


@api.delete("/accounts/{account_id}", status_code=204)
async def delete_account(account_id: int, request: Request) -> None:
    user = current_user(request)
    if user != "admin":
        raise HTTPException(status_code=403, detail="only admin deletes accounts")


@api.get("/healthz")
async def healthz() -> str:
    return "ok"


def actor(scope: dict) -> str | None:
    """Every request's actor, from the same header the endpoints use."""
    return dict(scope["headers"]).get(b"x-user", b"").decode() or None


api.add_middleware(
    AuditMiddleware,
    audit=audit,
    actor=actor,
    actions={"POST /login": "LOGIN"},
    exclude_paths=["/healthz"],
)
# OpenTelemetry's middleware goes OUTSIDE: the audit middleware runs inside its server span.
app = OpenTelemetryMiddleware(api)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")), log_level="warning")
