"""A stdlib logging handler that sends audit log calls through the durable pipeline (WAL first)."""

from __future__ import annotations

import logging
import re
import threading
import traceback
from collections.abc import Mapping
from typing import Any, Final

from otel_audit.api import Audit, get_audit

SHORT_KEYS: Final[Mapping[str, str]] = {
    "actor_id": "audit.actor.id",
    "actor_type": "audit.actor.type",
    "action": "audit.action",
    "outcome": "audit.outcome",
    "target_id": "audit.target.id",
    "target_type": "audit.target.type",
    "source_id": "audit.source.id",
    "source_type": "audit.source.type",
    "record_id": "audit.record.id",
}
"""Short ``extra`` keys and the audit attribute each one sets; the full ``audit.*`` names work too."""

EVENT_NAME_KEY: Final = "event_name"
ATTRIBUTES_KEY: Final = "attributes"

DEFAULTS: Final[Mapping[str, str]] = {"audit.actor.type": "user", "audit.outcome": "unknown"}
"""Applied when a log call leaves them out; ``audit.actor.id`` becomes ``anonymous`` by itself."""

# Everything a LogRecord carries by itself; whatever else is in its __dict__ came from `extra`.
_STANDARD: Final = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
_ANY_VALUE_TYPES: Final = (str, bool, int, float, bytes, list, tuple, dict)
_NOT_NAME_CHARS: Final = re.compile(r"[^a-z0-9_.-]")
_OWN_LOGGERS: Final = "otel_audit"


class AuditLogHandler(logging.Handler):
    """Turns ``logging`` calls into audit records, persisted to the WAL before ``emit`` returns.

    ``logging.getLogger("audit").info("refund issued", extra={"actor_id": "u-1", "action": "REFUND",
    "outcome": "success", "target_id": "order/42", "payment.amount": 12.5})`` becomes a record whose
    Body is the message, whose EventName is ``extra["event_name"]`` or else the logger's name, and
    whose attributes are the ``audit.*`` keys (short or full names), every dotted key
    (``payment.amount``), the mapping under ``extra["attributes"]``, and ``exception.*`` when the call
    carries exc_info. Undotted keys that are not short names are ignored. Severity is not recorded
    (the audit data model leaves it unset).

    As logging requires, the handler never raises into the caller: a record that cannot be built
    or persisted goes to :meth:`handleError` and is counted in :attr:`failed`. So this bridge is
    fail-open whatever the Audit's policy; call ``Audit.record()`` where an action must not proceed
    unaudited. Records from otel-audit's own loggers are ignored, so attaching the handler to the
    root logger cannot loop.

    Args:
        audit: the pipeline; the process default (``otel_audit.get_audit()``) when None, looked up at
            each emit so the handler can be installed before ``configure()``.
        logger_name: the audit stream (``Audit.get_audit_logger(name)``, one hash chain); the
            Audit's default stream when None.
        level: the handler's level.
        defaults: attributes used when a call leaves them out, on top of :data:`DEFAULTS`
            (e.g. ``{"actor_type": "service"}``; short names work).
    """

    def __init__(
        self,
        audit: Audit | None = None,
        logger_name: str | None = None,
        level: int = logging.NOTSET,
        *,
        defaults: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(level)
        self._audit = audit
        self.logger_name = logger_name
        self.defaults = {**DEFAULTS, **{SHORT_KEYS.get(k, k): v for k, v in (defaults or {}).items()}}
        self.emitted = 0
        self.failed = 0
        self._inside = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == _OWN_LOGGERS or record.name.startswith(_OWN_LOGGERS + "."):
            return
        if getattr(self._inside, "active", False):
            return  # a log call made while persisting (by a library we call): never recurse
        self._inside.active = True
        try:
            audit = self._audit if self._audit is not None else get_audit()
            logger = audit.get_audit_logger(self.logger_name or audit.config.service_name)
            event_name, attributes = self.map_record(record)
            logger.emit(
                event_name,
                attributes,
                body=record.getMessage(),
                timestamp=int(record.created * 1e9),
            )
            self.emitted += 1
        except Exception:  # noqa: BLE001 - logging's contract: report through handleError, never raise
            self.failed += 1
            self.handleError(record)
        finally:
            self._inside.active = False

    def map_record(self, record: logging.LogRecord) -> tuple[str, dict[str, Any]]:
        """The EventName and attributes (for ``AuditLogger.emit``) of one log record."""
        attributes: dict[str, Any] = dict(self.defaults)
        event_name: str | None = None
        for key, value in record.__dict__.items():
            if key in _STANDARD or value is None:
                continue
            if key == EVENT_NAME_KEY:
                event_name = str(value)
            elif key == ATTRIBUTES_KEY and isinstance(value, Mapping):
                attributes.update({str(k): _any_value(v) for k, v in value.items() if v is not None})
            elif key in SHORT_KEYS:
                attributes[SHORT_KEYS[key]] = _any_value(value)
            elif "." in key:
                attributes[key] = _any_value(value)
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            cls = type(exc)
            attributes["exception.type"] = (
                cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
            )
            attributes["exception.message"] = str(exc)
            attributes["exception.stacktrace"] = "".join(traceback.format_exception(*record.exc_info))
        return event_name or event_name_for(record.name), attributes


def event_name_for(logger_name: str) -> str:
    """A valid EventName from a logger name: lower case, other characters as ``_`` (``My.Audit`` -> ``my.audit``)."""
    segments = []
    for segment in _NOT_NAME_CHARS.sub("_", logger_name.lower()).split("."):
        cleaned = segment.strip("_-")
        if cleaned:
            segments.append(cleaned)
    while segments and not segments[0][0].isalpha():
        segments[0] = segments[0].lstrip("0123456789_-")
        if not segments[0]:
            segments.pop(0)
    return ".".join(segments) or "log.record"


def _any_value(value: Any) -> Any:
    # extra often carries objects (a User, a UUID); their text is what an auditor wants, and a
    # type error here would lose the whole record.
    return value if isinstance(value, _ANY_VALUE_TYPES) else str(value)


__all__ = ["ATTRIBUTES_KEY", "AuditLogHandler", "DEFAULTS", "EVENT_NAME_KEY", "SHORT_KEYS", "event_name_for"]
