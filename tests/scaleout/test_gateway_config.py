"""collector-gateway.yaml: the collector accepts it with each choice of output, and file out really archives."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from e2e.harness import Collector

from otel_audit.api import Audit
from otel_audit.config import resolve_config

from .topology import GATEWAY_CONFIG

pytestmark = pytest.mark.e2e


def _validate(binary: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binary), "validate", "--config", str(GATEWAY_CONFIG)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    "exporters", [None, "[otlp_grpc/forward]", "[file/audit]", "[otlp_grpc/forward, file/audit]"]
)
def test_the_gateway_config_validates_with_each_output(collector_binary: Path, exporters: str | None) -> None:
    env = {} if exporters is None else {"OTEL_AUDIT_GATEWAY_EXPORTERS": exporters}

    result = _validate(collector_binary, env)

    assert result.returncode == 0, result.stderr


def test_validate_refuses_an_output_the_gateway_does_not_define(collector_binary: Path) -> None:
    result = _validate(collector_binary, {"OTEL_AUDIT_GATEWAY_EXPORTERS": "[kafka]"})

    assert result.returncode != 0 and "kafka" in result.stderr


def test_a_gateway_with_file_out_archives_what_it_acknowledged(collector_binary: Path, tmp_path: Path) -> None:
    gateway = Collector(
        collector_binary,
        tmp_path / "gateway",
        config=GATEWAY_CONFIG,
        env={"OTEL_AUDIT_GATEWAY_EXPORTERS": "[file/audit]", "OTEL_AUDIT_GATEWAY_TRACES_EXPORTERS": "[file/traces]"},
    )
    audit: Audit | None = None
    try:
        gateway.start()
        audit = Audit(resolve_config(service_name="file-out", wal_dir=tmp_path / "wal", endpoint=gateway.grpc_endpoint))
        ids = []
        for _ in range(50):
            receipt = audit.record("t.e", actor_id="u", actor_type="user", action="A", outcome="success")
            assert receipt is not None
            ids.append(receipt.record_id)
        assert audit.force_flush(10)
        gateway.kill()  # file out writes before it acknowledges: a SIGKILL now loses nothing

        assert {r.record_id for r in gateway.records()} >= set(ids)
    finally:
        if audit is not None:
            audit.shutdown(2)
        gateway.close()


