"""ASGI middleware (Starlette, FastAPI): one durable audit record per request, persisted before the response."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any

from otel_audit.api import Audit
from otel_audit.web.mapping import (
    EVENT_NAME,
    REFUSAL_BODY,
    Actor,
    ActorLike,
    ActorResolver,
    RequestArrival,
    RequestAuditor,
    RequestFacts,
)

_log = logging.getLogger("otel_audit.web")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def starlette_actor(scope: Scope) -> ActorLike:
    """Default actor: Starlette's ``scope["user"]`` (AuthenticationMiddleware) when authenticated."""
    user = scope.get("user")
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    try:
        identity = user.identity
    except (AttributeError, NotImplementedError):
        identity = getattr(user, "display_name", None)
    return Actor(str(identity)) if identity else None


class AuditMiddleware:
    """Write one audit record per HTTP request, before the response leaves the application.

    The response start is held back until the record is persisted (per the durability mode; the
    collector is never waited for). If it cannot be persisted and the policy is fail-closed, the
    client gets a 503 instead of the application's response, as Vault does when its audit devices
    fail. Put it *inside* OpenTelemetry's ASGI middleware so the record carries the server span's
    trace and span ids.

    Args:
        app: the ASGI application.
        audit: the pipeline; the process default (``otel_audit.get_audit()``) when None.
        actor: called with the scope after the app handled the request; returns an
            :class:`Actor`, an id, ``(id, type)`` or None (``anonymous``). Default: Starlette's
            authenticated ``scope["user"]``. ``set_audit_actor(request, ...)`` wins over both.
        actions: per-route actions, ``{"POST /login": "LOGIN", "/export": "EXPORT"}``, keyed by the
            route template; the method's action (GET READ, POST CREATE, ...) otherwise.
        exclude_paths: paths not audited: exact (``/healthz``) or globs (``/static/*``).
        event_name: the EventName, ``http.request`` by default.
        fail_closed: answer 503 when the record cannot be persisted; default: the Audit's policy.
        offload: persist in a worker thread so a slow disk (``durability="always"``, a full WAL with
            ``full_policy="block"``) never stalls the event loop. False persists inline, which saves
            a thread hop (tens of microseconds) when appends cannot block.
    """

    def __init__(
        self,
        app: ASGIApp,
        audit: Audit | None = None,
        *,
        actor: ActorResolver | None = None,
        actions: Mapping[str, str] | None = None,
        exclude_paths: Iterable[str] = (),
        event_name: str = EVENT_NAME,
        fail_closed: bool | None = None,
        offload: bool = True,
    ) -> None:
        self.app = app
        self.auditor = RequestAuditor(
            audit,
            actor=actor,
            default_actor=starlette_actor,
            actions=actions,
            exclude_paths=exclude_paths,
            event_name=event_name,
            fail_closed=fail_closed,
        )
        self.offload = offload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.auditor.excluded(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        await _Exchange(self, scope, send).run(receive)


class _Exchange:
    """One request: holds the response start until the audit record is persisted."""

    def __init__(self, middleware: AuditMiddleware, scope: Scope, send: Send) -> None:
        self.middleware = middleware
        self.scope = scope
        self.send = send
        self.root_path = str(scope.get("root_path", ""))
        self.arrival = RequestArrival.now()
        self.start_message: Message | None = None
        self.decided = False  # the record is written (or refused): what follows goes straight out
        self.refused = False  # fail-closed refusal: the app's remaining messages are dropped

    async def run(self, receive: Receive) -> None:
        try:
            await self.middleware.app(self.scope, receive, self.audit_send)
        except BaseException as exc:
            if not self.decided:
                self.decided = True
                # The held start (if any) never reached the client; the server (or Starlette's
                # ServerErrorMiddleware outside us) answers 500, and that is what we record.
                if not await self.persist(500, exc, inline=not isinstance(exc, Exception)):
                    _log.error(
                        "fail-closed: request failed with %s and its audit record was not persisted", exc
                    )
            raise
        if self.decided:
            return
        self.decided = True
        status = int(self.start_message["status"]) if self.start_message is not None else None
        if await self.persist(status, None):
            if self.start_message is not None:
                await self.send(self.start_message)
        else:
            await self.refuse()

    async def audit_send(self, message: Message) -> None:
        if self.refused:
            return
        if self.decided:
            await self.send(message)
            return
        if message["type"] == "http.response.start":
            self.start_message = message
            return
        if self.start_message is None:
            # Extension messages before the start (e.g. http.response.debug) are not the response.
            await self.send(message)
            return
        # The first message after the start: the response is decided, record it before it goes.
        self.decided = True
        if await self.persist(int(self.start_message["status"]), None):
            await self.send(self.start_message)
            await self.send(message)
        else:
            await self.refuse()

    async def persist(self, status: int | None, exc: BaseException | None, *, inline: bool = False) -> bool:
        facts = self.facts(status, exc)
        if self.middleware.offload and not inline:
            # to_thread copies the context; the ids are explicit anyway.
            return await asyncio.to_thread(self.middleware.auditor.record, facts, self.scope)
        return self.middleware.auditor.record(facts, self.scope)

    def facts(self, status: int | None, exc: BaseException | None) -> RequestFacts:
        scope = self.scope
        client = scope.get("client")
        return self.arrival.facts(
            method=str(scope.get("method", "")),
            path=str(scope.get("path", "")),
            scheme=scope.get("scheme"),
            route=route_template(scope, self.root_path),
            client=str(client[0]) if client else None,
            user_agent=_header(scope, b"user-agent"),
            status=status,
            exception=exc,
        )

    async def refuse(self) -> None:
        self.refused = True
        await self.send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(REFUSAL_BODY)).encode()),
                ],
            }
        )
        await self.send({"type": "http.response.body", "body": REFUSAL_BODY, "more_body": False})


def route_template(scope: Scope, entry_root_path: str = "") -> str | None:
    """The matched route's template (``/users/{user_id}``), prefixed by any Mount it sits under.

    Starlette's router stores the matched route in ``scope["route"]`` and grows ``root_path``
    while descending into Mounts, on the very dict the middleware holds.
    """
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return None
    prefix = str(scope.get("root_path", ""))[len(entry_root_path) :]
    if hasattr(route, "endpoint"):
        return prefix + path
    # A Mount serving a plain ASGI app (static files): its root_path already holds the mount path.
    if prefix.endswith(path):
        prefix = prefix[: len(prefix) - len(path)]
    return f"{prefix}{path}/{{path}}"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


__all__ = ["AuditMiddleware", "route_template", "starlette_actor"]
