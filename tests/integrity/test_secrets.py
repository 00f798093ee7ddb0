"""No header value or key ends up in the WAL, the logs, the sender's state or error messages."""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest

import otel_audit
from otel_audit.integrity.permissions import find_permission_problems
from otel_audit.integrity.signing import HmacSha256Verifier
from otel_audit.integrity.verify import verify_wal
from otel_audit.testing import FakeCollector

HEADER_VALUE = "Bearer hdr-7f3c9e1b2d4a"
HMAC_KEY = b"hmac-key-5b8e2f1a9c7d3e6f0a4b8c2d"
NEEDLES = [HEADER_VALUE.encode(), b"hdr-7f3c9e1b2d4a", HMAC_KEY, HMAC_KEY.hex().encode()]


def scan(wal_dir: Path) -> set[str]:
    """Grep every file under the WAL for the secrets; return the directories seen."""
    seen = set()
    for path in (p for p in wal_dir.rglob("*") if p.is_file()):
        seen.add(path.parent.name)
        data = path.read_bytes()
        for needle in NEEDLES:
            assert needle not in data, f"{needle!r} found in {path}"
    return seen


def login(audit: otel_audit.Audit, n: int) -> None:
    audit.record(
        "user.login.success",
        actor_id=f"u{n}",
        actor_type="user",
        action="LOGIN",
        outcome="success",
        attributes={"n": n},
    )


def test_headers_and_keys_never_reach_the_wal_or_the_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key_file = tmp_path / "keys" / "hmac.key"
    key_file.parent.mkdir()
    key_file.write_bytes(HMAC_KEY)
    key_file.chmod(0o600)
    wal_dir = tmp_path / "wal"
    caplog.set_level(logging.DEBUG)
    seen: set[str] = set()
    with FakeCollector() as collector:
        collector.down()
        audit = otel_audit.configure(
            service_name="secrets",
            wal_dir=wal_dir,
            endpoint=collector.grpc_endpoint,
            headers={"authorization": HEADER_VALUE},
            hmac_key_file=str(key_file),
            retry_max_backoff=0.05,
        )
        try:
            for n in range(20):
                login(audit, n)
            seen |= scan(wal_dir)  # every record is in the segments now (the collector is down)
            collector.up()
            collector.fail_next(3, grpc_code=grpc.StatusCode.UNAVAILABLE, message="try later")
            collector.reject_if(
                lambda r: any(kv.key == "n" and kv.value.int_value == 99 for kv in r.attributes)
            )
            login(audit, 99)  # rejected for good: it goes to dead-letter/ with the collector's error
            assert audit.force_flush(20)
            shown = [repr(audit.config), str(audit.stats())]
        finally:
            audit.shutdown(timeout=5)
        # The header was really configured and sent, and failures happened: the test can fail.
        assert any(r.headers.get("authorization") == HEADER_VALUE for r in collector.requests)
        assert {"failed", "rejected", "ok"} <= {r.outcome for r in collector.requests}
    seen |= scan(wal_dir)
    assert {"segments", "dead-letter", "contexts", "state"} <= seen, seen
    text = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records) + "\n".join(shown)
    assert "export failed" in text and "dead-letter" in text  # the failures were logged...
    for needle in NEEDLES:
        assert needle.decode() not in text  # ...without the secrets
    assert find_permission_problems(wal_dir) == []  # and the WAL the pipeline made is private
    assert verify_wal(wal_dir, [HmacSha256Verifier(HMAC_KEY)]).ok
