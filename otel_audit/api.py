"""The public audit API: configure(), Audit.record(), and the draft's AuditLogger.emit() returning receipts."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from opentelemetry.sdk.resources import Resource

from otel_audit.config import AuditConfig, resolve_config
from otel_audit.encoding import encode_context
from otel_audit.exceptions import ConfigError, OtelAuditError, WALError
from otel_audit.integrity import HmacSha256Signer, Signer, StreamChain, load_signing_key, stream_end_record
from otel_audit.integrity.digest import DigestPolicy, StreamDigester
from otel_audit.integrity.redact import Redactor
from otel_audit.pipeline import AuditPipeline, get_pipeline, persist_or_fail
from otel_audit.record import AuditReceipt, AuditRecord, build_audit_log_record

_log = logging.getLogger("otel_audit")

WAIT_PERSISTED = "persisted"
WAIT_DELIVERED = "delivered"
_WAITS = (WAIT_PERSISTED, WAIT_DELIVERED)

# The draft's mandatory attributes, as emit() receives them inside ``attributes``.
_ACTOR_ID = "audit.actor.id"
_ACTOR_TYPE = "audit.actor.type"
_ACTION = "audit.action"
_OUTCOME = "audit.outcome"
_RECORD_ID = "audit.record.id"
_TARGET_ID = "audit.target.id"
_TARGET_TYPE = "audit.target.type"
_SOURCE_ID = "audit.source.id"
_SOURCE_TYPE = "audit.source.type"


class AuditLogger:
    """Emits audit records of one stream (one hash chain) and returns a receipt for each.

    Safe for concurrent use: emits are serialised around the chain and the WAL append, so records are
    enqueued in the order they are received (the draft's concurrency requirement). The name is a
    stream label, not an InstrumentationScope (the draft keeps the scope for the library).
    """

    def __init__(self, audit: Audit, name: str, version: str | None, schema_url: str | None) -> None:
        if not name:
            _log.warning("get_audit_logger() was given an empty name; using 'default'")
            name = "default"
        self.name = name
        self.version = version
        self.schema_url = schema_url
        self._audit = audit
        # Signing rides on sealing, so a signer implies a chain even when chain=False was asked.
        self._chain = StreamChain(audit.signer) if audit.config.chain or audit.signer is not None else None
        self.digester = self._new_digester()

    def _new_digester(self) -> StreamDigester | None:
        policy = self._audit.digest_policy
        return StreamDigester(policy) if self._chain is not None and policy.enabled else None

    def emit(
        self,
        event_name: str,
        attributes: Mapping[str, Any],
        *,
        timestamp: datetime | int | None = None,
        observed_timestamp: int | None = None,
        body: Any = None,
        trace_id: int | None = None,
        span_id: int | None = None,
        trace_flags: int | None = None,
        wait: str = WAIT_PERSISTED,
        timeout: float | None = None,
    ) -> AuditReceipt | None:
        """Persist one audit record; return its receipt once it is durable per the durability mode.

        ``attributes`` carries the draft's mandatory ``audit.actor.id``, ``audit.actor.type``,
        ``audit.action`` and ``audit.outcome`` (and optionally ``audit.record.id``, reused as given so
        retries deduplicate). ``wait="delivered"`` blocks until the collector acknowledged the record.

        Raises:
            InvalidAuditRecordError: the record breaks the data model (always, in every mode).
            AuditWriteError: it could not be persisted (fail-closed only; fail-open returns None).
            AuditTimeoutError: ``wait="delivered"`` ran out of ``timeout``; the record is persisted and
                will still be delivered.
        """
        attrs = dict(attributes)
        return self._audit._emit(  # noqa: SLF001 - the logger is the facade's own front end
            self,
            event_name,
            actor_id=attrs.pop(_ACTOR_ID, None),
            actor_type=attrs.pop(_ACTOR_TYPE, None),
            action=attrs.pop(_ACTION, None),
            outcome=attrs.pop(_OUTCOME, None),
            record_id=attrs.pop(_RECORD_ID, None),
            target_id=attrs.pop(_TARGET_ID, None),
            target_type=attrs.pop(_TARGET_TYPE, None),
            source_id=attrs.pop(_SOURCE_ID, None),
            source_type=attrs.pop(_SOURCE_TYPE, None),
            attributes=attrs,
            body=body,
            timestamp=timestamp,
            observed_timestamp=observed_timestamp,
            trace_id=trace_id,
            span_id=span_id,
            trace_flags=trace_flags,
            wait=wait,
            timeout=timeout,
        )

    def _new_stream_in_child(self) -> None:
        # A forked child continuing the parent's stream would write the same sequence numbers as
        # the parent: two records claiming one place in one chain. The child starts its own stream.
        if self._chain is not None:
            self._chain = StreamChain(self._audit.signer)
            self.digester = self._new_digester()

    def close(self) -> AuditReceipt | None:
        """End the stream: write a last record with ``audit.sequence.end=true`` (graceful shutdown only)."""
        if self._chain is None or self._chain.last_number == 0 or self._chain.closed:
            return None
        return self._audit._persist(self, stream_end_record(), WAIT_PERSISTED, None, end=True)  # noqa: SLF001

    @property
    def chain(self) -> StreamChain | None:
        return self._chain


class Audit:
    """A configured audit pipeline: the object :func:`configure` returns. Thread-safe."""

    def __init__(
        self, config: AuditConfig, *, redactor: Redactor | None = None, digest: DigestPolicy | str | None = None
    ) -> None:
        self.config = config
        self.signer = _load_signer(config)
        # Redaction happens before the record is built, so nothing it removes ever touches disk.
        chosen = redactor if redactor is not None else Redactor.from_env()
        self._redactor = None if chosen is None or chosen.empty else chosen
        if isinstance(digest, DigestPolicy):
            self.digest_policy = digest
        else:
            self.digest_policy = DigestPolicy.parse(digest) if digest is not None else DigestPolicy.from_env()
        attrs: dict[str, Any] = {"service.name": config.service_name, **config.resource_attributes}
        if self.signer is not None:
            attrs.update(self.signer.resource_attributes())
        self.resource = Resource.create(attrs)
        self.pipeline: AuditPipeline = get_pipeline(config)
        # The draft: InstrumentationScope "MUST be left empty" on audit records; the logger's name
        # is a stream label carried by the chain, not a scope.
        self._context_id = self.pipeline.context_id(encode_context(self.resource, None))
        self._loggers: dict[tuple[str, str | None, str | None], AuditLogger] = {}
        self._loggers_lock = threading.Lock()
        self._default = self.get_audit_logger(config.service_name)
        self._shutdown = False
        _LIVE.add(self)

    # -- the draft's provider ------------------------------------------------------------------

    def get_audit_logger(self, name: str, version: str | None = None, schema_url: str | None = None) -> AuditLogger:
        """Return the logger (one stream, one chain) for these parameters; identical calls share it."""
        key = (name, version, schema_url)
        with self._loggers_lock:
            logger = self._loggers.get(key)
            if logger is None:
                logger = AuditLogger(self, name, version, schema_url)
                self._loggers[key] = logger
            return logger

    # -- the convenient front door -------------------------------------------------------------

    def record(
        self,
        event_name: str,
        *,
        actor_id: str | None,
        actor_type: str,
        action: str,
        outcome: str,
        target_type: str | None = None,
        target_id: str | None = None,
        source_id: str | None = None,
        source_type: str | None = None,
        body: Any = None,
        attributes: Mapping[str, Any] | None = None,
        timestamp: datetime | int | None = None,
        record_id: str | None = None,
        trace_id: int | None = None,
        span_id: int | None = None,
        wait: str = WAIT_PERSISTED,
        timeout: float | None = None,
    ) -> AuditReceipt | None:
        """Persist one audit record on the service's default stream; see :meth:`AuditLogger.emit`."""
        return self._emit(
            self._default,
            event_name,
            actor_id=actor_id,
            actor_type=actor_type,
            action=action,
            outcome=outcome,
            record_id=record_id,
            target_id=target_id,
            target_type=target_type,
            source_id=source_id,
            source_type=source_type,
            attributes=dict(attributes) if attributes else {},
            body=body,
            timestamp=timestamp,
            observed_timestamp=None,
            trace_id=trace_id,
            span_id=span_id,
            trace_flags=None,
            wait=wait,
            timeout=timeout,
        )

    def _emit(self, logger: AuditLogger, event_name: str, *, wait: str, timeout: float | None, **fields: Any) -> AuditReceipt | None:
        if wait not in _WAITS:
            raise ConfigError(f"wait={wait!r} is not one of: {', '.join(_WAITS)}")
        observed = fields.pop("observed_timestamp")
        if self._redactor is not None:
            fields = self._redactor.apply_fields(fields)
        record = build_audit_log_record(event_name, observed_timestamp_ns=observed, **fields)
        return self._persist(logger, record, wait, timeout)

    def _persist(
        self, logger: AuditLogger, record: AuditRecord, wait: str, timeout: float | None, *, end: bool = False
    ) -> AuditReceipt | None:
        record_id = record.record_id
        result = persist_or_fail(
            lambda: self._persist_now(record, logger.chain, end),
            fail_closed=self.config.fail_closed,
            record_id=record_id,
            pipeline=self.pipeline,
        )
        if result is None:
            return None
        seq, digest = result
        receipt = AuditReceipt(record_id, digest.hex(), time.time_ns())
        if logger.digester is not None:
            self._persist_digest(logger, logger.digester.after_persist(record, digest))
        if wait == WAIT_DELIVERED:
            self.pipeline.wait_seq_delivered(seq, timeout if timeout is not None else self.config.exporter.timeout, record_id)
        return receipt

    def _persist_digest(self, logger: AuditLogger, due: AuditRecord | None) -> None:
        """Seal and persist a digest record the stream is due; the caller's own record is already safe."""
        if due is None or logger.digester is None:
            return
        try:
            ok = self._persist(logger, due, WAIT_PERSISTED, None) is not None
        except OtelAuditError:
            ok = False
        if not ok:
            # Not persisted: the next record may build another (a digest is evidence, not data).
            logger.digester.abandon(due)

    def _persist_now(self, record: AuditRecord, chain: StreamChain | None, end: bool) -> tuple[int, bytes]:
        if self._shutdown:
            # Treated like any other failure to persist, so fail-open callers still never see it.
            raise WALError("the audit pipeline is shut down; configure() a new one")
        return self.pipeline.persist_audit(self._context_id, record, chain, end=end)

    # -- lifecycle -----------------------------------------------------------------------------

    def wait_delivered(self, record_id: str, timeout: float = 10.0) -> None:
        """Block until the collector acknowledged ``record_id``; raises AuditTimeoutError otherwise."""
        self.pipeline.wait_delivered(record_id, timeout)

    def force_flush(self, timeout: float = 10.0) -> bool:
        """Wait until every record persisted so far is acknowledged; False when ``timeout`` ran out."""
        return self.pipeline.force_flush(timeout)

    def stats(self) -> dict[str, Any]:
        return self.pipeline.stats()

    def _after_fork_in_child(self) -> None:
        self._loggers_lock = threading.Lock()  # another thread of the parent may have held it at fork
        for logger in self._loggers.values():
            logger._new_stream_in_child()  # noqa: SLF001

    def shutdown(self, timeout: float = 10.0) -> None:
        """Close every stream (writing its end record), stop the sender, close the WAL. Idempotent."""
        if self._shutdown:
            return
        with self._loggers_lock:
            loggers = list(self._loggers.values())
        for logger in loggers:
            try:
                logger.close()
            except Exception:  # noqa: BLE001 - shutdown must go on; the stream then reads as "ended without close"
                _log.exception("could not write the end record of audit stream %r", logger.name)
        self._shutdown = True
        self.pipeline.shutdown(timeout)


def _load_signer(config: AuditConfig) -> Signer | None:
    if config.hmac_key_file and config.signing_key_file:
        raise ConfigError("set hmac_key_file or signing_key_file, not both: a record carries one proof")
    if config.hmac_key_file:
        return HmacSha256Signer.from_key_file(config.hmac_key_file)
    if config.signing_key_file:
        return load_signing_key(config.signing_key_file)
    return None


_global: Audit | None = None
_global_lock = threading.Lock()
_LIVE: weakref.WeakSet[Audit] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child keeps the parent's Audit objects; each gets new streams (its pipeline, a new shard)."""
    global _global_lock
    _global_lock = threading.Lock()
    for audit in list(_LIVE):
        audit._after_fork_in_child()  # noqa: SLF001


os.register_at_fork(after_in_child=_after_fork_in_child)


def configure(
    *, redactor: Redactor | None = None, digest: DigestPolicy | str | None = None, **kwargs: Any
) -> Audit:
    """Build the durable audit pipeline and make it the process's default.

    Keyword arguments are those of :func:`otel_audit.config.resolve_config` (``service_name``,
    ``wal_dir``, ``endpoint``, ``protocol``, ``durability``, ``fail_closed``, ...); anything not given
    comes from ``OTEL_AUDIT_*`` / ``OTEL_EXPORTER_OTLP_*`` variables, then defaults. Wrong values raise
    ConfigError before anything is written.

    Args:
        redactor: attribute redaction applied before a record is built (default: ``OTEL_AUDIT_REDACT``).
        digest: when each stream writes a signed digest record, e.g. ``"records=1000,seconds=60"`` or
            ``"off"`` (default: ``OTEL_AUDIT_DIGEST``, else every 1,000 records or 60 s).
    """
    global _global
    audit = Audit(resolve_config(**kwargs), redactor=redactor, digest=digest)
    with _global_lock:
        _global = audit
    return audit


def get_audit(**kwargs: Any) -> Audit:
    """The default Audit, configured from the environment on first use when configure() was not called."""
    global _global
    with _global_lock:
        if _global is None or _global._shutdown:  # noqa: SLF001
            _global = Audit(resolve_config(**kwargs))
        return _global


def get_audit_logger(name: str, version: str | None = None, schema_url: str | None = None) -> AuditLogger:
    """The draft's ``AuditProvider.get_audit_logger`` on the default provider."""
    return get_audit().get_audit_logger(name, version, schema_url)


@atexit.register
def _shutdown_at_exit() -> None:
    audit = _global
    if audit is not None:
        try:
            audit.shutdown(timeout=5.0)
        except Exception:  # noqa: BLE001 - interpreter is exiting; records stay on disk for replay
            _log.exception("otel-audit shutdown at exit failed; unsent records stay in the WAL")
