"""The FastAPI app the uvicorn test serves with ``--workers 2``: configured at import from OTEL_AUDIT_* only.

uvicorn starts its workers with the spawn method, so each worker imports this module and configures
its own pipeline; the ASGI middleware writes one audit record per request.
"""

from __future__ import annotations

from fastapi import FastAPI

import otel_audit
from otel_audit.web.asgi import AuditMiddleware

audit = otel_audit.configure(service_name="uvicorn-app")
app = FastAPI()


@app.get("/items/{item}")
async def item(item: str) -> dict[str, str]:
    return {"item": item}


app.add_middleware(AuditMiddleware, audit=audit)
