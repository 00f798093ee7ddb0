"""Fixtures of the scale-out tests: the real collector binary (built once) as in tests/e2e."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e.harness import CollectorError, resolve_binary


@pytest.fixture(scope="session")
def collector_binary() -> Path:
    """The built collector. A build or lookup failure FAILS the tests: these never skip."""
    try:
        return resolve_binary()
    except CollectorError as exc:
        pytest.fail(f"cannot get the collector binary: {exc}", pytrace=False)
