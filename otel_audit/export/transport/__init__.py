"""Wire transports for the sender: OTLP/gRPC and OTLP/HTTP, one gateway or several, from an ExporterConfig."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from otel_audit.exceptions import ExportError
from otel_audit.export.transport.base import ExportResult, Transport

if TYPE_CHECKING:
    from otel_audit.config import ExporterConfig

_log = logging.getLogger("otel_audit.export")

DEFAULT_QUARANTINE = 1.0
DEFAULT_MAX_QUARANTINE = 60.0
QUARANTINE_PER_FAILED_SECOND = 5.0
"""A gateway that made a request wait ``d`` seconds before failing is left alone at least ``5 * d``."""


@dataclass
class _Health:
    failures: int = 0
    until: float = 0.0


class FailoverTransport:
    """Several gateways over any protocol: requests spread round-robin, a failed gateway sits out a while.

    Each request goes to the next gateway in turn that is not in quarantine. A retryable failure
    puts that gateway in quarantine (1 s, doubling with each consecutive failure up to 60 s, and
    at least five times as long as the failed request took, so a gateway that hangs until the
    export timeout costs at most about a sixth of the sender's time); the error is raised and the
    sender's retry goes to the next one. A success ends the quarantine count. When every gateway is
    in quarantine the one whose quarantine ends first is tried: a request is never refused here,
    the sender's backoff paces it.

    Permanent rejections are not a gateway's fault: they are about the records, another gateway of
    the same tier would refuse them too, so they neither quarantine nor fail over. Order is the
    sender's business: it sends one request at a time, so whichever gateway takes a request, the
    WAL order of acknowledgements holds. Thread-safe.
    """

    def __init__(
        self,
        transports: Sequence[Transport],
        *,
        quarantine: float = DEFAULT_QUARANTINE,
        max_quarantine: float = DEFAULT_MAX_QUARANTINE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not transports:
            raise ValueError("FailoverTransport needs at least one transport")
        if quarantine <= 0 or max_quarantine < quarantine:
            raise ValueError(f"need 0 < quarantine <= max_quarantine, got {quarantine}, {max_quarantine}")
        self._transports = list(transports)
        self._health = [_Health() for _ in self._transports]
        self._quarantine = quarantine
        self._max_quarantine = max_quarantine
        self._clock = clock
        self._next = 0
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        """The gateway the next request goes to."""
        with self._lock:
            return self._transports[self._peek(self._clock())].endpoint

    @property
    def transports(self) -> list[Transport]:
        return list(self._transports)

    def quarantined(self) -> list[str]:
        """Endpoints currently sitting out after a failure."""
        now = self._clock()
        with self._lock:
            return [t.endpoint for t, h in zip(self._transports, self._health, strict=True) if h.until > now]

    def send(self, request: bytes, timeout: float) -> ExportResult:
        with self._lock:
            index = self._peek(self._clock())
            self._next = (index + 1) % len(self._transports)
        transport = self._transports[index]
        start = self._clock()
        try:
            result = transport.send(request, timeout)
        except ExportError as exc:
            if exc.retryable and len(self._transports) > 1:
                self._failed(index, self._clock() - start, exc)
            raise
        with self._lock:
            self._health[index] = _Health()
        return result

    def close(self) -> None:
        for transport in self._transports:
            transport.close()

    def _peek(self, now: float) -> int:
        """Next gateway in turn out of quarantine, else the one whose quarantine ends first."""
        count = len(self._transports)
        for step in range(count):
            index = (self._next + step) % count
            if self._health[index].until <= now:
                return index
        return min(range(count), key=lambda i: self._health[i].until)

    def _failed(self, index: int, elapsed: float, exc: ExportError) -> None:
        with self._lock:
            health = self._health[index]
            health.failures += 1
            backoff = min(self._max_quarantine, self._quarantine * 2 ** min(health.failures - 1, 30))
            seconds = max(backoff, QUARANTINE_PER_FAILED_SECOND * elapsed)
            health.until = self._clock() + seconds
            following = self._transports[self._peek(self._clock())].endpoint
        _log.info(
            "export to %s failed (%s); it sits out %.1fs, the next attempt goes to %s",
            self._transports[index].endpoint,
            exc.status,
            seconds,
            following,
        )


def create_transport(config: ExporterConfig) -> Transport:
    """Build the transport an ExporterConfig names.

    One endpoint: its GrpcTransport or HttpTransport. Several plaintext gRPC endpoints given as IP
    addresses: one :class:`~otel_audit.export.transport.balanced.BalancedGrpcTransport` (grpc's own
    round_robin, outlier ejection after ``config.timeout``). Any other list (HTTP, TLS, host names,
    mixed address families): one transport per endpoint under a :class:`FailoverTransport`.
    """
    if config.protocol == "grpc" and len(config.endpoints) > 1:
        from otel_audit.export.transport.balanced import BalancedGrpcTransport, round_robin_target

        target = round_robin_target(config.endpoints, config.insecure)
        if target is not None:
            return BalancedGrpcTransport(
                target,
                headers=config.headers,
                compression=config.compression,
                ejection_interval=config.timeout,
            )
    transports: list[Transport] = []
    for endpoint in config.endpoints:
        if config.protocol == "grpc":
            from otel_audit.export.transport.grpc import GrpcTransport

            transports.append(
                GrpcTransport(
                    endpoint,
                    insecure=config.insecure,
                    certificate_file=config.certificate_file,
                    client_key_file=config.client_key_file,
                    client_certificate_file=config.client_certificate_file,
                    headers=config.headers,
                    compression=config.compression,
                )
            )
        else:
            from otel_audit.export.transport.http import HttpTransport

            # config.endpoints already carry the path (the OTLP endpoint rules are applied there).
            transports.append(
                HttpTransport(
                    endpoint,
                    headers=config.headers,
                    compression=config.compression,
                    certificate_file=config.certificate_file,
                    client_key_file=config.client_key_file,
                    client_certificate_file=config.client_certificate_file,
                )
            )
    return transports[0] if len(transports) == 1 else FailoverTransport(transports)


__all__ = ["ExportResult", "FailoverTransport", "Transport", "create_transport"]
