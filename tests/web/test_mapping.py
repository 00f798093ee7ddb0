"""The request-to-record mapping shared by both middlewares, and its documentation."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import otel_audit
from otel_audit.web import Actor, method_action, request_annotations, set_audit_actor
from otel_audit.web.mapping import RequestAuditor, RequestFacts

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"


def facts(**overrides: Any) -> RequestFacts:
    base: dict[str, Any] = {
        "method": "POST",
        "path": "/orders/7/refund",
        "scheme": "https",
        "route": "/orders/{order_id}/refund",
        "client": "2001:db8::1",
        "user_agent": "curl/8",
        "start_ns": 1_700_000_000_000_000_000,
        "duration_s": 0.012,
        "status": 201,
    }
    base.update(overrides)
    return RequestFacts(**base)


@pytest.mark.parametrize(
    ("method", "action"),
    [
        ("GET", "READ"),
        ("head", "READ"),
        ("POST", "CREATE"),
        ("PUT", "UPDATE"),
        ("PATCH", "UPDATE"),
        ("DELETE", "DELETE"),
        ("OPTIONS", "OPTIONS"),
        ("M-SEARCH", "M_SEARCH"),
        ("-", "OTHER"),
    ],
)
def test_methods_map_to_upper_case_verbs(method: str, action: str) -> None:
    assert method_action(method) == action


def test_exclusions_take_exact_paths_and_globs(audit: otel_audit.Audit) -> None:
    auditor = RequestAuditor(audit, exclude_paths=["/healthz", "/static/*"])
    assert auditor.excluded("/healthz") and auditor.excluded("/static/css/a.css")
    assert not auditor.excluded("/healthz/deep") and not auditor.excluded("/api")


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        (None, ("anonymous", "user")),
        ("", ("anonymous", "user")),
        ("ann", ("ann", "user")),
        (("svc", "service"), ("svc", "service")),
        (Actor("cron", "system"), ("cron", "system")),
    ],
)
def test_actor_callable_results_are_normalised(
    audit: otel_audit.Audit, returned: Any, expected: tuple[str, str]
) -> None:
    auditor = RequestAuditor(audit, actor=lambda carrier: returned)
    args = auditor.record_arguments(facts(), {})
    assert (args["actor_id"], args["actor_type"]) == expected


def test_annotations_live_in_the_scope_of_any_request_shape() -> None:
    scope: dict[str, Any] = {}
    set_audit_actor(SimpleNamespace(scope=scope), "ann")
    environ: dict[str, Any] = {}
    set_audit_actor(SimpleNamespace(environ=environ), "bob", "service")
    assert request_annotations(scope).actor == Actor("ann", "user")
    assert request_annotations(environ).actor == Actor("bob", "service")
    with pytest.raises(TypeError):
        request_annotations(object())


def test_an_actor_callable_that_raises_refuses_when_fail_closed_and_serves_when_open(
    audit: otel_audit.Audit,
) -> None:
    def broken(carrier: Any) -> None:
        raise RuntimeError("token store down")

    assert RequestAuditor(audit, actor=broken, fail_closed=True).record(facts(), {}) is False
    assert RequestAuditor(audit, actor=broken, fail_closed=False).record(facts(), {}) is True
    assert audit.stats()["last_seq"] == 0


def test_every_attribute_the_middleware_sets_is_documented(audit: otel_audit.Audit) -> None:
    args = RequestAuditor(audit).record_arguments(facts(status=403), {})
    keys = set(args["attributes"]) | {
        "audit.actor.id",
        "audit.actor.type",
        "audit.action",
        "audit.outcome",
        "audit.target.id",
        "audit.target.type",
        "audit.source.id",
        "audit.source.type",
    }
    text = DOC.read_text()
    assert [k for k in sorted(keys) if f"`{k}`" not in text] == []
    assert args["attributes"]["error.type"] == "403" and args["outcome"] == "failure"
    assert args["timestamp"] == 1_700_000_000_000_000_000
