"""OTLP/HTTP with protobuf bodies over a pooled requests.Session, status codes classified for the sender."""

from __future__ import annotations

import email.utils
import gzip
import time
from collections.abc import Mapping

import requests
from google.rpc import status_pb2  # type: ignore[import-untyped,unused-ignore]
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from otel_audit.exceptions import ConfigError, ExportError
from otel_audit.export.transport.base import ExportResult, safe_url

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
"""Transient per the OTLP spec; ``Retry-After`` is honoured."""

REJECTED_STATUSES = frozenset({400, 409, 413, 422})
"""Refused for what the body contains: the sender bisects and dead-letters the culprits.

Every other non-2xx status, 3xx included, is permanent per the spec but is about the endpoint, not
the records (401/403 credentials, 404/405 wrong path, 3xx a proxy or a path moved: following a
redirect would resend audit data to an address nobody configured, and the OTLP exporter's habit of
counting 3xx as success would lose it). Those are raised as retryable and the records wait in the
WAL until the configuration is fixed.
"""

_PROTOBUF = "application/x-protobuf"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date; None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _error_text(response: requests.Response) -> str:
    """The server's reason: a google.rpc.Status message for protobuf bodies, else a short text excerpt."""
    body = response.content or b""
    if response.headers.get("Content-Type", "").startswith(_PROTOBUF) and body:
        try:
            message = str(status_pb2.Status.FromString(body).message)
            if message:
                return message
        except Exception:  # noqa: BLE001 - an unparsable body still leaves the status code
            pass
    text = body[:200].decode("utf-8", "replace").strip()
    return " ".join(text.split()) or (response.reason or "")


class HttpTransport:
    """POSTs protobuf request bodies to one URL (``endpoint`` + ``path``); thread-safe for one sender.

    ``certificate_file`` is the CA bundle to trust for ``https`` (the system roots when None);
    ``client_key_file`` + ``client_certificate_file`` enable mTLS. Redirects are never followed.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        path: str = "",
        headers: Mapping[str, str] | None = None,
        compression: str | None = None,
        certificate_file: str | None = None,
        client_key_file: str | None = None,
        client_certificate_file: str | None = None,
        gzip_level: int = 6,
    ) -> None:
        if not endpoint.startswith(("http://", "https://")):
            raise ConfigError(f"HTTP endpoint {endpoint!r} must start with http:// or https://")
        if compression not in (None, "none", "gzip"):
            raise ConfigError(f"compression={compression!r} is not one of: none, gzip")
        if (client_key_file is None) != (client_certificate_file is None):
            raise ConfigError("mTLS needs both client_key_file and client_certificate_file")
        self._url = endpoint.rstrip("/") + path if path else endpoint
        self._safe_url = safe_url(self._url)
        self._gzip = compression == "gzip"
        self._gzip_level = gzip_level
        self._session = requests.Session()
        self._session.trust_env = False  # no proxy or netrc credentials picked up behind the user's back
        self._session.headers.update(headers or {})
        self._session.headers["Content-Type"] = _PROTOBUF
        self._session.headers["User-Agent"] = "otel-audit"
        if self._gzip:
            self._session.headers["Content-Encoding"] = "gzip"
        self._verify: str | bool = certificate_file or True
        self._cert = (
            (client_certificate_file, client_key_file)
            if client_certificate_file and client_key_file
            else None
        )
        self._closed = False

    @property
    def endpoint(self) -> str:
        return self._safe_url

    def send(self, request: bytes, timeout: float) -> ExportResult:
        """Export one request; raises ExportError (see RETRYABLE_STATUSES and REJECTED_STATUSES)."""
        if self._closed:
            raise ExportError(
                f"HTTP transport to {self._safe_url} is closed", retryable=True, status="CLOSED"
            )
        body = gzip.compress(request, compresslevel=self._gzip_level, mtime=0) if self._gzip else request
        try:
            response = self._session.post(
                self._url,
                data=body,
                timeout=timeout,
                verify=self._verify,
                cert=self._cert,
                allow_redirects=False,
            )
        except requests.exceptions.SSLError as exc:
            raise ExportError(
                f"HTTP export to {self._safe_url} failed: TLS error ({_first_line(exc)}); check certificate_file "
                "and the client certificate; records stay in the WAL and are retried",
                retryable=True,
                status="TLS",
            ) from None
        except requests.exceptions.Timeout:
            raise ExportError(
                f"HTTP export to {self._safe_url} timed out after {timeout}s",
                retryable=True,
                status="TIMEOUT",
            ) from None
        except requests.RequestException as exc:
            raise ExportError(
                f"HTTP export to {self._safe_url} failed: {_first_line(exc)}",
                retryable=True,
                status="CONNECTION",
            ) from None
        return self._result(response)

    def _result(self, response: requests.Response) -> ExportResult:
        code = response.status_code
        if 200 <= code < 300:
            body = response.content
            if not body or not response.headers.get("Content-Type", "").startswith(_PROTOBUF):
                return ExportResult()
            try:
                partial = ExportLogsServiceResponse.FromString(body).partial_success
            except Exception:  # noqa: BLE001 - the collector accepted the data; an odd body changes nothing
                return ExportResult()
            return ExportResult(int(partial.rejected_log_records), str(partial.error_message))
        text = f"HTTP export to {self._safe_url} failed: {code} {_error_text(response)}"
        status = f"HTTP {code}"
        if code in RETRYABLE_STATUSES:
            raise ExportError(
                text,
                retryable=True,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
                status=status,
            )
        if code in REJECTED_STATUSES:
            raise ExportError(text + " (the collector rejects these records)", retryable=False, status=status)
        hint = " (a redirect: point the endpoint at its final URL)" if 300 <= code < 400 else ""
        raise ExportError(
            text + hint + " (not caused by the records: check the endpoint, credentials and collector; "
            "records stay in the WAL and are retried)",
            retryable=True,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
            status=status,
        )

    def close(self) -> None:
        self._closed = True
        self._session.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


__all__ = ["HttpTransport", "REJECTED_STATUSES", "RETRYABLE_STATUSES", "parse_retry_after"]
