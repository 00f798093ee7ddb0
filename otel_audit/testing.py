"""Helpers to test code that ships audit records: an in-process OTLP collector with programmable faults."""

from __future__ import annotations

import datetime
import gzip
import http.server
import ipaddress
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2  # type: ignore[import-untyped,unused-ignore]
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

RecordPredicate = Callable[[LogRecord], bool]

_ID_KEYS = ("audit.record.id", "log.record.uid")


def record_id(record: LogRecord) -> str | None:
    """The record's ``audit.record.id`` (or ``log.record.uid``) attribute, if any."""
    for key in _ID_KEYS:
        for kv in record.attributes:
            if kv.key == key:
                return str(kv.value.string_value)
    return None


@dataclass(frozen=True)
class ReceivedRequest:
    """One request that reached the collector, whatever its fate."""

    protocol: str  # "grpc" or "http"
    path: str
    headers: dict[str, str]
    records: int
    body_bytes: int
    outcome: str  # "ok", "partial", "failed", "rejected", "too_large", "hung"


@dataclass
class _Failure:
    grpc_code: grpc.StatusCode
    http_status: int
    retry_after: float | None
    message: str


@dataclass
class _Reply:
    """What a protocol front-end must answer; ``grpc_code`` None means success."""

    grpc_code: grpc.StatusCode | None = None
    http_status: int = 200
    message: str = ""
    retry_after: float | None = None
    rejected: int = 0
    partial_message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GeneratedCertificates:
    """PEM files of a throw-away CA, a server certificate (localhost, 127.0.0.1) and a client certificate."""

    directory: Path
    ca_file: Path
    server_cert_file: Path
    server_key_file: Path
    client_cert_file: Path
    client_key_file: Path


def make_test_certificates(
    directory: str | Path, *, common_name: str = "otel-audit test CA"
) -> GeneratedCertificates:
    """Generate a CA and two leaf certificates signed by it, valid for a day, for TLS/mTLS tests."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name(common_name))
        .issuer_name(name(common_name))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), key_pem(key)

    server_cert, server_key = leaf(
        "localhost",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client_cert, client_key = leaf("otel-audit client", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    files = {
        "ca.pem": ca.public_bytes(serialization.Encoding.PEM),
        "server.pem": server_cert,
        "server.key": server_key,
        "client.pem": client_cert,
        "client.key": client_key,
    }
    for filename, data in files.items():
        (out / filename).write_bytes(data)
        (out / filename).chmod(0o600)
    return GeneratedCertificates(
        out, out / "ca.pem", out / "server.pem", out / "server.key", out / "client.pem", out / "client.key"
    )


class FakeCollector:
    """An OTLP logs receiver on 127.0.0.1 (gRPC and HTTP, ephemeral ports) whose faults tests program.

    Faults apply to both protocols, checked in this order for every request: ``hang`` (the handler
    blocks until :meth:`release`, ``down`` or its timeout, then fails UNAVAILABLE/503 without keeping
    the data), ``fail_next`` (a queue of failures with optional RetryInfo / Retry-After),
    ``max_request_bytes`` (RESOURCE_EXHAUSTED without RetryInfo / 413), ``reject_if`` (any record
    matching the predicate makes the whole request INVALID_ARGUMENT / 400, as a validating collector
    does), then acceptance, optionally as ``partial_success``. Accepted records are kept in order in
    :attr:`records`, accepted requests (with their resources and scopes) in :attr:`accepted`, and
    every request's fate in :attr:`requests`. ``down``/``up`` stop and restart both servers on the same ports.

    Use as a context manager, or call :meth:`start` and :meth:`close`.
    """

    def __init__(
        self,
        *,
        certificates: GeneratedCertificates | None = None,
        require_client_cert: bool = False,
        max_request_bytes: int | None = None,
        grpc_max_receive_bytes: int = 64 << 20,
    ) -> None:
        self.records: list[LogRecord] = []
        self.accepted: list[ExportLogsServiceRequest] = []
        self.requests: list[ReceivedRequest] = []
        self.max_request_bytes = max_request_bytes
        self._certs = certificates
        self._require_client_cert = require_client_cert
        self._grpc_max_receive = grpc_max_receive_bytes
        self._cond = threading.Condition()
        self._failures: deque[_Failure] = deque()
        self._partials: deque[tuple[int, str]] = deque()
        self._reject: RecordPredicate | None = None
        self._hang_timeout: float | None = None
        self._hanging = False
        self._release = threading.Event()
        self._grpc_server: grpc.Server | None = None
        self._http_server: _HTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self.grpc_port = 0
        self.http_port = 0
        self._up = False

    # -- lifecycle -----------------------------------------------------------------------------

    def __enter__(self) -> FakeCollector:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Bind both servers (ephemeral ports the first time, the same ports afterwards)."""
        if self._up:
            return
        self._release.clear()
        self._start_grpc()
        self._start_http()
        self._up = True

    up = start

    def down(self) -> None:
        """Stop both servers and drop open connections; clients see connection failures."""
        if not self._up:
            return
        self._up = False
        self._release.set()
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=None)
            self._grpc_server = None
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.drop_connections()
            self._http_server.server_close()
            self._http_server = None
        if self._http_thread is not None:
            self._http_thread.join(5)
            self._http_thread = None

    stop = down

    def close(self) -> None:
        self.down()

    @property
    def is_up(self) -> bool:
        return self._up

    @property
    def grpc_endpoint(self) -> str:
        return f"{'https' if self._certs else 'http'}://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """Base URL; transports append the path (``/v1/logs``)."""
        return f"{'https' if self._certs else 'http'}://127.0.0.1:{self.http_port}"

    # -- programmable behaviour ------------------------------------------------------------------

    def fail_next(
        self,
        n: int = 1,
        *,
        grpc_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
        http_status: int = 503,
        retry_after: float | None = None,
        message: str = "injected failure",
    ) -> None:
        """Fail the next ``n`` requests; ``retry_after`` adds RetryInfo (gRPC) and Retry-After (HTTP, whole seconds)."""
        with self._cond:
            self._failures.extend(_Failure(grpc_code, http_status, retry_after, message) for _ in range(n))

    def reject_if(self, predicate: RecordPredicate | None) -> None:
        """Refuse (INVALID_ARGUMENT / 400) every request holding a record for which ``predicate`` is true."""
        with self._cond:
            self._reject = predicate

    def partial_next(self, n: int = 1, *, rejected: int = 1, message: str = "some records rejected") -> None:
        """Accept the next ``n`` requests but answer partial_success with ``rejected`` records."""
        with self._cond:
            self._partials.extend((rejected, message) for _ in range(n))

    def hang(self, timeout: float | None = None) -> None:
        """Make handlers block (beyond any client deadline) until :meth:`release` or ``timeout``."""
        with self._cond:
            self._release.clear()
            self._hanging = True
            self._hang_timeout = timeout

    def release(self) -> None:
        """Stop hanging; blocked handlers fail their request with UNAVAILABLE / 503."""
        with self._cond:
            self._hanging = False
        self._release.set()

    def clear(self) -> None:
        """Forget received records and requests (not the programmed faults)."""
        with self._cond:
            self.records.clear()
            self.accepted.clear()
            self.requests.clear()

    # -- inspection ------------------------------------------------------------------------------

    def record_ids(self) -> list[str | None]:
        """``audit.record.id`` / ``log.record.uid`` of every accepted record, in arrival order."""
        with self._cond:
            return [record_id(r) for r in self.records]

    def wait_for(self, n: int, timeout: float = 10.0) -> bool:
        """Wait until at least ``n`` records were accepted."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self.records) >= n, timeout)

    # -- the shared decision ---------------------------------------------------------------------

    def _handle(
        self, request: ExportLogsServiceRequest, size: int, protocol: str, path: str, headers: dict[str, str]
    ) -> _Reply:
        records = [lr for rl in request.resource_logs for sl in rl.scope_logs for lr in sl.log_records]

        def note(outcome: str) -> None:
            self.requests.append(ReceivedRequest(protocol, path, headers, len(records), size, outcome))

        with self._cond:
            hanging, hang_timeout = self._hanging, self._hang_timeout
        if hanging:
            with self._cond:
                note("hung")
            self._release.wait(hang_timeout)
            return _Reply(grpc.StatusCode.UNAVAILABLE, 503, "collector was hanging")
        with self._cond:
            if self._failures:
                failure = self._failures.popleft()
                note("failed")
                return _Reply(failure.grpc_code, failure.http_status, failure.message, failure.retry_after)
            if self.max_request_bytes is not None and size > self.max_request_bytes:
                note("too_large")
                return _Reply(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    413,
                    f"request of {size} bytes over {self.max_request_bytes}",
                )
            if self._reject is not None and any(self._reject(r) for r in records):
                note("rejected")
                return _Reply(
                    grpc.StatusCode.INVALID_ARGUMENT, 400, "request holds a record this collector refuses"
                )
            rejected, message = self._partials.popleft() if self._partials else (0, "")
            note("partial" if rejected else "ok")
            self.records.extend(records)
            self.accepted.append(request)
            self._cond.notify_all()
            return _Reply(rejected=rejected, partial_message=message)

    # -- gRPC front-end --------------------------------------------------------------------------

    def _start_grpc(self) -> None:
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="fake-collector-grpc"),
            options=[("grpc.max_receive_message_length", self._grpc_max_receive)],
        )
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_Servicer(self), server)  # type: ignore[no-untyped-call]
        address = f"127.0.0.1:{self.grpc_port}"
        if self._certs is not None:
            creds = grpc.ssl_server_credentials(
                [(self._certs.server_key_file.read_bytes(), self._certs.server_cert_file.read_bytes())],
                root_certificates=self._certs.ca_file.read_bytes() if self._require_client_cert else None,
                require_client_auth=self._require_client_cert,
            )
            port = server.add_secure_port(address, creds)
        else:
            port = server.add_insecure_port(address)
        if not port:
            raise OSError(f"fake collector cannot bind gRPC on {address}")
        self.grpc_port = port
        server.start()
        self._grpc_server = server

    # -- HTTP front-end --------------------------------------------------------------------------

    def _start_http(self) -> None:
        deadline = time.monotonic() + 5
        while True:
            try:
                server = _HTTPServer(("127.0.0.1", self.http_port), _http_handler(self))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        if self._certs is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self._certs.server_cert_file, self._certs.server_key_file)
            if self._require_client_cert:
                context.verify_mode = ssl.CERT_REQUIRED
                context.load_verify_locations(cafile=str(self._certs.ca_file))
            server.socket = context.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )
        self.http_port = server.server_address[1]
        self._http_server = server
        self._http_thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-collector-http",
            daemon=True,
        )
        self._http_thread.start()


class _Servicer(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, collector: FakeCollector) -> None:
        self._collector = collector

    def Export(
        self, request: ExportLogsServiceRequest, context: grpc.ServicerContext
    ) -> ExportLogsServiceResponse:  # noqa: N802
        headers = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        reply = self._collector._handle(request, request.ByteSize(), "grpc", "Export", headers)
        if reply.grpc_code is not None:
            if reply.retry_after is not None:
                context.set_trailing_metadata((("grpc-status-details-bin", _status_details(reply)),))
            context.abort(reply.grpc_code, reply.message)
        response = ExportLogsServiceResponse()
        if reply.rejected:
            response.partial_success.CopyFrom(
                ExportLogsPartialSuccess(
                    rejected_log_records=reply.rejected, error_message=reply.partial_message
                )
            )
        return response


def _status_details(reply: _Reply) -> bytes:
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int((reply.retry_after or 0) * 1e9))
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    code = reply.grpc_code.value[0] if reply.grpc_code is not None else code_pb2.UNKNOWN
    return bytes(status_pb2.Status(code=code, message=reply.message, details=[detail]).SerializeToString())


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Failed handshakes and connections cut by down() are part of the tests, not news.
        return

    def drop_connections(self) -> None:
        """Cut kept-alive connections too: a stopped collector must not keep answering on them."""
        with self.connections_lock:
            conns, self.connections = list(self.connections), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _http_handler(collector: FakeCollector) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server: _HTTPServer

        def setup(self) -> None:
            super().setup()
            with self.server.connections_lock:
                self.server.connections.add(self.connection)

        def finish(self) -> None:
            with self.server.connections_lock:
                self.server.connections.discard(self.connection)
            super().finish()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet test server
            return

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            size = len(body)
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            try:
                request = ExportLogsServiceRequest.FromString(body)
            except Exception:  # noqa: BLE001
                self._send(400, _status_body(3, "cannot parse body"), "application/x-protobuf")
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            reply = collector._handle(request, size, "http", self.path, headers)
            if reply.grpc_code is not None:
                extra = {}
                if reply.retry_after is not None:
                    extra["Retry-After"] = str(max(0, round(reply.retry_after)))
                code = reply.grpc_code.value[0]
                self._send(
                    reply.http_status, _status_body(code, reply.message), "application/x-protobuf", extra
                )
                return
            response = ExportLogsServiceResponse()
            if reply.rejected:
                response.partial_success.rejected_log_records = reply.rejected
                response.partial_success.error_message = reply.partial_message
            self._send(200, response.SerializeToString(), "application/x-protobuf")

        def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler


def _status_body(code: int, message: str) -> bytes:
    return bytes(status_pb2.Status(code=code, message=message).SerializeToString())


def records_matching(records: Iterable[LogRecord], predicate: RecordPredicate) -> list[LogRecord]:
    """Records for which ``predicate`` holds (a small convenience for assertions)."""
    return [r for r in records if predicate(r)]


__all__ = [
    "FakeCollector",
    "ReceivedRequest",
    "GeneratedCertificates",
    "make_test_certificates",
    "record_id",
    "records_matching",
]
