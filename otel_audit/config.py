"""Every setting of otel-audit in one place: explicit argument, then environment variable, then default."""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from otel_audit.exceptions import ConfigError

_log = logging.getLogger("otel_audit.config")

# --- our own variables -----------------------------------------------------------------------

OTEL_AUDIT_WAL_DIR = "OTEL_AUDIT_WAL_DIR"
"""
.. envvar:: OTEL_AUDIT_WAL_DIR

Directory of the write-ahead log. It must survive restarts and must not depend on the working
directory (a restart elsewhere would orphan the backlog).
Default: ``$XDG_STATE_HOME/otel-audit/<service name>`` (``~/.local/state/otel-audit/<service name>``).
"""

OTEL_AUDIT_DURABILITY = "OTEL_AUDIT_DURABILITY"
"""
.. envvar:: OTEL_AUDIT_DURABILITY

When an accepted record is on stable storage: ``always`` (fsync before ``record()`` returns),
``interval`` (background fsync), ``never`` (the OS decides). Every mode survives a process crash.
Default: ``interval``
"""

OTEL_AUDIT_FSYNC_INTERVAL_MILLIS = "OTEL_AUDIT_FSYNC_INTERVAL_MILLIS"
"""
.. envvar:: OTEL_AUDIT_FSYNC_INTERVAL_MILLIS

Period of the background fsync in ``interval`` mode: the most a power loss can cost.
Default: ``200``
"""

OTEL_AUDIT_SEGMENT_BYTES = "OTEL_AUDIT_SEGMENT_BYTES"
"""
.. envvar:: OTEL_AUDIT_SEGMENT_BYTES

Size at which the WAL starts a new segment file. Default: ``33554432`` (32 MiB)
"""

OTEL_AUDIT_MAX_BYTES = "OTEL_AUDIT_MAX_BYTES"
"""
.. envvar:: OTEL_AUDIT_MAX_BYTES

Cap on the WAL's size on disk; what happens when it is reached is :envvar:`OTEL_AUDIT_FULL_POLICY`.
Default: ``1073741824`` (1 GiB)
"""

OTEL_AUDIT_FULL_POLICY = "OTEL_AUDIT_FULL_POLICY"
"""
.. envvar:: OTEL_AUDIT_FULL_POLICY

``block`` (wait up to the full timeout for the sender to free space), ``raise`` (refuse at once),
``drop_newest`` (refuse, count and warn). Old unexported records are never evicted.
Default: ``block``
"""

OTEL_AUDIT_FULL_TIMEOUT_MILLIS = "OTEL_AUDIT_FULL_TIMEOUT_MILLIS"
"""
.. envvar:: OTEL_AUDIT_FULL_TIMEOUT_MILLIS

How long ``block`` waits for space before the append fails. Default: ``10000``
"""

OTEL_AUDIT_FAIL_CLOSED = "OTEL_AUDIT_FAIL_CLOSED"
"""
.. envvar:: OTEL_AUDIT_FAIL_CLOSED

``true``: ``record()`` raises :class:`~otel_audit.AuditWriteError` when a record cannot be persisted.
``false``: the record is counted as dropped, logged, and ``record()`` returns ``None``.
Default: ``true``
"""

OTEL_AUDIT_ENDPOINT = "OTEL_AUDIT_ENDPOINT"
"""
.. envvar:: OTEL_AUDIT_ENDPOINT

Collector endpoint; wins over ``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`` and ``OTEL_EXPORTER_OTLP_ENDPOINT``.
A comma-separated list names several gateways.
Default: ``http://localhost:4317`` (gRPC) or ``http://localhost:4318`` (HTTP)
"""

OTEL_AUDIT_PROTOCOL = "OTEL_AUDIT_PROTOCOL"
"""
.. envvar:: OTEL_AUDIT_PROTOCOL

``grpc`` or ``http/protobuf``; wins over ``OTEL_EXPORTER_OTLP_LOGS_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL``.
Default: ``grpc``
"""

OTEL_AUDIT_HTTP_PATH = "OTEL_AUDIT_HTTP_PATH"
"""
.. envvar:: OTEL_AUDIT_HTTP_PATH

URL path for ``http/protobuf`` when the endpoint comes from ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_AUDIT_ENDPOINT`` without a path (the draft's dedicated path is ``/v1/audit``; real collectors
serve ``/v1/logs``). Default: ``/v1/logs``
"""

OTEL_AUDIT_BATCH_MAX_RECORDS = "OTEL_AUDIT_BATCH_MAX_RECORDS"
"""
.. envvar:: OTEL_AUDIT_BATCH_MAX_RECORDS

Most records in one export request. Default: ``512``
"""

OTEL_AUDIT_BATCH_MAX_BYTES = "OTEL_AUDIT_BATCH_MAX_BYTES"
"""
.. envvar:: OTEL_AUDIT_BATCH_MAX_BYTES

Most encoded bytes in one export request (a collector's default gRPC limit is 4 MiB).
Default: ``3145728`` (3 MiB)
"""

OTEL_AUDIT_RETRY_MAX_BACKOFF_MILLIS = "OTEL_AUDIT_RETRY_MAX_BACKOFF_MILLIS"
"""
.. envvar:: OTEL_AUDIT_RETRY_MAX_BACKOFF_MILLIS

Cap of the exponential backoff between retries; retries never stop. Default: ``30000``
"""

OTEL_AUDIT_HMAC_KEY_FILE = "OTEL_AUDIT_HMAC_KEY_FILE"
"""
.. envvar:: OTEL_AUDIT_HMAC_KEY_FILE

File holding the HMAC-SHA256 key that signs every record. Default: unset (no signature; the hash
chain is still written).
"""

OTEL_AUDIT_SIGNING_KEY_FILE = "OTEL_AUDIT_SIGNING_KEY_FILE"
"""
.. envvar:: OTEL_AUDIT_SIGNING_KEY_FILE

PEM private key (Ed25519 or P-256) that signs every record. Default: unset.
"""

OTEL_AUDIT_CHAIN = "OTEL_AUDIT_CHAIN"
"""
.. envvar:: OTEL_AUDIT_CHAIN

``true`` writes the ``audit.sequence.*`` hash chain on every audit record. Default: ``true``
"""

OTEL_AUDIT_DIGEST = "OTEL_AUDIT_DIGEST"
"""
.. envvar:: OTEL_AUDIT_DIGEST

When each stream writes a digest record (chain head, count, previous digest's hash) so a cut tail
is detectable: ``records=1000,seconds=60``, ``records=500``, ``seconds=30`` or ``off``.
Default: ``records=1000,seconds=60``
"""

OTEL_AUDIT_REDACT = "OTEL_AUDIT_REDACT"
"""
.. envvar:: OTEL_AUDIT_REDACT

Attribute redaction before anything touches disk: ``key=action,...`` with actions ``drop``,
``mask``, ``last4`` or ``hmac`` (globs allowed, e.g. ``*.password=drop``). Default: unset.
"""

OTEL_AUDIT_REDACT_KEY_FILE = "OTEL_AUDIT_REDACT_KEY_FILE"
"""
.. envvar:: OTEL_AUDIT_REDACT_KEY_FILE

Key (32 bytes or more) of the ``hmac`` redaction action: equal values stay correlatable.
Default: unset.
"""

OTEL_AUDIT_REDACT_MANDATORY = "OTEL_AUDIT_REDACT_MANDATORY"
"""
.. envvar:: OTEL_AUDIT_REDACT_MANDATORY

``true`` allows rules on the draft's mandatory attributes (never ``drop``). Default: ``false``
"""

OTEL_AUDIT_WAL_PERMISSIONS = "OTEL_AUDIT_WAL_PERMISSIONS"
"""
.. envvar:: OTEL_AUDIT_WAL_PERMISSIONS

What to do when the WAL directory or its files are looser than 0700/0600: ``warn``, ``refuse``
or ``ignore``. Default: ``warn``
"""

# --- standard OTLP exporter variables we honour -------------------------------------------------

_OTLP = "OTEL_EXPORTER_OTLP_"
_OTLP_LOGS = "OTEL_EXPORTER_OTLP_LOGS_"

DEFAULT_GRPC_ENDPOINT = "http://localhost:4317"
DEFAULT_HTTP_ENDPOINT = "http://localhost:4318"
DEFAULT_HTTP_PATH = "/v1/logs"

PROTOCOLS = ("grpc", "http/protobuf")
DURABILITIES = ("always", "interval", "never")
FULL_POLICIES = ("block", "raise", "drop_newest")
COMPRESSIONS = ("none", "gzip")


@dataclass(frozen=True)
class ExporterConfig:
    """Where and how records are shipped. Headers and credentials live only here, never in the WAL."""

    endpoints: tuple[str, ...]
    protocol: str = "grpc"
    headers: Mapping[str, str] = field(default_factory=dict)
    compression: str = "none"
    timeout: float = 10.0
    insecure: bool | None = None
    certificate_file: str | None = None
    client_key_file: str | None = None
    client_certificate_file: str | None = None

    def __repr__(self) -> str:
        # Headers often carry credentials: never print their values.
        return (
            f"ExporterConfig(endpoints={self.endpoints!r}, protocol={self.protocol!r}, "
            f"headers=<{len(self.headers)} hidden>, compression={self.compression!r}, timeout={self.timeout!r})"
        )


@dataclass(frozen=True)
class AuditConfig:
    """The resolved configuration of one pipeline. Build it with :func:`resolve_config`."""

    service_name: str
    wal_dir: Path
    exporter: ExporterConfig
    durability: str = "interval"
    fsync_interval: float = 0.2
    segment_bytes: int = 32 << 20
    max_bytes: int = 1 << 30
    full_policy: str = "block"
    full_timeout: float = 10.0
    fail_closed: bool = True
    batch_max_records: int = 512
    batch_max_bytes: int = 3 << 20
    retry_max_backoff: float = 30.0
    chain: bool = True
    hmac_key_file: str | None = None
    signing_key_file: str | None = None
    resource_attributes: Mapping[str, Any] = field(default_factory=dict)


# --- parsers: one per type; env values warn and fall back, explicit arguments raise -------------


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def _env_first(*names: str) -> tuple[str, str] | None:
    for name in names:
        value = _env(name)
        if value is not None:
            return name, value
    return None


def _parse_bool(name: str, raw: str) -> bool | None:
    lowered = raw.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    _log.warning("%s=%r is not a boolean (true/false); using the default", name, raw)
    return None


def _parse_number(name: str, raw: str, *, minimum: float) -> float | None:
    try:
        value = float(raw)
    except ValueError:
        _log.warning("%s=%r is not a number; using the default", name, raw)
        return None
    if value < minimum:
        _log.warning("%s=%r is below %s; using the default", name, raw, minimum)
        return None
    return value


def _parse_choice(name: str, raw: str, choices: tuple[str, ...]) -> str | None:
    value = raw.lower()
    if value not in choices:
        _log.warning("%s=%r is not one of %s; using the default", name, raw, ", ".join(choices))
        return None
    return value


def parse_headers(raw: str) -> dict[str, str]:
    """Parse the OTLP ``key=value,key2=value2`` header list (values URL-encoded, as the spec says)."""
    headers: dict[str, str] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            _log.warning("ignoring a malformed OTLP header entry (no key=value)")
            continue
        headers[unquote(key.strip()).lower()] = unquote(value.strip())
    return headers


def _choice_arg(name: str, value: str, choices: tuple[str, ...]) -> str:
    lowered = str(getattr(value, "value", value)).lower()
    if lowered not in choices:
        raise ConfigError(f"{name}={value!r} is not one of: {', '.join(choices)}")
    return lowered


def _number_arg(name: str, value: float, *, minimum: float, exclusive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number, got {type(value).__name__}")
    if value < minimum or (exclusive and value == minimum):
        bound = f"> {minimum}" if exclusive else f">= {minimum}"
        raise ConfigError(f"{name}={value!r} must be {bound}")
    return value


def default_wal_dir(service_name: str) -> Path:
    """A per-service directory under the user's state home: stable whatever the working directory."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in service_name) or "unknown_service"
    return Path(base) / "otel-audit" / safe


def _resolve_endpoints(protocol: str, endpoint: str | list[str] | tuple[str, ...] | None, http_path: str) -> tuple[str, ...]:
    """Apply the OTLP endpoint rules: signal-specific URLs are used as given, generic ones get the path."""
    if endpoint is not None:
        raw: list[str] = [endpoint] if isinstance(endpoint, str) else list(endpoint)
        source, is_signal_specific = "endpoint", False
    else:
        found = _env_first(OTEL_AUDIT_ENDPOINT, _OTLP_LOGS + "ENDPOINT", _OTLP + "ENDPOINT")
        if found is None:
            raw = [DEFAULT_GRPC_ENDPOINT if protocol == "grpc" else DEFAULT_HTTP_ENDPOINT]
            source, is_signal_specific = "default", False
        else:
            source, value = found
            raw = value.split(",")
            is_signal_specific = source == _OTLP_LOGS + "ENDPOINT"
    endpoints: list[str] = []
    for item in (e.strip() for e in raw):
        if not item:
            continue
        parts = urlsplit(item if "://" in item else f"http://{item}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{source}: {item!r} is not an http(s)://host:port URL")
        try:
            parts.port  # noqa: B018 - validates the port
        except ValueError as exc:
            raise ConfigError(f"{source}: {item!r} has a bad port: {exc}") from None
        url = f"{parts.scheme}://{parts.netloc}{parts.path}"
        if protocol == "http/protobuf" and not is_signal_specific and parts.path in ("", "/"):
            url = f"{parts.scheme}://{parts.netloc}{http_path}"
        endpoints.append(url)
    if not endpoints:
        raise ConfigError(f"{source}: no endpoint given")
    return tuple(endpoints)


def resolve_exporter_config(
    *,
    endpoint: str | list[str] | tuple[str, ...] | None = None,
    protocol: str | None = None,
    headers: Mapping[str, str] | None = None,
    compression: str | None = None,
    timeout: float | None = None,
    insecure: bool | None = None,
    certificate_file: str | None = None,
    client_key_file: str | None = None,
    client_certificate_file: str | None = None,
    http_path: str | None = None,
) -> ExporterConfig:
    """Resolve exporter settings: explicit argument, then OTEL_AUDIT_*, then OTEL_EXPORTER_OTLP_LOGS_*, then OTEL_EXPORTER_OTLP_*."""

    def otlp(suffix: str) -> str | None:
        found = _env_first(_OTLP_LOGS + suffix, _OTLP + suffix)
        return found[1] if found else None

    if protocol is not None:
        proto = _choice_arg("protocol", protocol, PROTOCOLS)
    else:
        found = _env_first(OTEL_AUDIT_PROTOCOL, _OTLP_LOGS + "PROTOCOL", _OTLP + "PROTOCOL")
        proto = (_parse_choice(found[0], found[1], PROTOCOLS) if found else None) or "grpc"

    path = http_path if http_path is not None else (_env(OTEL_AUDIT_HTTP_PATH) or DEFAULT_HTTP_PATH)
    if not path.startswith("/"):
        raise ConfigError(f"http_path={path!r} must start with '/'")

    if compression is not None:
        comp = _choice_arg("compression", compression, COMPRESSIONS)
    else:
        raw = otlp("COMPRESSION")
        comp = (_parse_choice("OTEL_EXPORTER_OTLP_COMPRESSION", raw, COMPRESSIONS) if raw else None) or "none"

    if timeout is not None:
        tout = _number_arg("timeout", timeout, minimum=0, exclusive=True)
    else:
        raw = otlp("TIMEOUT")
        # The OTLP spec gives this variable in milliseconds.
        parsed = _parse_number("OTEL_EXPORTER_OTLP_TIMEOUT", raw, minimum=1) if raw else None
        tout = parsed / 1000.0 if parsed else 10.0

    if headers is not None:
        hdrs = {str(k).lower(): str(v) for k, v in headers.items()}
    else:
        raw = otlp("HEADERS")
        hdrs = parse_headers(raw) if raw else {}

    if insecure is None:
        raw = otlp("INSECURE")
        insecure = _parse_bool("OTEL_EXPORTER_OTLP_INSECURE", raw) if raw else None

    cert = certificate_file if certificate_file is not None else otlp("CERTIFICATE")
    ckey = client_key_file if client_key_file is not None else otlp("CLIENT_KEY")
    ccert = client_certificate_file if client_certificate_file is not None else otlp("CLIENT_CERTIFICATE")
    for label, fpath in (("certificate_file", cert), ("client_key_file", ckey), ("client_certificate_file", ccert)):
        if fpath is not None and not Path(fpath).is_file():
            raise ConfigError(f"{label}={fpath!r} does not exist or is not a file")
    if (ckey is None) != (ccert is None):
        raise ConfigError("mTLS needs both client_key_file and client_certificate_file")

    return ExporterConfig(
        endpoints=_resolve_endpoints(proto, endpoint, path),
        protocol=proto,
        headers=hdrs,
        compression=comp,
        timeout=float(tout),
        insecure=insecure,
        certificate_file=cert,
        client_key_file=ckey,
        client_certificate_file=ccert,
    )


def resolve_config(
    *,
    service_name: str | None = None,
    wal_dir: str | os.PathLike[str] | None = None,
    durability: str | None = None,
    fsync_interval: float | None = None,
    segment_bytes: int | None = None,
    max_bytes: int | None = None,
    full_policy: str | None = None,
    full_timeout: float | None = None,
    fail_closed: bool | None = None,
    batch_max_records: int | None = None,
    batch_max_bytes: int | None = None,
    retry_max_backoff: float | None = None,
    chain: bool | None = None,
    hmac_key_file: str | None = None,
    signing_key_file: str | None = None,
    resource_attributes: Mapping[str, Any] | None = None,
    **exporter_args: Any,
) -> AuditConfig:
    """Resolve every setting once, at the boundary: a wrong explicit value raises ConfigError at once.

    Environment values that do not parse are logged and replaced by the default, as the OTel SDK does,
    so a typo in a deployment variable cannot take the host application down.
    """
    unknown = sorted(set(exporter_args) - _EXPORTER_ARGS)
    if unknown:
        # A misspelt option must not be silently ignored: name it and what is accepted.
        accepted = sorted(_EXPORTER_ARGS | set(inspect.signature(resolve_config).parameters) - {"exporter_args"})
        raise ConfigError(f"unknown option(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}")
    name = service_name or _env("OTEL_SERVICE_NAME") or "unknown_service"
    exporter = resolve_exporter_config(**exporter_args)

    def number(
        arg: float | None, env: str, default: float, *, minimum: float, scale: float = 1.0, exclusive: bool = False
    ) -> float:
        """Explicit values are in seconds/bytes; env values use the variable's unit (``scale`` converts)."""
        if arg is not None:
            label = env.removeprefix("OTEL_AUDIT_").lower().removesuffix("_millis")
            return _number_arg(label, arg, minimum=minimum if not exclusive else 0, exclusive=exclusive)
        raw = _env(env)
        parsed = _parse_number(env, raw, minimum=minimum) if raw else None
        return parsed * scale if parsed is not None else default

    def choice(arg: str | None, env: str, choices: tuple[str, ...], default: str) -> str:
        if arg is not None:
            return _choice_arg(env.removeprefix("OTEL_AUDIT_").lower(), arg, choices)
        raw = _env(env)
        return (_parse_choice(env, raw, choices) if raw else None) or default

    def flag(arg: bool | None, env: str, default: bool) -> bool:
        if arg is not None:
            if not isinstance(arg, bool):
                raise ConfigError(f"{env.removeprefix('OTEL_AUDIT_').lower()} must be True or False")
            return arg
        raw = _env(env)
        parsed = _parse_bool(env, raw) if raw else None
        return default if parsed is None else parsed

    cfg = AuditConfig(
        service_name=name,
        wal_dir=Path(wal_dir) if wal_dir is not None else Path(_env(OTEL_AUDIT_WAL_DIR) or default_wal_dir(name)),
        exporter=exporter,
        durability=choice(durability, OTEL_AUDIT_DURABILITY, DURABILITIES, "interval"),
        fsync_interval=number(
            fsync_interval, OTEL_AUDIT_FSYNC_INTERVAL_MILLIS, 0.2, minimum=1, scale=0.001, exclusive=True
        ),
        segment_bytes=int(number(segment_bytes, OTEL_AUDIT_SEGMENT_BYTES, 32 << 20, minimum=4096)),
        max_bytes=int(number(max_bytes, OTEL_AUDIT_MAX_BYTES, 1 << 30, minimum=4096)),
        full_policy=choice(full_policy, OTEL_AUDIT_FULL_POLICY, FULL_POLICIES, "block"),
        full_timeout=number(full_timeout, OTEL_AUDIT_FULL_TIMEOUT_MILLIS, 10.0, minimum=0, scale=0.001),
        fail_closed=flag(fail_closed, OTEL_AUDIT_FAIL_CLOSED, True),
        batch_max_records=int(number(batch_max_records, OTEL_AUDIT_BATCH_MAX_RECORDS, 512, minimum=1)),
        batch_max_bytes=int(number(batch_max_bytes, OTEL_AUDIT_BATCH_MAX_BYTES, 3 << 20, minimum=1024)),
        retry_max_backoff=number(
            retry_max_backoff, OTEL_AUDIT_RETRY_MAX_BACKOFF_MILLIS, 30.0, minimum=1, scale=0.001, exclusive=True
        ),
        chain=flag(chain, OTEL_AUDIT_CHAIN, True),
        hmac_key_file=hmac_key_file or _env(OTEL_AUDIT_HMAC_KEY_FILE),
        signing_key_file=signing_key_file or _env(OTEL_AUDIT_SIGNING_KEY_FILE),
        resource_attributes=dict(resource_attributes or {}),
    )
    if cfg.segment_bytes > cfg.max_bytes:
        raise ConfigError(f"segment_bytes={cfg.segment_bytes} is larger than max_bytes={cfg.max_bytes}")
    for label, fpath in (("hmac_key_file", cfg.hmac_key_file), ("signing_key_file", cfg.signing_key_file)):
        if fpath is not None and not Path(fpath).is_file():
            raise ConfigError(f"{label}={fpath!r} does not exist or is not a file")
    return cfg


_EXPORTER_ARGS = frozenset(inspect.signature(resolve_exporter_config).parameters)
