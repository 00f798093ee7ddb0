"""Several gateways from the app's side: which transport a list makes, how it spreads, how it avoids a bad gateway."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_audit.api import Audit
from otel_audit.config import ExporterConfig, resolve_config
from otel_audit.exceptions import ExportError
from otel_audit.export.transport import FailoverTransport, create_transport
from otel_audit.export.transport.balanced import BalancedGrpcTransport, round_robin_target, service_config
from otel_audit.export.transport.base import ExportResult
from otel_audit.export.transport.grpc import GrpcTransport
from otel_audit.export.transport.http import HttpTransport
from otel_audit.testing import FakeCollector

# -- which transport a list of endpoints makes -------------------------------------------------


@pytest.mark.parametrize(
    ("endpoints", "insecure", "target"),
    [
        (["http://10.0.0.1:4317", "http://10.0.0.2:4318"], None, "ipv4:10.0.0.1:4317,10.0.0.2:4318"),
        (["10.0.0.1:4317", "10.0.0.2:4317"], True, "ipv4:10.0.0.1:4317,10.0.0.2:4317"),
        (["http://[fd00::1]:4317", "http://[fd00::2]:4317"], None, "ipv6:[fd00::1]:4317,[fd00::2]:4317"),
        (["10.0.0.1:4317", "10.0.0.2:4317"], None, None),  # bare host:port means TLS
        (["https://10.0.0.1:4317", "https://10.0.0.2:4317"], None, None),
        (["https://10.0.0.1:4317", "https://10.0.0.2:4317"], True, None),  # https is always TLS
        (["http://gw-1:4317", "http://gw-2:4317"], None, None),  # host names: one channel each
        (["http://10.0.0.1:4317", "http://[fd00::2]:4317"], None, None),  # mixed families
        (["http://10.0.0.1:4317"], None, None),  # one endpoint is not a list
    ],
)
def test_only_plaintext_ip_lists_share_one_balanced_channel(
    endpoints: list[str], insecure: bool | None, target: str | None
) -> None:
    assert round_robin_target(endpoints, insecure) == target


def test_create_transport_balances_grpc_ip_lists_and_fails_over_the_rest() -> None:
    """gRPC by IP: grpc's round_robin; HTTP, host names: one transport each under FailoverTransport."""
    made = [
        create_transport(ExporterConfig(endpoints=("http://127.0.0.1:1", "http://127.0.0.1:2"))),
        create_transport(ExporterConfig(endpoints=("http://localhost:1", "http://127.0.0.1:2"))),
        create_transport(
            ExporterConfig(
                endpoints=("http://127.0.0.1:1/v1/logs", "http://127.0.0.1:2/v1/logs"), protocol="http/protobuf"
            )
        ),
    ]
    try:
        balanced, by_name, http = made
        assert isinstance(balanced, BalancedGrpcTransport)
        assert balanced.endpoint == "http://127.0.0.1:1,http://127.0.0.1:2"
        assert isinstance(by_name, FailoverTransport)
        assert [type(t) for t in by_name.transports] == [GrpcTransport, GrpcTransport]
        assert isinstance(http, FailoverTransport)
        assert [type(t) for t in http.transports] == [HttpTransport, HttpTransport]
    finally:
        for transport in made:
            transport.close()


def test_the_ejection_interval_follows_the_export_timeout_with_a_floor_of_one_second() -> None:
    def interval(seconds: float) -> str:
        config = json.loads(service_config(seconds))["loadBalancingConfig"][0]
        return str(config["outlier_detection_experimental"]["interval"])

    assert interval(10) == "10.000s"
    assert interval(0.2) == "1.000s"


# -- FailoverTransport's choices, with scripted gateways and a fake clock ----------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Gateway:
    """A scripted transport: ``fail`` makes the next sends raise; ``takes`` is the time a send costs."""

    def __init__(self, name: str, clock: Clock) -> None:
        self.endpoint = name
        self.clock = clock
        self.sent = 0
        self.fail: ExportError | None = None
        self.takes = 0.0

    def send(self, request: bytes, timeout: float) -> ExportResult:
        self.clock.now += self.takes
        if self.fail is not None:
            raise self.fail
        self.sent += 1
        return ExportResult()

    def close(self) -> None:
        pass


UNAVAILABLE = ExportError("down", retryable=True, status="UNAVAILABLE")


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _three(clock: Clock) -> tuple[FailoverTransport, list[Gateway]]:
    gateways = [Gateway(name, clock) for name in ("a", "b", "c")]
    return FailoverTransport(gateways, clock=clock), gateways


def test_requests_spread_round_robin_over_healthy_gateways(clock: Clock) -> None:
    transport, gateways = _three(clock)

    for _ in range(9):
        transport.send(b"", 1)

    assert [g.sent for g in gateways] == [3, 3, 3]


def test_a_failed_gateway_sits_out_its_quarantine_then_gets_traffic_again(clock: Clock) -> None:
    """1 s after the first failure, doubling while it keeps failing; a success clears it."""
    transport, (a, b, c) = _three(clock)
    a.fail = UNAVAILABLE

    with pytest.raises(ExportError):
        transport.send(b"", 1)
    assert transport.quarantined() == ["a"]
    for _ in range(4):
        transport.send(b"", 1)
    assert (a.sent, b.sent, c.sent) == (0, 2, 2)

    clock.now += 1.0  # quarantine over, still failing: 2 s this time
    assert transport.endpoint == "a"
    with pytest.raises(ExportError):
        transport.send(b"", 1)
    clock.now += 1.5
    assert transport.quarantined() == ["a"]
    clock.now += 0.5
    a.fail = None
    for _ in range(3):
        transport.send(b"", 1)
    assert a.sent == 1 and transport.quarantined() == []


def test_a_hanging_gateway_sits_out_five_times_what_it_cost(clock: Clock) -> None:
    transport, (a, _, _) = _three(clock)
    a.fail, a.takes = ExportError("deadline", retryable=True, status="DEADLINE_EXCEEDED"), 10.0

    with pytest.raises(ExportError):
        transport.send(b"", 10)

    clock.now += 49.0
    assert transport.quarantined() == ["a"]
    clock.now += 1.0
    assert transport.quarantined() == []


def test_a_rejection_is_about_the_records_not_the_gateway(clock: Clock) -> None:
    transport, (a, _, _) = _three(clock)
    a.fail = ExportError("bad record", retryable=False, status="INVALID_ARGUMENT")

    with pytest.raises(ExportError):
        transport.send(b"", 1)

    assert transport.quarantined() == []


def test_when_every_gateway_is_in_quarantine_the_first_to_come_out_is_tried(clock: Clock) -> None:
    transport, gateways = _three(clock)
    for gateway in gateways:
        gateway.fail = UNAVAILABLE
    for _ in range(3):
        with pytest.raises(ExportError):
            transport.send(b"", 1)
        clock.now += 0.1
    assert transport.quarantined() == ["a", "b", "c"]

    gateways[0].fail = None
    transport.send(b"", 1)

    assert gateways[0].sent == 1


# -- against fake collectors: spreading, a dead one, a hanging one ----------------------------

@pytest.fixture
def pair() -> Iterator[tuple[FakeCollector, FakeCollector]]:
    with FakeCollector() as first, FakeCollector() as second:
        yield first, second


def _send_for(transport: FailoverTransport | BalancedGrpcTransport, seconds: float, timeout: float) -> tuple[int, int]:
    ok = failed = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            transport.send(b"", timeout)
            ok += 1
        except ExportError:
            failed += 1
    return ok, failed


def test_balanced_grpc_spreads_and_skips_a_gateway_that_is_down(pair: tuple[FakeCollector, FakeCollector]) -> None:
    first, second = pair
    transport = BalancedGrpcTransport(f"ipv4:127.0.0.1:{first.grpc_port},127.0.0.1:{second.grpc_port}")
    try:
        ok, failed = _send_for(transport, 0.5, 2)
        assert failed == 0 and len(first.requests) > 0 and len(second.requests) > 0
        first.down()
        time.sleep(0.2)
        before = len(second.requests)
        ok, failed = _send_for(transport, 0.5, 2)
    finally:
        transport.close()

    assert failed <= 1, "a refused gateway kept taking requests"
    assert len(second.requests) - before >= ok > 10


def test_balanced_grpc_ejects_a_gateway_that_hangs(pair: tuple[FakeCollector, FakeCollector]) -> None:
    """Calls to the hanging one fail at their deadline until the next interval ejects it; then none do."""
    first, second = pair
    transport = BalancedGrpcTransport(
        f"ipv4:127.0.0.1:{first.grpc_port},127.0.0.1:{second.grpc_port}", ejection_interval=1.0
    )
    try:
        _send_for(transport, 0.3, 2)
        first.hang()
        _, failed_while_detecting = _send_for(transport, 3.0, 0.3)
        ok, failed = _send_for(transport, 2.0, 0.3)
    finally:
        first.release()
        transport.close()

    # Without ejection every other call fails at its 0.3 s deadline: ~6 failures in 2 s.
    assert failed_while_detecting >= 1
    assert failed == 0, f"{failed} calls still waited for the hanging gateway 3 s after it hung"
    assert ok > 100


def test_http_failover_keeps_a_hanging_gateway_out_of_the_way(pair: tuple[FakeCollector, FakeCollector]) -> None:
    first, second = pair
    transport = FailoverTransport([HttpTransport(c.http_endpoint, path="/v1/logs") for c in pair])
    try:
        first.hang()
        ok, failed = _send_for(transport, 1.5, 0.3)
    finally:
        first.release()
        transport.close()

    assert failed == 1, "the hanging gateway should cost one deadline, then sit out 5 x 0.3 s"
    assert ok > 50 and len(second.requests) >= ok


# -- the whole pipeline: one request at a time, so each gateway sees WAL order -----------------


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_each_gateway_receives_its_share_in_record_order(
    pair: tuple[FakeCollector, FakeCollector], tmp_path: Path, protocol: str
) -> None:
    first, second = pair
    if protocol == "grpc":
        endpoints = [first.grpc_endpoint, second.grpc_endpoint]
    else:
        endpoints = [c.http_endpoint + "/v1/logs" for c in pair]
    audit = Audit(
        resolve_config(
            service_name="balancing", wal_dir=tmp_path / "wal", endpoint=endpoints, protocol=protocol,
            batch_max_records=10, timeout=2.0,
        )
    )  # fmt: skip
    try:
        ids = []
        for n in range(300):
            receipt = audit.record("t.e", actor_id="u", actor_type="user", action="A", outcome="success")
            assert receipt is not None
            ids.append(receipt.record_id)
            if n % 50 == 49:
                assert audit.force_flush(10)
        assert audit.force_flush(10)
    finally:
        audit.shutdown(5)

    got = [first.record_ids(), second.record_ids()]
    assert all(len(share) > 0 for share in got), "one gateway took everything"
    position = {record_id: i for i, record_id in enumerate(ids)}
    for share in got:
        mine = [position[i] for i in share if i in position]
        assert mine == sorted(mine), "a gateway received records out of record order"
    assert set(got[0]) | set(got[1]) >= set(ids)
