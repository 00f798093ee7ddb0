"""The contract between the sender and a wire protocol: send request bytes, classify the outcome."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from otel_audit.exceptions import ConfigError


@dataclass(frozen=True, slots=True)
class ExportResult:
    """A request the collector accepted; ``rejected_count`` > 0 is an OTLP ``partial_success``."""

    rejected_count: int = 0
    error_message: str = ""


class Transport(Protocol):
    """Sends one serialized ``ExportLogsServiceRequest``.

    ``send`` returns an :class:`ExportResult` when the collector acknowledged the request (fully or
    partially) and raises :class:`~otel_audit.exceptions.ExportError` otherwise; the error's
    ``retryable`` says whether the same bytes may succeed later (``True``) or are refused for what
    they contain (``False``: the sender isolates and dead-letters the offending records). A
    transport never retries by itself: the sender owns the retry policy. Messages and ``endpoint``
    never contain headers or credentials.
    """

    @property
    def endpoint(self) -> str: ...

    def send(self, request: bytes, timeout: float) -> ExportResult: ...

    def close(self) -> None:
        """Release connections and abort requests in flight (they fail as retryable)."""
        ...


def safe_url(url: str) -> str:
    """The URL without user:password@, query or fragment, fit for logs and error messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def read_pem(path: str | None, label: str) -> bytes | None:
    """Read a certificate or key file named in the configuration, failing with the setting's name."""
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read {path}: {exc.strerror or exc}") from exc


__all__ = ["ExportResult", "Transport", "read_pem", "safe_url"]
