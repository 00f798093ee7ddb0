"""Fixtures of the sender tests: a fake collector, WALs with records, senders that always shut down."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from otel_audit.export.contexts import ContextStore
from otel_audit.export.payload import encode_payload
from otel_audit.export.sender import Sender
from otel_audit.export.transport.base import Transport
from otel_audit.export.transport.grpc import GrpcTransport
from otel_audit.export.transport.http import HttpTransport
from otel_audit.testing import FakeCollector

from .fakewal import FakeWAL
from .protos import context_blob, record


@pytest.fixture
def collector() -> Iterator[FakeCollector]:
    with FakeCollector() as c:
        yield c


def transport_for(protocol: str, collector: FakeCollector, **kwargs: Any) -> Transport:
    if protocol == "grpc":
        return GrpcTransport(collector.grpc_endpoint, **kwargs)
    return HttpTransport(collector.http_endpoint, path="/v1/logs", **kwargs)


def fill(
    wal: Any, contexts: ContextStore, n: int, *, prefix: str = "id", start: int = 0, **kw: Any
) -> list[str]:
    """Append n records with ids prefix-<i>; returns the ids in append order."""
    cid = contexts.put(context_blob())
    ids = [f"{prefix}-{i}" for i in range(start, start + n)]
    wal.append_many([encode_payload(cid, record(i, **kw)) for i in ids])
    return ids


@pytest.fixture
def contexts(tmp_path: Path) -> ContextStore:
    return ContextStore(tmp_path)


@pytest.fixture
def fake_wal(tmp_path: Path) -> FakeWAL:
    return FakeWAL(tmp_path)


SenderFactory = Callable[..., Sender]


@pytest.fixture
def make_sender(contexts: ContextStore) -> Iterator[SenderFactory]:
    """Build (and start) senders with a fast backoff; every one is shut down at teardown."""
    made: list[Sender] = []

    def factory(
        wal: Any,
        transport: Transport,
        *,
        start: bool = True,
        store: ContextStore | None = None,
        **kwargs: Any,
    ) -> Sender:
        kwargs.setdefault("initial_backoff", 0.01)
        kwargs.setdefault("max_backoff", 0.05)
        kwargs.setdefault("export_timeout", 5.0)
        sender = Sender(wal, store or contexts, transport, **kwargs)
        made.append(sender)
        if start:
            sender.start()
        return sender

    yield factory
    for sender in made:
        sender.shutdown(2.0)
