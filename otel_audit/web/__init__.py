"""Web integrations: ASGI and WSGI middleware writing one durable audit record per HTTP request.

``otel_audit.web.asgi.AuditMiddleware`` (Starlette, FastAPI) and ``otel_audit.web.wsgi.AuditWSGIMiddleware``
/ ``instrument_flask`` (Flask) import no web framework at import time; see docs/integrations.md.
"""

from otel_audit.web.mapping import (
    ANNOTATIONS_KEY,
    DURATION_ATTRIBUTE,
    EVENT_NAME,
    METHOD_ACTIONS,
    TARGET_TYPE,
    Actor,
    ActorLike,
    ActorResolver,
    Annotations,
    add_audit_attributes,
    method_action,
    request_annotations,
    set_audit_action,
    set_audit_actor,
)

__all__ = [
    "ANNOTATIONS_KEY",
    "DURATION_ATTRIBUTE",
    "EVENT_NAME",
    "METHOD_ACTIONS",
    "TARGET_TYPE",
    "Actor",
    "ActorLike",
    "ActorResolver",
    "Annotations",
    "add_audit_attributes",
    "request_annotations",
    "method_action",
    "set_audit_action",
    "set_audit_actor",
]
