"""Wire transports for the sender: OTLP/gRPC and OTLP/HTTP, chosen from an ExporterConfig."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from otel_audit.exceptions import ExportError
from otel_audit.export.transport.base import ExportResult, Transport

if TYPE_CHECKING:
    from otel_audit.config import ExporterConfig

_log = logging.getLogger("otel_audit.export")


class FailoverTransport:
    """Several gateways: stay on one while it works, move to the next after a retryable failure.

    Permanent rejections are not failed over: they are about the records, and another gateway of
    the same tier would refuse them too.
    """

    def __init__(self, transports: Sequence[Transport]) -> None:
        if not transports:
            raise ValueError("FailoverTransport needs at least one transport")
        self._transports = list(transports)
        self._index = 0
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return self._transports[self._index].endpoint

    def send(self, request: bytes, timeout: float) -> ExportResult:
        transport = self._transports[self._index]
        try:
            return transport.send(request, timeout)
        except ExportError as exc:
            if exc.retryable and len(self._transports) > 1:
                with self._lock:
                    self._index = (self._transports.index(transport) + 1) % len(self._transports)
                    _log.info(
                        "export to %s failed (%s); next attempt goes to %s",
                        transport.endpoint,
                        exc.status,
                        self.endpoint,
                    )
            raise

    def close(self) -> None:
        for transport in self._transports:
            transport.close()


def create_transport(config: ExporterConfig) -> Transport:
    """Build the transport(s) an ExporterConfig names; one per endpoint, with failover between them."""
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
