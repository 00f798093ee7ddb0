"""Fixtures of the scale-out tests: the real collector binary (built once) as in tests/e2e."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from e2e.harness import CollectorError, resolve_binary

from .topology import choose_mode


@pytest.fixture(scope="session")
def collector_binary() -> Path:
    """The built collector. A build or lookup failure FAILS the tests: these never skip."""
    try:
        return resolve_binary()
    except CollectorError as exc:
        pytest.fail(f"cannot get the collector binary: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def topology_mode() -> str:
    """``netns`` or ``loopback`` for this session, decided once and printed (see topology.choose_mode)."""
    mode, why = choose_mode()
    print(f"\nscale-out topology runs on: {mode} ({why})")
    return mode


@pytest.fixture
def site_mode(topology_mode: str, record_property: Callable[[str, object], None]) -> str:
    """The session's topology mode, also recorded as a junit property of the test using it."""
    record_property("topology_mode", topology_mode)
    return topology_mode
