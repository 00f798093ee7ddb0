"""Transports classify outcomes for the sender: success, partial, retryable, rejected."""

from __future__ import annotations

import email.utils
import socket
import time

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from otel_audit.config import ExporterConfig
from otel_audit.exceptions import ConfigError, ExportError
from otel_audit.export.request import ContextTemplate, build_request
from otel_audit.export.transport import FailoverTransport, create_transport
from otel_audit.export.transport.balanced import BalancedGrpcTransport
from otel_audit.export.transport.base import safe_url
from otel_audit.export.transport.grpc import GrpcTransport, classify, retry_delay
from otel_audit.export.transport.http import HttpTransport, parse_retry_after
from otel_audit.testing import FakeCollector

from .conftest import transport_for
from .protos import context_blob, record

REQUEST = build_request([(ContextTemplate.parse(context_blob()), [record("a"), record("b")])])

SPEC_RETRYABLE = ["CANCELLED", "DEADLINE_EXCEEDED", "ABORTED", "OUT_OF_RANGE", "UNAVAILABLE", "DATA_LOSS"]
REJECTED = ["INVALID_ARGUMENT", "ALREADY_EXISTS", "RESOURCE_EXHAUSTED"]
HELD = [
    "UNKNOWN",
    "NOT_FOUND",
    "PERMISSION_DENIED",
    "FAILED_PRECONDITION",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAUTHENTICATED",
]


def status_details(seconds: float) -> bytes:
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(seconds * 1e9))
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return bytes(status_pb2.Status(code=14, details=[detail]).SerializeToString())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("name", SPEC_RETRYABLE + REJECTED + HELD)
def test_grpc_status_classification(name: str) -> None:
    """Spec-retryable codes retry; content rejections do not; endpoint/credential errors are held and retried."""
    error = classify(grpc.StatusCode[name], "details", None, "host:1")
    assert error.status == name
    assert error.retryable is (name not in REJECTED)
    assert ("not caused by the records" in str(error)) is (name in HELD)


def test_resource_exhausted_with_retry_info_is_retryable() -> None:
    """The OTLP spec: RESOURCE_EXHAUSTED is retryable only when the server sends RetryInfo."""
    error = classify(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "slow down",
        [("grpc-status-details-bin", status_details(1.5))],
        "h:1",
    )
    assert error.retryable and error.retry_after == 1.5


def test_retry_delay_reads_nanoseconds_and_ignores_garbage() -> None:
    assert retry_delay([("other", "x"), ("grpc-status-details-bin", status_details(0.25))]) == 0.25
    assert retry_delay([("grpc-status-details-bin", b"\xff\xff garbage")]) is None
    assert retry_delay(None) is None


def test_retry_after_header_forms() -> None:
    """Delta-seconds and HTTP dates; anything else is ignored."""
    now = time.time()
    assert parse_retry_after("120") == 120.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= (parse_retry_after(date, now=now) or 0) <= 31
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert (
        parse_retry_after("soon") is None
        and parse_retry_after(None) is None
        and parse_retry_after("-1") is None
    )


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_success_and_partial_success_results(protocol: str, collector: FakeCollector) -> None:
    """A full success has rejected_count 0; partial_success carries the count and message."""
    transport = transport_for(protocol, collector)
    try:
        assert transport.send(REQUEST, 5).rejected_count == 0
        collector.partial_next(1, rejected=1, message="one bad")
        result = transport.send(REQUEST, 5)
        assert (result.rejected_count, result.error_message) == (1, "one bad")
        assert collector.record_ids() == ["a", "b"] * 2
    finally:
        transport.close()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_rejection_is_permanent_and_says_so(protocol: str, collector: FakeCollector) -> None:
    collector.reject_if(lambda r: True)
    transport = transport_for(protocol, collector)
    with pytest.raises(ExportError) as info:
        transport.send(REQUEST, 5)
    transport.close()
    assert not info.value.retryable
    assert info.value.status == ("INVALID_ARGUMENT" if protocol == "grpc" else "HTTP 400")
    assert "refuses" in str(info.value)  # the collector's own message is passed on


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_nothing_listening_is_retryable(protocol: str) -> None:
    port = free_port()
    transport = (
        GrpcTransport(f"http://127.0.0.1:{port}")
        if protocol == "grpc"
        else HttpTransport(f"http://127.0.0.1:{port}/v1/logs")
    )
    with pytest.raises(ExportError) as info:
        transport.send(REQUEST, 2)
    transport.close()
    assert info.value.retryable
    assert info.value.status in ("UNAVAILABLE", "CONNECTION")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_closed_transport_fails_retryable(protocol: str, collector: FakeCollector) -> None:
    transport = transport_for(protocol, collector)
    transport.close()
    with pytest.raises(ExportError) as info:
        transport.send(REQUEST, 1)
    assert info.value.retryable and info.value.status == "CLOSED"


def test_http_path_is_configurable(collector: FakeCollector) -> None:
    """The draft's /v1/audit path (or any other) is honoured."""
    transport = HttpTransport(collector.http_endpoint, path="/v1/audit")
    transport.send(REQUEST, 5)
    transport.close()
    assert collector.requests[-1].path == "/v1/audit"
    assert collector.requests[-1].headers["content-type"] == "application/x-protobuf"


def test_endpoint_strings_hide_credentials() -> None:
    assert safe_url("https://user:pw@collector:4318/v1/logs?token=x") == "https://collector:4318/v1/logs"
    assert (
        HttpTransport("https://user:pw@collector:4318/v1/logs").endpoint == "https://collector:4318/v1/logs"
    )


def test_bad_transport_configuration_is_refused() -> None:
    with pytest.raises(ConfigError):
        HttpTransport("collector:4318")
    with pytest.raises(ConfigError):
        HttpTransport("http://c:1", compression="brotli")
    with pytest.raises(ConfigError):
        HttpTransport("http://c:1", client_key_file="k")
    with pytest.raises(ConfigError):
        GrpcTransport("http://collector")
    with pytest.raises(ConfigError, match="certificate_file"):
        GrpcTransport("https://c:1", certificate_file="/nonexistent/ca.pem")


def test_grpc_scheme_decides_tls() -> None:
    """https is TLS, http plaintext, a bare host:port TLS unless insecure (the OTLP exporter rules)."""
    assert GrpcTransport("https://c:1", insecure=True).endpoint == "https://c:1"
    assert GrpcTransport("http://c:1").endpoint == "http://c:1"
    assert GrpcTransport("c:1").endpoint == "https://c:1"
    assert GrpcTransport("c:1", insecure=True).endpoint == "http://c:1"


def test_failover_moves_to_the_next_gateway_after_a_retryable_failure(collector: FakeCollector) -> None:
    """Two gateways, the first unreachable: one failed attempt, then the second takes the traffic."""
    dead = GrpcTransport(f"http://127.0.0.1:{free_port()}")
    transport = FailoverTransport([dead, transport_for("grpc", collector)])
    with pytest.raises(ExportError):
        transport.send(REQUEST, 2)
    assert transport.endpoint == collector.grpc_endpoint
    transport.send(REQUEST, 2)
    transport.close()
    assert collector.record_ids() == ["a", "b"]


def test_create_transport_follows_the_config(collector: FakeCollector) -> None:
    grpc_t = create_transport(
        ExporterConfig(endpoints=(collector.grpc_endpoint,), protocol="grpc", compression="gzip")
    )
    http_t = create_transport(
        ExporterConfig(
            endpoints=(collector.http_endpoint + "/v1/logs",), protocol="http/protobuf", headers={"k": "v"}
        )
    )
    many = create_transport(ExporterConfig(endpoints=(collector.grpc_endpoint, collector.grpc_endpoint)))
    mixed = create_transport(
        ExporterConfig(endpoints=(collector.http_endpoint + "/v1/logs", collector.http_endpoint + "/v1/logs"),
                       protocol="http/protobuf")
    )
    try:
        assert isinstance(grpc_t, GrpcTransport) and isinstance(http_t, HttpTransport)
        # Plaintext gRPC gateways by IP share one channel balanced by gRPC; HTTP lists fail over.
        assert isinstance(many, BalancedGrpcTransport)
        assert isinstance(mixed, FailoverTransport)
        grpc_t.send(REQUEST, 5)
        http_t.send(REQUEST, 5)
        assert collector.requests[-1].headers["k"] == "v" and collector.requests[-1].path == "/v1/logs"
    finally:
        for t in (grpc_t, http_t, many, mixed):
            t.close()
