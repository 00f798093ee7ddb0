"""Several OTLP/gRPC gateways behind one grpcio channel that balances itself (round_robin, outlier ejection)."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import grpc

from otel_audit.exceptions import ConfigError
from otel_audit.export.transport.grpc import RECONNECT_OPTIONS, ChannelTransport, channel_compression

DEFAULT_EJECTION_INTERVAL = 10.0
BASE_EJECTION_SECONDS = 10
MAX_EJECTION_SECONDS = 120


def round_robin_target(endpoints: Sequence[str], insecure: bool | None) -> str | None:
    """The grpc target ``ipv4:a:p,b:p`` (or ``ipv6:[a]:p,...``) for plaintext IP-literal endpoints, else None.

    None means the list does not fit one balanced channel and each endpoint needs its own: a host
    name (grpc's multi-address target takes IP literals only; one name resolving to several
    addresses is a single endpoint), TLS (one channel checks one server name, and each gateway
    proves its own), or IPv4 and IPv6 mixed (one target has one scheme).
    """
    addresses: list[str] = []
    families: set[int] = set()
    for endpoint in endpoints:
        parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
        plaintext = parts.scheme == "http" if insecure is None else bool(insecure) and parts.scheme != "https"
        try:
            ip = ipaddress.ip_address(parts.hostname or "")
            port = parts.port
        except ValueError:
            return None
        if not plaintext or port is None:
            return None
        families.add(ip.version)
        addresses.append(f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}")
    if len(addresses) < 2 or len(families) != 1:
        return None
    return f"ipv{families.pop()}:" + ",".join(addresses)


def service_config(ejection_interval: float) -> str:
    """round_robin under outlier ejection, as the grpc service config JSON.

    round_robin alone skips a gateway that refuses connections, but a gateway that accepts and
    never answers (hung process, black-holed link) keeps a READY connection and would take every
    other request, each one waiting the whole export timeout (measured: one request per timeout
    with two gateways, one stopped with SIGSTOP). Outlier detection counts each address's failed
    calls per ``interval`` and ejects one that failed more than half of its calls, for 10 s times
    the number of times it was ejected (at most 120 s), never more than half the addresses at once.
    Set the interval to the export timeout: a hanging call fails only when its deadline fires, and
    the interval must see it and a call to a healthy gateway. The price: a gateway ejected for a
    bad interval stays out for its ejection time even if the others then fail; requests fail fast
    meanwhile, the sender retries, and the records wait in the WAL.
    """
    interval = f"{max(1.0, ejection_interval):.3f}s"
    return json.dumps(
        {
            "loadBalancingConfig": [
                {
                    "outlier_detection_experimental": {
                        "interval": interval,
                        "baseEjectionTime": f"{BASE_EJECTION_SECONDS}s",
                        "maxEjectionTime": f"{MAX_EJECTION_SECONDS}s",
                        "maxEjectionPercent": 50,
                        "failurePercentageEjection": {
                            "threshold": 50,
                            "enforcementPercentage": 100,
                            "minimumHosts": 2,
                            "requestVolume": 1,
                        },
                        "childPolicy": [{"round_robin": {}}],
                    }
                }
            ]
        }
    )


class BalancedGrpcTransport(ChannelTransport):
    """Plaintext OTLP/gRPC to several gateways by IP address, balanced by grpcio itself; thread-safe.

    One channel holds a connection to every gateway and sends each request to the next READY one
    (round_robin): a gateway that is down is skipped without a failed request, one that hangs is
    ejected after the interval (see :func:`service_config`). A failed request is raised as
    ExportError like :class:`~otel_audit.export.transport.grpc.GrpcTransport` does, and the
    sender's retry goes to another gateway. Use :func:`round_robin_target` to build ``target``.
    """

    def __init__(
        self,
        target: str,
        *,
        headers: Mapping[str, str] | None = None,
        compression: str | None = None,
        ejection_interval: float = DEFAULT_EJECTION_INTERVAL,
        channel_options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        scheme, _, addresses = target.partition(":")
        if scheme not in ("ipv4", "ipv6") or not addresses:
            raise ConfigError(f"balanced gRPC target {target!r} is not ipv4:a:p,b:p or ipv6:[a]:p,[b]:p")
        grpc_compression = channel_compression(compression)
        self._target = target
        self._endpoint = ",".join(f"http://{address}" for address in addresses.split(","))
        options = [
            *RECONNECT_OPTIONS,
            ("grpc.service_config", service_config(ejection_interval)),
            *channel_options,
        ]
        channel = grpc.insecure_channel(target, options=options)
        super().__init__(channel, self._endpoint, headers, grpc_compression)

    @property
    def endpoint(self) -> str:
        """Every gateway, comma-separated: which one took a request is grpc's choice."""
        return self._endpoint


__all__ = ["BalancedGrpcTransport", "round_robin_target", "service_config"]
