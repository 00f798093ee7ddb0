"""Redaction drops, masks or HMACs configured attributes before a record exists, and never the protected ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from otel_audit.exceptions import ConfigError
from otel_audit.integrity.redact import Redactor, RedactRule, hmac_text, parse_rules
from otel_audit.record import build_audit_log_record

KEY = b"0123456789abcdef0123456789abcdef"

# Golden vectors, computed independently:
#   printf '%s' 'alice@example.com' | openssl dgst -sha256 -hmac 0123456789abcdef0123456789abcdef
#   printf '%s' '{"intValue":"42"}' | openssl dgst -sha256 -hmac 0123456789abcdef0123456789abcdef
#   printf '%s' 'ü€' | openssl dgst -sha256 -hmac 0123456789abcdef0123456789abcdef
EMAIL_HMAC = "hmac-sha256:841240d2a5b6654b3ae21fc4499db7b7867077cdd67c3e16cef1f9843e27d1fa"
INT_42_HMAC = "hmac-sha256:ee446784d95ec4bbbe3200b03a1f290c76497b67e9d374244ef96e865892bfa5"
UNICODE_HMAC = "hmac-sha256:943539471f64c29ee371375abf2c7a93186186cca52b0d5fc832d3b9e3823ea4"


def redactor(**rules: str) -> Redactor:
    return Redactor({k.replace("__", "."): v for k, v in rules.items()}, KEY)


def test_golden_vectors_for_each_action() -> None:
    r = Redactor(
        {"password": "drop", "email": "hmac", "card": "last4", "token": "mask", "n": "hmac", "name": "hmac"},
        KEY,
    )
    out = r.apply(
        {
            "password": "hunter2",
            "email": "alice@example.com",
            "card": "4111111111111111",
            "token": "abc",
            "n": 42,
            "name": "ü€",
            "kept": "visible",
        }
    )
    assert out == {
        "email": EMAIL_HMAC,
        "card": "****1111",
        "token": "****",
        "n": INT_42_HMAC,
        "name": UNICODE_HMAC,
        "kept": "visible",
    }


def test_equal_values_stay_correlatable_and_types_are_not_confused() -> None:
    r = redactor(email="hmac")
    assert (
        r.apply({"EMAIL": "alice@example.com"})["EMAIL"] == r.apply({"email": "alice@example.com"})["email"]
    )
    assert r.apply({"email": "alice@example.com"})["email"] == EMAIL_HMAC
    assert hmac_text(KEY, 42) != hmac_text(KEY, "42")
    assert hmac_text(b"another key 0123456789abcdef0123", "alice@example.com") != EMAIL_HMAC


def test_last4_masks_short_and_non_string_values_entirely() -> None:
    r = redactor(card="last4")
    assert r.apply({"card": "1234567"})["card"] == "****"
    assert r.apply({"card": 4111111111111111})["card"] == "****"
    assert r.apply({"card": "12345678"})["card"] == "****5678"


def test_keys_match_case_insensitively_by_glob_and_inside_nested_maps() -> None:
    r = Redactor(
        [RedactRule("*.secret", "mask"), RedactRule("Authorization", "drop"), RedactRule("*", "hmac")], KEY
    )
    assert r.apply({"db.secret": "s", "AUTHORIZATION": "Bearer x"}) == {"db.secret": "****"}
    nested = Redactor({"password": "drop", "ssn": "mask"}).apply(
        {
            "request": {"user": "bob", "password": "pw", "profile": {"SSN": "123"}},
            "list": [{"password": "kept"}],
        }
    )
    assert nested == {"request": {"user": "bob", "profile": {"SSN": "****"}}, "list": [{"password": "kept"}]}


def test_exact_rules_win_over_globs_and_globs_keep_their_order() -> None:
    r = Redactor(
        [RedactRule("user.*", "mask"), RedactRule("user.email", "hmac"), RedactRule("user.e*", "drop")], KEY
    )
    assert r.apply({"user.email": "alice@example.com", "user.eid": "7", "user.x": "y"}) == {
        "user.email": EMAIL_HMAC,
        "user.eid": "****",
        "user.x": "****",
    }


def test_the_input_is_not_changed() -> None:
    attributes: dict[str, Any] = {"password": "pw", "nested": {"password": "pw"}}
    redactor(password="drop").apply(attributes)
    assert attributes == {"password": "pw", "nested": {"password": "pw"}}


@pytest.mark.parametrize(
    "key",
    [
        "audit.record.id",
        "log.record.uid",
        "audit.action",
        "audit.outcome",
        "audit.actor.type",
        "audit.sequence.number",
        "audit.integrity.value",
        "audit.digest.head.hash",
    ],
)
def test_protected_attributes_cannot_be_redacted(key: str) -> None:
    with pytest.raises(ConfigError, match="never redacted"):
        Redactor({key: "mask"})
    everything = Redactor({"*": "mask"})
    assert everything.apply({key: "v", "other": "v"}) == {key: "v", "other": "****"}


def test_the_actor_is_redacted_only_when_asked_and_never_dropped() -> None:
    with pytest.raises(ConfigError, match="OTEL_AUDIT_REDACT_MANDATORY"):
        Redactor({"audit.actor.id": "hmac"}, KEY)
    with pytest.raises(ConfigError, match="cannot be dropped"):
        Redactor({"audit.actor.id": "drop"}, allow_mandatory=True)
    assert Redactor({"audit.*": "mask"}).apply({"audit.actor.id": "bob"}) == {"audit.actor.id": "bob"}
    r = Redactor(
        {"audit.actor.id": "hmac", "audit.source.id": "mask", "audit.target.id": "drop"},
        KEY,
        allow_mandatory=True,
    )
    fields = r.apply_fields(
        {
            "actor_id": "alice@example.com",
            "source_id": "203.0.113.9",
            "target_id": "t",
            "action": "LOGIN",
            "attributes": {"x": 1},
            "body": {"audit.target.id": "t"},
        }
    )
    assert fields == {
        "actor_id": EMAIL_HMAC,
        "source_id": "****",
        "target_id": None,
        "action": "LOGIN",
        "attributes": {"x": 1},
        "body": {},
    }


def test_a_record_built_from_redacted_fields_holds_no_secret() -> None:
    r = Redactor({"password": "drop", "email": "hmac", "audit.source.id": "hmac"}, KEY)
    fields = r.apply_fields(
        {
            "actor_id": "bob",
            "actor_type": "user",
            "action": "LOGIN",
            "outcome": "success",
            "source_id": "203.0.113.9",
            "attributes": {"email": "alice@example.com", "password": "hunter2"},
            "body": {"form": {"password": "hunter2"}},
        }
    )
    record = build_audit_log_record("user.login.success", **fields)
    wire = record.proto.SerializeToString() + record.canonical_bytes()
    for secret in (b"hunter2", b"alice@example.com", b"203.0.113.9"):
        assert secret not in wire
    assert EMAIL_HMAC.encode() in wire
    assert b"audit.source.type" not in wire  # a hashed address is no longer an ipv4 address


def test_hmac_rules_need_a_long_enough_key() -> None:
    with pytest.raises(ConfigError, match="OTEL_AUDIT_REDACT_KEY_FILE"):
        Redactor({"email": "hmac"})
    with pytest.raises(ConfigError, match="at least 32"):
        Redactor({"email": "hmac"}, b"short")
    assert Redactor({"email": "mask"}).apply({"email": "x"}) == {"email": "****"}


@pytest.mark.parametrize("text", ["password", "=drop", "password=shred", "a=drop,b"])
def test_malformed_rules_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        Redactor(parse_rules(text))


def test_from_env_reads_rules_key_file_and_the_mandatory_switch(tmp_path: Path) -> None:
    key_file = tmp_path / "redact.key"
    key_file.write_bytes(KEY)
    key_file.chmod(0o600)
    env = {
        "OTEL_AUDIT_REDACT": "password=drop, email=hmac ,card=last4,audit.actor.id=mask",
        "OTEL_AUDIT_REDACT_KEY_FILE": str(key_file),
        "OTEL_AUDIT_REDACT_MANDATORY": "true",
    }
    r = Redactor.from_env(env)
    assert r is not None and not r.empty
    assert r.apply({"password": "x", "email": "alice@example.com", "card": "4111111111111111"}) == {
        "email": EMAIL_HMAC,
        "card": "****1111",
    }
    assert Redactor.from_env({}) is None
    with pytest.raises(ConfigError):
        Redactor.from_env({"OTEL_AUDIT_REDACT": "email=hmac"})
