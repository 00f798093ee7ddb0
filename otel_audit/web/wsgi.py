"""WSGI middleware (Flask and any WSGI app): one durable audit record per request, before the response."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from types import TracebackType
from typing import Any, Protocol

from otel_audit.api import Audit
from otel_audit.web.mapping import (
    EVENT_NAME,
    REFUSAL_BODY,
    ActorLike,
    ActorResolver,
    RequestArrival,
    RequestAuditor,
    exception_type,
    request_annotations,
)

_log = logging.getLogger("otel_audit.web")

Environ = MutableMapping[str, Any]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]
Write = Callable[[bytes], object]


class StartResponse(Protocol):
    def __call__(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = ..., /
    ) -> Write: ...


WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

_REFUSAL_STATUS = "503 Service Unavailable"


def remote_user_actor(environ: Environ) -> ActorLike:
    """Default actor: ``REMOTE_USER``, set by the server or an authenticating middleware."""
    user = environ.get("REMOTE_USER")
    return str(user) if user else None


def werkzeug_route(environ: Environ) -> str | None:
    """The matched URL rule (``/users/<int:user_id>``) of a Flask/Werkzeug request, if any."""
    request = environ.get("werkzeug.request")
    rule = getattr(request, "url_rule", None)
    text = getattr(rule, "rule", None)
    return text if isinstance(text, str) else None


class AuditWSGIMiddleware:
    """Write one audit record per HTTP request, before the status line is handed to the server.

    The app's ``start_response`` is held until the record is persisted (per the durability mode;
    the collector is never waited for). If it cannot be persisted and the policy is fail-closed,
    the client gets a 503 instead. Wrap it *inside* OpenTelemetry's WSGI middleware so the record
    carries the server span's ids. For Flask, :func:`instrument_flask` also reports exceptions the
    app turned into a 500.

    Args: as :class:`otel_audit.web.asgi.AuditMiddleware`; ``actor`` gets the environ and defaults to
    ``REMOTE_USER``; ``route`` returns the route template (default: the Werkzeug URL rule).
    """

    def __init__(
        self,
        app: WSGIApp,
        audit: Audit | None = None,
        *,
        actor: ActorResolver | None = None,
        actions: Mapping[str, str] | None = None,
        exclude_paths: Iterable[str] = (),
        event_name: str = EVENT_NAME,
        fail_closed: bool | None = None,
        route: Callable[[Environ], str | None] = werkzeug_route,
    ) -> None:
        self.app = app
        self.auditor = RequestAuditor(
            audit,
            actor=actor,
            default_actor=remote_user_actor,
            actions=actions,
            exclude_paths=exclude_paths,
            event_name=event_name,
            fail_closed=fail_closed,
        )
        self.route = route

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if self.auditor.excluded(_path(environ)):
            return self.app(environ, start_response)
        return _Exchange(self, environ, start_response).run()


class _Exchange:
    """One request: holds start_response until the audit record is persisted."""

    def __init__(
        self, middleware: AuditWSGIMiddleware, environ: Environ, start_response: StartResponse
    ) -> None:
        self.middleware = middleware
        self.environ = environ
        self.start_response = start_response
        self.arrival = RequestArrival.now()
        self.held: tuple[str, list[tuple[str, str]], ExcInfo | None] | None = None
        self.server_write: Write | None = None
        self.decided = False
        self.refused = False

    def run(self) -> Iterable[bytes]:
        try:
            body = self.middleware.app(self.environ, self.held_start_response)
        except BaseException as exc:
            if not self.decided:
                self.decided = True
                if not self.persist(500, exc):
                    _log.error(
                        "fail-closed: request failed with %s and its audit record was not persisted", exc
                    )
            raise
        if not self.decided:
            self.decide()
        if self.refused:
            _close(body)
            return [REFUSAL_BODY]
        return body

    def held_start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Write:
        if self.decided and not self.refused:
            # A second call (an error page replacing a response not sent yet): pass it on.
            return self.start_response(status, headers, exc_info)
        self.held = (status, headers, exc_info)
        return self.write

    def write(self, data: bytes) -> None:
        """The legacy write() callable: the first write decides the response, so record first."""
        if not self.decided:
            self.decide()
        if self.refused or self.server_write is None:
            return
        self.server_write(data)

    def decide(self) -> None:
        self.decided = True
        status = _status_code(self.held[0]) if self.held is not None else None
        if self.persist(status, None):
            if self.held is not None:
                self.server_write = self.start_response(*self.held)
            return
        # The refusal body goes out as run()'s return value, even if the app streams via write().
        self.refused = True
        self.start_response(
            _REFUSAL_STATUS,
            [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(REFUSAL_BODY)))],
        )

    def persist(self, status: int | None, exc: BaseException | None) -> bool:
        environ = self.environ
        facts = self.arrival.facts(
            method=str(environ.get("REQUEST_METHOD", "")),
            path=_path(environ),
            scheme=environ.get("wsgi.url_scheme"),
            route=_safe_route(self.middleware.route, environ),
            client=environ.get("REMOTE_ADDR") or None,
            user_agent=environ.get("HTTP_USER_AGENT") or None,
            status=status,
            exception=exc,
        )
        return self.middleware.auditor.record(facts, environ)


def instrument_flask(app: Any, audit: Audit | None = None, **options: Any) -> AuditWSGIMiddleware:
    """Wrap ``app.wsgi_app`` in :class:`AuditWSGIMiddleware`, reporting the URL rule and handled exceptions.

    Flask turns an unhandled exception into a 500 before the middleware sees the response; the
    ``got_request_exception`` signal tells us the exception's type for ``error.type``. Wrap
    OpenTelemetry's WSGI middleware around ``app.wsgi_app`` *after* this call, so it is outside.
    """
    from flask import got_request_exception, request, request_started

    def note_route(sender: Any, **_: Any) -> None:
        # Flask clears environ["werkzeug.request"] before the middleware sees the response.
        rule = request.url_rule
        if rule is not None:
            request_annotations(request).route = rule.rule

    def note_exception(sender: Any, exception: BaseException, **_: Any) -> None:
        request_annotations(request).error_type = exception_type(exception)

    # weak=False: the closures have no other reference and must live as long as the app.
    request_started.connect(note_route, app, weak=False)
    got_request_exception.connect(note_exception, app, weak=False)
    middleware = AuditWSGIMiddleware(app.wsgi_app, audit, **options)
    app.wsgi_app = middleware
    return middleware


def _path(environ: Environ) -> str:
    raw = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
    # PEP 3333 hands the path over as latin-1-decoded bytes; URLs are UTF-8.
    try:
        return raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return raw


def _status_code(status: str) -> int | None:
    try:
        return int(status.split(" ", 1)[0])
    except ValueError:
        return None


def _safe_route(route: Callable[[Environ], str | None], environ: Environ) -> str | None:
    try:
        return route(environ)
    except Exception:  # noqa: BLE001 - a route callable must not break the request
        _log.exception("route callable failed; recording the request without http.route")
        return None


def _close(body: Iterable[bytes]) -> None:
    close = getattr(body, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # noqa: BLE001 - the response is already replaced by the refusal
            _log.exception("closing the refused response's iterable failed")


__all__ = ["AuditWSGIMiddleware", "instrument_flask", "remote_user_actor", "werkzeug_route"]
