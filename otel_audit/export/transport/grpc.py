"""OTLP/gRPC: raw request bytes through a grpcio channel, status codes classified for the sender."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import grpc
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped,unused-ignore]
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from otel_audit.exceptions import ConfigError, ExportError
from otel_audit.export.transport.base import ExportResult, read_pem

EXPORT_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"

RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
"""Transient per the OTLP spec: the same request may succeed later."""

REJECTED_CODES = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS})
"""Refused for what the request contains: the sender bisects and dead-letters the culprits.

RESOURCE_EXHAUSTED joins them when it carries no RetryInfo (the OTLP spec's rule): that is how a
server says "message larger than max"; with RetryInfo it is throttling and retryable.
Every other code (UNAUTHENTICATED, PERMISSION_DENIED, NOT_FOUND, UNIMPLEMENTED, INTERNAL, UNKNOWN,
FAILED_PRECONDITION) is permanent per the spec but says nothing about the records: it is a broken
endpoint, credential or server. Dead-lettering would empty the whole backlog into dead-letter/ one
record at a time, so these are raised as retryable and the records wait in the WAL for the fix.
"""

RECONNECT_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 250),
    ("grpc.min_reconnect_backoff_ms", 250),
    ("grpc.max_reconnect_backoff_ms", 5000),
    ("grpc.primary_user_agent", "otel-audit"),
)
"""Channel options of every transport: reconnect quickly after an outage.

The sender's own backoff paces the attempts, and grpc's default reconnect backoff (up to 120 s)
would add a long silent delay after the collector (or a restarted gateway) is back.
"""


def retry_delay(trailing_metadata: Sequence[tuple[str, str | bytes]] | None) -> float | None:
    """Seconds of ``google.rpc.RetryInfo`` in ``grpc-status-details-bin``, or None when absent."""
    for key, value in trailing_metadata or ():
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except Exception:  # noqa: BLE001 - a malformed detail must not hide the status itself
            return None
        for detail in status.details:
            if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                info = error_details_pb2.RetryInfo()
                detail.Unpack(info)
                return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None


def classify(
    code: grpc.StatusCode,
    details: str | None,
    trailing_metadata: Sequence[tuple[str, str | bytes]] | None,
    target: str,
) -> ExportError:
    """Turn a failed call's status into the ExportError the sender acts on (see RETRYABLE/REJECTED_CODES)."""
    delay = retry_delay(trailing_metadata)
    text = f"gRPC export to {target} failed: {code.name}: {details or 'no details'}"
    if code in RETRYABLE_CODES or (code is grpc.StatusCode.RESOURCE_EXHAUSTED and delay is not None):
        return ExportError(text, retryable=True, retry_after=delay, status=code.name)
    if code in REJECTED_CODES or code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ExportError(text + " (the collector rejects these records)", retryable=False, status=code.name)
    return ExportError(
        text + " (not caused by the records: check the endpoint, credentials and collector; "
        "records stay in the WAL and are retried)",
        retryable=True,
        retry_after=delay,
        status=code.name,
    )


def channel_compression(compression: str | None) -> grpc.Compression:
    """grpc's compression for the OTLP ``compression`` setting (none or gzip).

    Raises:
        ConfigError: any other value.
    """
    if compression not in (None, "none", "gzip"):
        raise ConfigError(f"compression={compression!r} is not one of: none, gzip")
    return grpc.Compression.Gzip if compression == "gzip" else grpc.Compression.NoCompression


class ChannelTransport:
    """Exports over one open grpcio channel and closes it: what every gRPC transport shares.

    Subclasses differ only in how they build the channel; ``peer`` names the collector (or
    gateways) in error messages. The request is sent as already-serialized bytes (identity
    serializer), the response parsed as ``ExportLogsServiceResponse`` for ``partial_success``.
    """

    def __init__(
        self,
        channel: grpc.Channel,
        peer: str,
        headers: Mapping[str, str] | None,
        compression: grpc.Compression,
    ) -> None:
        self._channel = channel
        self._peer = peer
        # gRPC metadata keys must be lower case; values are never logged.
        self._metadata = tuple((k.lower(), v) for k, v in (headers or {}).items())
        self._compression = compression
        self._export = channel.unary_unary(
            EXPORT_METHOD,
            request_serializer=None,
            response_deserializer=ExportLogsServiceResponse.FromString,
        )
        self._closed = False

    def send(self, request: bytes, timeout: float) -> ExportResult:
        """Export one request; raises ExportError classified by :func:`classify`."""
        if self._closed:
            raise ExportError(f"gRPC transport to {self._peer} is closed", retryable=True, status="CLOSED")
        try:
            response = self._export(
                request, timeout=timeout, metadata=self._metadata, compression=self._compression
            )
        except grpc.RpcError as err:
            call: Any = err
            raise classify(call.code(), call.details(), call.trailing_metadata(), self._peer) from None
        except ValueError as err:  # grpcio raises ValueError on a channel closed under us
            raise ExportError(
                f"gRPC transport to {self._peer} is closed: {err}", retryable=True, status="CLOSED"
            ) from None
        partial = response.partial_success
        return ExportResult(int(partial.rejected_log_records), str(partial.error_message))

    def close(self) -> None:
        """Close the channel; calls in flight end at once with CANCELLED."""
        self._closed = True
        self._channel.close()


class GrpcTransport(ChannelTransport):
    """One grpcio channel to one collector; thread-safe (grpc channels are).

    TLS follows the OTLP exporter rules: an ``https`` scheme is always TLS; otherwise ``insecure``
    decides, defaulting to plaintext for ``http`` and TLS for a bare ``host:port``. ``certificate_file`` is the CA bundle to trust (the
    system roots when None); ``client_key_file`` + ``client_certificate_file`` enable mTLS.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        insecure: bool | None = None,
        certificate_file: str | None = None,
        client_key_file: str | None = None,
        client_certificate_file: str | None = None,
        headers: Mapping[str, str] | None = None,
        compression: str | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
        if not parts.hostname or not parts.port:
            raise ConfigError(f"gRPC endpoint {endpoint!r} needs a host and a port (http(s)://host:port)")
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        self._target = f"{host}:{parts.port}"
        if parts.scheme == "https":
            insecure = False
        elif insecure is None:
            insecure = parts.scheme == "http"
        self._secure = not insecure
        grpc_compression = channel_compression(compression)
        overridden = {name for name, _ in channel_options}
        options = [o for o in RECONNECT_OPTIONS if o[0] not in overridden] + list(channel_options)
        if self._secure:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=read_pem(certificate_file, "certificate_file"),
                private_key=read_pem(client_key_file, "client_key_file"),
                certificate_chain=read_pem(client_certificate_file, "client_certificate_file"),
            )
            channel = grpc.secure_channel(self._target, credentials, options=options)
        else:
            channel = grpc.insecure_channel(self._target, options=options)
        super().__init__(channel, self._target, headers, grpc_compression)

    @property
    def endpoint(self) -> str:
        return f"{'https' if self._secure else 'http'}://{self._target}"


__all__ = [
    "EXPORT_METHOD",
    "RECONNECT_OPTIONS",
    "REJECTED_CODES",
    "RETRYABLE_CODES",
    "ChannelTransport",
    "GrpcTransport",
    "channel_compression",
    "classify",
    "retry_delay",
]
