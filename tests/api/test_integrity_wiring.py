"""configure() applies redaction before anything is built, and streams write digest records."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import otel_audit
from otel_audit.integrity.digest import DIGEST_EVENT
from otel_audit.integrity.redact import Redactor
from otel_audit.integrity.verify import verify_wal
from otel_audit.testing import FakeCollector

from .conftest import LOGIN


def _attrs(record: object) -> dict[str, object]:
    out: dict[str, object] = {}
    for kv in record.attributes:  # type: ignore[attr-defined]
        which = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, which) if which else None
    return out


def test_redacted_attributes_never_reach_the_wal_or_the_collector(
    make_audit: Callable[..., otel_audit.Audit], collector: FakeCollector, tmp_path: Path
) -> None:
    key = b"k" * 32
    audit = make_audit(redactor=Redactor({"password": "drop", "user.email": "hmac"}, key))
    audit.record("user.login.success", **LOGIN, attributes={"password": "hunter2", "user.email": "a@b.c"})
    audit.record("user.login.success", **LOGIN, attributes={"user.email": "a@b.c"})
    assert audit.force_flush(10)
    first, second = (_attrs(r) for r in collector.records)
    assert "password" not in first
    assert first["user.email"] != "a@b.c" and first["user.email"] == second["user.email"]
    for path in (tmp_path / "wal").rglob("*"):
        if path.is_file():
            assert b"hunter2" not in path.read_bytes() and b"a@b.c" not in path.read_bytes()


def test_a_stream_writes_a_digest_every_n_records_and_the_wal_verifies_clean(
    make_audit: Callable[..., otel_audit.Audit], collector: FakeCollector, tmp_path: Path
) -> None:
    collector.down()  # keep everything in the WAL so verify sees the whole stream
    audit = make_audit(digest="records=10")
    for _ in range(25):
        audit.record("user.login.success", **LOGIN)
    report = verify_wal(tmp_path / "wal")
    assert report.ok, report.to_dict()
    collector.start()
    assert audit.force_flush(20)
    digests = [r for r in collector.records if r.event_name == DIGEST_EVENT]
    assert len(digests) == 2
    numbers = [_attrs(r)["audit.sequence.number"] for r in collector.records]
    assert numbers == list(range(1, 28))
