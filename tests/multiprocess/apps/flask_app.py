"""The Flask app the gunicorn tests serve: the audit pipeline is configured at import, from OTEL_AUDIT_* only.

The same ``configure()`` runs in the master (``--preload``) or in each worker, with 1 or 32 workers:
no per-worker setting. Every request gets one audit record from the WSGI middleware.
"""

from __future__ import annotations

from flask import Flask

import otel_audit
from otel_audit.web.wsgi import instrument_flask

audit = otel_audit.configure(service_name="gunicorn-app")
app = Flask(__name__)


@app.get("/items/<item>")
def item(item: str) -> dict[str, str]:
    return {"item": item}


instrument_flask(app, audit)
