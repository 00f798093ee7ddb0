"""TLS and mTLS to the real collector: delivery, a refused client, and a wrong CA that keeps records in the WAL."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import otel_audit
from otel_audit import Audit
from otel_audit.integrity.verify import verify_archive
from otel_audit.testing import GeneratedCertificates, make_test_certificates

from .conftest import CollectorFactory
from .harness import Collector

pytestmark = pytest.mark.e2e

PROTOCOLS = ["grpc", "http/protobuf"]

# The otlp receiver with a tls block on both protocols; `client_ca_file` (mTLS) only when set.
CONFIG = """
extensions:
  health_check:
    endpoint: ${{env:OTEL_AUDIT_HEALTH_ENDPOINT}}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: ${{env:OTEL_AUDIT_GRPC_ENDPOINT}}
        tls:
          cert_file: {cert}
          key_file: {key}{client_ca}
      http:
        endpoint: ${{env:OTEL_AUDIT_HTTP_ENDPOINT}}
        tls:
          cert_file: {cert}
          key_file: {key}{client_ca}
exporters:
  file/audit:
    path: ${{env:OTEL_AUDIT_ARCHIVE}}
    format: json
    create_directory: true
    rotation:
      max_megabytes: 1024
      max_backups: 0
service:
  extensions: [health_check]
  pipelines:
    logs:
      receivers: [otlp]
      exporters: [file/audit]
  telemetry:
    metrics:
      level: none
"""


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> GeneratedCertificates:
    return make_test_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> GeneratedCertificates:
    return make_test_certificates(tmp_path_factory.mktemp("other-ca"), common_name="an unrelated CA")


def tls_collector(
    factory: CollectorFactory, certs: GeneratedCertificates, tmp_path: Path, *, mtls: bool
) -> Collector:
    client_ca = f"\n          client_ca_file: {certs.ca_file}" if mtls else ""
    config = tmp_path / ("mtls.yaml" if mtls else "tls.yaml")
    config.write_text(
        CONFIG.format(cert=certs.server_cert_file, key=certs.server_key_file, client_ca=client_ca)
    )
    return factory(config=config, name="mtls" if mtls else "tls")


@pytest.fixture
def make_audit(tmp_path: Path) -> Iterator[Any]:
    made: list[Audit] = []

    def make(
        collector: Collector,
        protocol: str,
        ca: Path,
        *,
        client: GeneratedCertificates | None = None,
        wal: str = "wal",
    ) -> Audit:
        port = collector.grpc_port if protocol == "grpc" else collector.http_port
        files: dict[str, Any] = {"certificate_file": str(ca)}
        if client is not None:
            files |= {
                "client_certificate_file": str(client.client_cert_file),
                "client_key_file": str(client.client_key_file),
            }
        audit = otel_audit.configure(
            service_name="tls-e2e",
            wal_dir=tmp_path / wal,
            endpoint=f"https://127.0.0.1:{port}",
            protocol=protocol,
            retry_max_backoff=0.2,
            fail_closed=True,
            **files,
        )
        made.append(audit)
        return audit

    yield make
    for audit in made:
        audit.shutdown(timeout=2)


def record(audit: Audit, count: int) -> list[str]:
    ids = []
    for n in range(count):
        receipt = audit.record(
            "user.login.success",
            actor_id=f"u{n}",
            actor_type="user",
            action="LOGIN",
            outcome="success",
            source_id="203.0.113.5",
            attributes={"n": n},
        )
        assert receipt is not None
        ids.append(receipt.record_id)
    return ids


def archived_ids(collector: Collector) -> set[str | None]:
    return {r.record_id for r in collector.records()}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_tls_delivers_to_the_real_collector(
    protocol: str,
    collector_factory: CollectorFactory,
    certs: GeneratedCertificates,
    make_audit: Any,
    tmp_path: Path,
) -> None:
    collector = tls_collector(collector_factory, certs, tmp_path, mtls=False)
    audit = make_audit(collector, protocol, certs.ca_file)
    ids = record(audit, 30)
    assert audit.force_flush(20)
    audit.shutdown(timeout=5)
    collector.wait_for_records(31)  # and the end record of the closed stream
    assert set(ids) <= archived_ids(collector)
    report = verify_archive(collector.archive_path, complete=True)
    assert report.ok and [s.closed for s in report.streams] == [True]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_mtls_refuses_a_client_without_its_certificate_and_accepts_one_with_it(
    protocol: str,
    collector_factory: CollectorFactory,
    certs: GeneratedCertificates,
    make_audit: Any,
    tmp_path: Path,
) -> None:
    collector = tls_collector(collector_factory, certs, tmp_path, mtls=True)
    anonymous = make_audit(collector, protocol, certs.ca_file, wal="wal-anonymous")
    refused = record(anonymous, 5)
    assert not anonymous.force_flush(2)
    assert anonymous.stats()["backlog_records"] == 5
    assert anonymous.stats()["sender_last_error"]
    trusted = make_audit(collector, protocol, certs.ca_file, client=certs, wal="wal-trusted")
    accepted = record(trusted, 10)
    assert trusted.force_flush(20)
    collector.wait_for_records(10)
    archived = archived_ids(collector)
    assert set(accepted) <= archived and not set(refused) & archived


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_wrong_ca_fails_clearly_keeps_the_records_and_fixing_it_delivers_them(
    protocol: str,
    collector_factory: CollectorFactory,
    certs: GeneratedCertificates,
    other_ca: GeneratedCertificates,
    make_audit: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    collector = tls_collector(collector_factory, certs, tmp_path, mtls=False)
    caplog.set_level(logging.WARNING, logger="otel_audit")
    wrong = make_audit(collector, protocol, other_ca.ca_file)
    ids = record(wrong, 20)
    assert not wrong.force_flush(2)
    stats = wrong.stats()
    assert stats["backlog_records"] == 20 and stats["sender_consecutive_failures"] >= 1
    error = str(stats["sender_last_error"]).lower()
    assert "certificate" in error or "ssl" in error or "handshake" in error, error
    assert any(
        "export failed" in r.getMessage() and "records stay in the WAL" in r.getMessage()
        for r in caplog.records
    )
    assert archived_ids(collector) == set()
    wrong.shutdown(timeout=2)  # the end record joins the backlog; nothing was lost

    fixed = make_audit(collector, protocol, certs.ca_file)  # same WAL, the right CA
    assert fixed.force_flush(20)
    deadline = time.monotonic() + 10
    while not set(ids) <= archived_ids(collector) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert set(ids) <= archived_ids(collector)
    report = verify_archive(collector.archive_path, complete=True)
    assert report.ok, [str(f) for f in report.findings]
