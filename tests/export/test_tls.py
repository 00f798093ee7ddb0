"""TLS and mTLS with certificates generated here; a wrong CA keeps records in the WAL, retryable."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_audit.exceptions import ExportError
from otel_audit.export.contexts import ContextStore
from otel_audit.export.request import ContextTemplate, build_request
from otel_audit.export.transport.base import Transport
from otel_audit.export.transport.grpc import GrpcTransport
from otel_audit.export.transport.http import HttpTransport
from otel_audit.testing import FakeCollector, GeneratedCertificates, make_test_certificates

from .conftest import SenderFactory, fill
from .fakewal import FakeWAL
from .protos import context_blob, record

REQUEST = build_request([(ContextTemplate.parse(context_blob()), [record("tls-1")])])


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> GeneratedCertificates:
    return make_test_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def other_certs(tmp_path_factory: pytest.TempPathFactory) -> GeneratedCertificates:
    return make_test_certificates(tmp_path_factory.mktemp("other"), common_name="some other CA")


@pytest.fixture
def tls_collector(certs: GeneratedCertificates) -> Iterator[FakeCollector]:
    with FakeCollector(certificates=certs) as c:
        yield c


@pytest.fixture
def mtls_collector(certs: GeneratedCertificates) -> Iterator[FakeCollector]:
    with FakeCollector(certificates=certs, require_client_cert=True) as c:
        yield c


def make(
    protocol: str, collector: FakeCollector, ca: Path, client: GeneratedCertificates | None = None
) -> Transport:
    files = {"certificate_file": str(ca)}
    if client is not None:
        files |= {
            "client_certificate_file": str(client.client_cert_file),
            "client_key_file": str(client.client_key_file),
        }
    if protocol == "grpc":
        return GrpcTransport(collector.grpc_endpoint, **files)
    return HttpTransport(collector.http_endpoint, path="/v1/logs", **files)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_tls_with_the_right_ca_delivers(
    protocol: str, tls_collector: FakeCollector, certs: GeneratedCertificates
) -> None:
    transport = make(protocol, tls_collector, certs.ca_file)
    assert tls_collector.grpc_endpoint.startswith("https://")
    transport.send(REQUEST, 5)
    transport.close()
    assert tls_collector.record_ids() == ["tls-1"]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_mtls_with_a_client_certificate_delivers(
    protocol: str, mtls_collector: FakeCollector, certs: GeneratedCertificates
) -> None:
    transport = make(protocol, mtls_collector, certs.ca_file, client=certs)
    transport.send(REQUEST, 5)
    transport.close()
    assert mtls_collector.record_ids() == ["tls-1"]


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_mtls_without_a_client_certificate_is_a_retryable_error(
    protocol: str, mtls_collector: FakeCollector, certs: GeneratedCertificates
) -> None:
    """The server refuses the handshake: a configuration problem, so the records must wait, not be dropped."""
    transport = make(protocol, mtls_collector, certs.ca_file)
    with pytest.raises(ExportError) as info:
        transport.send(REQUEST, 3)
    transport.close()
    assert info.value.retryable
    assert mtls_collector.records == []


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_wrong_ca_is_a_clear_retryable_error(
    protocol: str, tls_collector: FakeCollector, other_certs: GeneratedCertificates
) -> None:
    """Verification fails against an unrelated CA; the message says it is TLS."""
    transport = make(protocol, tls_collector, other_certs.ca_file)
    with pytest.raises(ExportError) as info:
        transport.send(REQUEST, 3)
    transport.close()
    assert info.value.retryable
    text = str(info.value).lower()
    assert "tls" in text or "ssl" in text or "handshake" in text, text
    assert tls_collector.records == []


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_wrong_ca_keeps_records_in_the_wal_until_fixed(
    protocol: str,
    tls_collector: FakeCollector,
    other_certs: GeneratedCertificates,
    certs: GeneratedCertificates,
    fake_wal: FakeWAL,
    contexts: ContextStore,
    make_sender: SenderFactory,
) -> None:
    """With a wrong CA nothing is acked or dead-lettered; a sender with the right CA then delivers everything."""
    ids = fill(fake_wal, contexts, 20)
    bad = make_sender(fake_wal, make(protocol, tls_collector, other_certs.ca_file))
    assert not bad.force_flush(0.5)
    assert fake_wal.acked_seq == 0 and fake_wal.dead == {}
    assert bad.stats()["consecutive_failures"] >= 1 and bad.stats()["last_error"]
    bad.shutdown(2)
    good = make_sender(fake_wal, make(protocol, tls_collector, certs.ca_file))
    assert good.force_flush(5)
    assert tls_collector.record_ids() == ids
