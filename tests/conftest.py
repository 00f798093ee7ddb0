"""Suite-wide isolation: every test starts in an empty OpenTelemetry context."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import context


@pytest.fixture(autouse=True)
def empty_otel_context() -> Iterator[None]:
    # The upstream WSGI instrumentation leaves its server span attached when Flask answers an
    # abort() through werkzeug's test client; without this, a later test that builds a record with
    # no explicit trace id would silently pick that stale span up.
    token = context.attach(context.Context())
    try:
        yield
    finally:
        try:
            context.detach(token)
        except Exception:  # noqa: BLE001 - a test that leaked an attach cannot break the next one
            pass
