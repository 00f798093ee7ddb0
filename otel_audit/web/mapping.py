"""What one HTTP request becomes as an audit record; shared by the ASGI and WSGI middleware."""

from __future__ import annotations

import fnmatch
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Final

from opentelemetry import trace

from otel_audit.api import Audit, get_audit
from otel_audit.exceptions import AuditWriteError
from otel_audit.record import ANONYMOUS_ACTOR

_log = logging.getLogger("otel_audit.web")

EVENT_NAME: Final = "http.request"
"""EventName of the record every audited request produces (override with ``event_name=``)."""

TARGET_TYPE: Final = "http.endpoint"

DURATION_ATTRIBUTE: Final = "http.server.request.duration"
"""Seconds from the request's arrival to the moment its response was decided (see docs/integrations.md)."""

ANNOTATIONS_KEY: Final = "otel_audit.request"
"""Key of the per-request :class:`Annotations` in the ASGI scope / WSGI environ."""

METHOD_ACTIONS: Final[Mapping[str, str]] = {
    "GET": "READ",
    "HEAD": "READ",
    "POST": "CREATE",
    "PUT": "UPDATE",
    "PATCH": "UPDATE",
    "DELETE": "DELETE",
}

REFUSAL_BODY: Final = b"audit log unavailable: the request was not processed\n"
"""The body of the 503 a fail-closed middleware answers when the request's record cannot be persisted."""

_NOT_ACTION_CHARS: Final = re.compile(r"[^A-Z0-9_]")


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made the request: ``audit.actor.id`` and ``audit.actor.type`` (user, service, system)."""

    id: str
    type: str = "user"


ANONYMOUS: Final = Actor(ANONYMOUS_ACTOR, "user")

ActorLike = Actor | str | tuple[str, str] | None
"""What an actor callable may return: an Actor, an id (type ``user``), ``(id, type)``, or None (anonymous)."""

ActorResolver = Callable[[MutableMapping[str, Any]], ActorLike]
"""Called with the ASGI scope or WSGI environ once the app has handled the request."""


@dataclass(slots=True)
class Annotations:
    """Per-request facts the application adds while it handles the request; they win over the defaults."""

    actor: Actor | None = None
    action: str | None = None
    target_id: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    error_type: str | None = None
    route: str | None = None


def request_annotations(request: Any) -> Annotations:
    """The request's :class:`Annotations`, created on first use.

    ``request`` is an ASGI scope or WSGI environ, or any object with a ``scope`` (Starlette,
    FastAPI) or ``environ`` (Flask, Werkzeug) attribute. The annotations live in that mapping, so
    the middleware, which holds the same mapping, finds them after the app returns.
    """
    carrier = _carrier(request)
    found = carrier.get(ANNOTATIONS_KEY)
    if isinstance(found, Annotations):
        return found
    created = Annotations()
    carrier[ANNOTATIONS_KEY] = created
    return created


def set_audit_actor(request: Any, actor_id: str, actor_type: str = "user") -> None:
    """Name the request's actor, e.g. right after authentication: ``set_audit_actor(request, user.id)``."""
    request_annotations(request).actor = Actor(actor_id, actor_type)


def set_audit_action(request: Any, action: str) -> None:
    """Replace the method-derived action for this request (``LOGIN``, ``PASSWORD_RESET``, ...)."""
    request_annotations(request).action = action


def add_audit_attributes(request: Any, attributes: Mapping[str, Any]) -> None:
    """Add attributes to this request's audit record (``{"enduser.id": ..., "user.roles": [...]}``)."""
    request_annotations(request).attributes.update(attributes)


def _carrier(request: Any) -> MutableMapping[str, Any]:
    if isinstance(request, MutableMapping):
        return request
    for name in ("scope", "environ"):
        carrier = getattr(request, name, None)
        if isinstance(carrier, MutableMapping):
            return carrier
    raise TypeError(
        f"{type(request).__name__} is neither an ASGI scope / WSGI environ nor a request with .scope or .environ"
    )


@dataclass(slots=True)
class RequestFacts:
    """What the middleware observed about one request, framework-neutral."""

    method: str
    path: str
    scheme: str | None
    route: str | None
    client: str | None
    user_agent: str | None
    start_ns: int
    duration_s: float
    status: int | None = None
    exception: BaseException | None = None
    trace_id: int | None = None
    span_id: int | None = None


def current_span_ids() -> tuple[int | None, int | None]:
    """Trace and span id of the current span (the instrumentation's server span), or (None, None).

    Taken when the request arrives, not at record time: by then the current span may be one of
    the instrumentation's internal "http send" spans, or the context may be gone.
    """
    ctx = trace.get_current_span().get_span_context()
    return (ctx.trace_id, ctx.span_id) if ctx.is_valid else (None, None)


@dataclass(frozen=True, slots=True)
class RequestArrival:
    """When a request arrived and the span it arrived in, taken by the middleware before the app runs."""

    start_ns: int
    started: float
    """``time.perf_counter()`` at arrival: the request's duration is measured from it."""
    trace_id: int | None
    span_id: int | None

    @classmethod
    def now(cls) -> RequestArrival:
        start_ns, started = time.time_ns(), time.perf_counter()
        trace_id, span_id = current_span_ids()
        return cls(start_ns, started, trace_id, span_id)

    def facts(
        self,
        *,
        method: str,
        path: str,
        scheme: str | None,
        route: str | None,
        client: str | None,
        user_agent: str | None,
        status: int | None,
        exception: BaseException | None,
    ) -> RequestFacts:
        """The request's facts, its duration running until now: call it once the response is decided."""
        return RequestFacts(
            method=method,
            path=path,
            scheme=scheme,
            route=route,
            client=client,
            user_agent=user_agent,
            start_ns=self.start_ns,
            duration_s=time.perf_counter() - self.started,
            status=status,
            exception=exception,
            trace_id=self.trace_id,
            span_id=self.span_id,
        )


def exception_type(exc: BaseException) -> str:
    """The fully qualified class name, as OTel's ``error.type`` wants it (builtins unqualified)."""
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def method_action(method: str) -> str:
    """GET/HEAD READ, POST CREATE, PUT/PATCH UPDATE, DELETE DELETE; any other method names itself."""
    upper = method.upper()
    action = METHOD_ACTIONS.get(upper)
    if action is not None:
        return action
    cleaned = _NOT_ACTION_CHARS.sub("_", upper).strip("_")
    return cleaned if cleaned and cleaned[0].isalpha() else "OTHER"


class RequestAuditor:
    """The policy both middlewares share: which requests, which attributes, and what a failure means.

    Thread-safe (it holds only configuration); ``record`` may run in a worker thread.
    """

    def __init__(
        self,
        audit: Audit | None = None,
        *,
        actor: ActorResolver | None = None,
        default_actor: ActorResolver | None = None,
        actions: Mapping[str, str] | None = None,
        exclude_paths: Iterable[str] = (),
        event_name: str = EVENT_NAME,
        fail_closed: bool | None = None,
    ) -> None:
        self._audit = audit
        self._actor = actor or default_actor
        self._actions = {_normalise_action_key(k): v for k, v in (actions or {}).items()}
        patterns = list(exclude_paths)
        self._exclude_exact = frozenset(p for p in patterns if not _is_glob(p))
        self._exclude_globs = tuple(p for p in patterns if _is_glob(p))
        self.event_name = event_name
        self._fail_closed = fail_closed

    @property
    def audit(self) -> Audit:
        """The Audit given, else the process default (resolved per request: configure() may come later)."""
        return self._audit if self._audit is not None else get_audit()

    @property
    def fail_closed(self) -> bool:
        return self._fail_closed if self._fail_closed is not None else self.audit.config.fail_closed

    def excluded(self, path: str) -> bool:
        """Exact paths (``/healthz``) or globs (``/static/*``) given as ``exclude_paths``."""
        if path in self._exclude_exact:
            return True
        return any(fnmatch.fnmatchcase(path, g) for g in self._exclude_globs)

    def record(self, facts: RequestFacts, carrier: MutableMapping[str, Any]) -> bool:
        """Persist the request's audit record; True when the response may go out as the app made it.

        False means fail-closed and the record is not on disk: the caller answers 503 instead. With
        fail-open every problem is logged and the request proceeds. Never raises.
        """
        try:
            if self.audit.record(self.event_name, **self.record_arguments(facts, carrier)) is not None:
                return True
            # The Audit is fail-open and already logged and counted the loss.
        except AuditWriteError as exc:
            _log.error("audit record for %s %s not persisted: %s", facts.method, facts.path, exc)
        except Exception:  # noqa: BLE001 - an actor callable or a bad override must not crash the server
            _log.exception("could not build the audit record for %s %s", facts.method, facts.path)
        try:
            return not self.fail_closed
        except Exception:  # noqa: BLE001 - configuring the default Audit failed: refuse, it cannot audit
            return False

    def record_arguments(self, facts: RequestFacts, carrier: MutableMapping[str, Any]) -> dict[str, Any]:
        """The keyword arguments of ``Audit.record`` for this request (exposed for tests and custom middleware)."""
        notes = carrier.get(ANNOTATIONS_KEY)
        if not isinstance(notes, Annotations):
            notes = Annotations()
        if notes.route:
            facts.route = notes.route
        actor = notes.actor or _as_actor(self._actor(carrier) if self._actor is not None else None)
        attributes: dict[str, Any] = {"http.request.method": facts.method}
        if facts.route:
            attributes["http.route"] = facts.route
        attributes["url.path"] = facts.path
        if facts.scheme:
            attributes["url.scheme"] = facts.scheme
        if facts.status is not None:
            attributes["http.response.status_code"] = facts.status
        attributes[DURATION_ATTRIBUTE] = facts.duration_s
        if facts.user_agent:
            attributes["user_agent.original"] = facts.user_agent
        outcome, error_type = _outcome(facts, notes)
        if error_type is not None:
            attributes["error.type"] = error_type
        attributes.update(notes.attributes)
        return {
            "actor_id": actor.id,
            "actor_type": actor.type,
            "action": notes.action or self._route_action(facts),
            "outcome": outcome,
            "target_type": TARGET_TYPE,
            "target_id": notes.target_id or facts.route or facts.path,
            "source_id": facts.client,
            "attributes": attributes,
            "timestamp": facts.start_ns,
            "trace_id": facts.trace_id,
            "span_id": facts.span_id,
        }

    def _route_action(self, facts: RequestFacts) -> str:
        if self._actions and facts.route:
            action = self._actions.get(f"{facts.method.upper()} {facts.route}") or self._actions.get(
                facts.route
            )
            if action:
                return action
        return method_action(facts.method)


def _outcome(facts: RequestFacts, notes: Annotations) -> tuple[str, str | None]:
    if facts.exception is not None:
        return "failure", exception_type(facts.exception)
    if notes.error_type is not None:
        return "failure", notes.error_type
    if facts.status is None:
        # The app returned without a response; the server answers 500 on its behalf.
        return "failure", "no_response"
    if facts.status >= 400:
        return "failure", str(facts.status)
    return "success", None


def _as_actor(value: ActorLike) -> Actor:
    if value is None or value == "":
        return ANONYMOUS
    if isinstance(value, Actor):
        return value
    if isinstance(value, str):
        return Actor(value)
    actor_id, actor_type = value
    return Actor(actor_id or ANONYMOUS_ACTOR, actor_type)


def _normalise_action_key(key: str) -> str:
    method, sep, route = key.partition(" ")
    return f"{method.upper()} {route.strip()}" if sep else key


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


__all__ = [
    "ANONYMOUS",
    "ANNOTATIONS_KEY",
    "Actor",
    "ActorLike",
    "ActorResolver",
    "Annotations",
    "DURATION_ATTRIBUTE",
    "EVENT_NAME",
    "METHOD_ACTIONS",
    "REFUSAL_BODY",
    "RequestArrival",
    "RequestAuditor",
    "RequestFacts",
    "TARGET_TYPE",
    "add_audit_attributes",
    "request_annotations",
    "current_span_ids",
    "exception_type",
    "method_action",
    "set_audit_action",
    "set_audit_actor",
]
