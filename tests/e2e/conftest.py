"""Fixtures that run the real collector built from collector/manifest.yaml; see harness.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from .harness import DEFAULT_CONFIG, Collector, CollectorError, resolve_binary

CollectorFactory = Callable[..., Collector]


@pytest.fixture(scope="session")
def collector_binary() -> Path:
    """The built collector. A build or lookup failure FAILS the tests: e2e never skips."""
    try:
        return resolve_binary()
    except CollectorError as exc:
        pytest.fail(f"cannot get the collector binary: {exc}", pytrace=False)


@pytest.fixture
def collector_factory(collector_binary: Path, tmp_path: Path) -> Iterator[CollectorFactory]:
    """Make collectors (started by default), each with its own ports and archive; all are killed after.

    Call as `collector_factory(config=..., env={...}, start=False, name="gateway")`.
    """
    made: list[Collector] = []

    def make(
        *,
        config: Path = DEFAULT_CONFIG,
        env: Mapping[str, str] | None = None,
        start: bool = True,
        name: str | None = None,
    ) -> Collector:
        workdir = tmp_path / (name or f"collector-{len(made)}")
        instance = Collector(collector_binary, workdir, config=config, env=env)
        made.append(instance)
        if start:
            try:
                instance.start()
            except CollectorError as exc:
                pytest.fail(str(exc), pytrace=False)
        return instance

    yield make
    for instance in made:
        instance.close()


@pytest.fixture
def collector(collector_factory: CollectorFactory) -> Collector:
    """A running collector with collector-config.yaml on free ports and a fresh archive."""
    return collector_factory()
