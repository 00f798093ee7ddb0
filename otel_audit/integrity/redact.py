"""Redaction of configured attributes before a record is built, hashed or written anywhere."""

from __future__ import annotations

import fnmatch
import hmac
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from otel_audit import config
from otel_audit.canonical import any_value_json
from otel_audit.exceptions import ConfigError
from otel_audit.integrity.signing import MIN_HMAC_KEY_BYTES, read_hmac_key_file

ENV_REDACT: Final = config.OTEL_AUDIT_REDACT
"""Rules as `key=action` pairs separated by commas: `password=drop,email=hmac,card=last4,*.secret=mask`.

Keys are attribute names or glob patterns, matched case-insensitively, at the top level and inside
nested maps. Actions: `drop`, `mask`, `last4`, `hmac`. Default: no redaction.
"""
ENV_REDACT_KEY_FILE: Final = config.OTEL_AUDIT_REDACT_KEY_FILE
"""File holding the HMAC key of `hmac` rules (format of OTEL_AUDIT_HMAC_KEY_FILE; use another key)."""
ENV_REDACT_MANDATORY: Final = config.OTEL_AUDIT_REDACT_MANDATORY
"""`true` allows exact rules on `audit.actor.id` (pseudonymous actors). Default: `false`."""

DROP: Final = "drop"
MASK: Final = "mask"
LAST4: Final = "last4"
HMAC: Final = "hmac"
ACTIONS: Final = (DROP, MASK, LAST4, HMAC)

MASK_TEXT: Final = "****"
HMAC_PREFIX: Final = "hmac-sha256:"

# Never redacted: the dedup key, the enumerated fields the data model validates, and what the
# chain, the signer and digests write themselves.
_NEVER: Final = frozenset(
    {"audit.record.id", "log.record.uid", "audit.actor.type", "audit.action", "audit.outcome"}
)
_NEVER_PREFIXES: Final = ("audit.sequence.", "audit.integrity.", "audit.digest.")
# Mandatory, but redactable when asked: who acted may itself be personal data.
_MANDATORY_REDACTABLE: Final = frozenset({"audit.actor.id"})
_MAX_CACHED_KEYS: Final = 4096
# build_audit_log_record's keyword arguments that carry attribute values, by attribute name.
_KWARG_ATTRIBUTES: Final = {
    "actor_id": "audit.actor.id",
    "target_id": "audit.target.id",
    "target_type": "audit.target.type",
    "source_id": "audit.source.id",
    "source_type": "audit.source.type",
}


@dataclass(frozen=True, slots=True)
class RedactRule:
    """One rule: attributes whose key matches `pattern` (a name or a glob) get `action`."""

    pattern: str
    action: str

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ConfigError(
                f"redaction rule {self.pattern}={self.action}: the action must be one of {ACTIONS}"
            )
        if not self.pattern:
            raise ConfigError(f"redaction rule ={self.action}: the attribute key is empty")


class Redactor:
    """Applies redaction rules to an attributes mapping; thread-safe, no I/O after construction.

    - `drop` removes the attribute; `mask` replaces its value with "****"; `last4` keeps the last
      four characters of a string of at least 8 ("****1234", a card number's usual form) and
      masks anything else; `hmac` replaces the value with "hmac-sha256:<hex>" of the key, so equal
      values stay equal (correlatable) without being readable, as Vault's audit hashing does.
      A string is hashed as its UTF-8 bytes (`printf %s VALUE | openssl dgst -sha256 -hmac KEY`
      reproduces it); any other value as the canonical JSON of its OTLP AnyValue, so 1 and "1"
      differ.
    - The first matching rule wins: exact names before globs, globs in the order given.
    - Keys of maps nested in a value are matched too, so `password` also catches
      `{"request": {"password": ...}}`.
    - Never touched: `audit.record.id`, `log.record.uid`, `audit.actor.type`, `audit.action`,
      `audit.outcome` and the `audit.sequence.*` / `audit.integrity.*` / `audit.digest.*`
      attributes. `audit.actor.id` only with an exact rule and `allow_mandatory=True`.

    Raises (constructor):
        ConfigError: an unknown action, an `hmac` rule without a key (or one under 32 bytes), or
            a rule on a protected attribute.
    """

    def __init__(
        self,
        rules: Mapping[str, str] | Iterable[RedactRule],
        hmac_key: bytes | None = None,
        *,
        allow_mandatory: bool = False,
    ) -> None:
        parsed = [RedactRule(k, v) for k, v in rules.items()] if isinstance(rules, Mapping) else list(rules)
        self._exact: dict[str, str] = {}
        globs: list[tuple[str, str]] = []
        for rule in parsed:
            key = rule.pattern.casefold()
            if _is_glob(key):
                globs.append((key, rule.action))
                continue
            if key in _NEVER or key.startswith(_NEVER_PREFIXES):
                raise ConfigError(
                    f"redaction rule {rule.pattern}={rule.action}: {rule.pattern} is never redacted"
                )
            if key in _MANDATORY_REDACTABLE:
                if not allow_mandatory:
                    raise ConfigError(
                        f"redaction rule {rule.pattern}={rule.action}: {rule.pattern} is mandatory; set"
                        f" {ENV_REDACT_MANDATORY}=true (allow_mandatory=True) to redact it anyway"
                    )
                if rule.action == DROP:
                    raise ConfigError(
                        f"redaction rule {rule.pattern}=drop: a mandatory attribute cannot be dropped"
                    )
            self._exact.setdefault(key, rule.action)
        self._globs = [(re.compile(fnmatch.translate(g)), a) for g, a in globs]
        if any(a == HMAC for a in [*self._exact.values(), *(a for _, a in globs)]):
            if hmac_key is None:
                raise ConfigError(f"an hmac redaction rule needs a key: set {ENV_REDACT_KEY_FILE}")
            if len(hmac_key) < MIN_HMAC_KEY_BYTES:
                raise ConfigError(
                    f"the redaction HMAC key has {len(hmac_key)} bytes; use at least {MIN_HMAC_KEY_BYTES}"
                )
        self._key = hmac_key
        self._cache: dict[str, str | None] = {}

    @property
    def empty(self) -> bool:
        """True when no rule exists: callers may skip `apply` altogether."""
        return not self._exact and not self._globs

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Redactor | None:
        """The redactor OTEL_AUDIT_REDACT configures, or None when it is unset or empty.

        Raises:
            ConfigError: a malformed rule, a missing or short key file.
        """
        env = os.environ if environ is None else environ
        raw = env.get(ENV_REDACT, "").strip()
        if not raw:
            return None
        rules = parse_rules(raw)
        key_file = env.get(ENV_REDACT_KEY_FILE)
        key = read_hmac_key_file(key_file) if key_file else None
        allow = env.get(ENV_REDACT_MANDATORY, "").strip().lower() in ("1", "true", "yes", "on")
        return cls(rules, key, allow_mandatory=allow)

    def apply(self, attributes: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of `attributes` with the rules applied; the input is not changed.

        Values that are mappings are redacted recursively (their keys matched by the same rules).
        Mandatory attributes in `attributes` (as `AuditLogger.emit` receives them) are left alone
        except as described on the class.
        """
        out: dict[str, Any] = {}
        for key, value in attributes.items():
            action = self._action(key, top_level=True) if type(key) is str else None
            if action is None:
                out[key] = self._nested(value) if _is_map(value) else value
            elif action != DROP:
                out[key] = self._redact(value, action)
        return out

    def apply_fields(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Redact `build_audit_log_record` keyword arguments: `attributes`, `body` and the fields
        that become attributes (`actor_id` as `audit.actor.id`, `target_id`, `source_id`, ...).

        A dropped optional field becomes None (not set). Other arguments pass unchanged.
        """
        out = dict(fields)
        named = {attr: out[kwarg] for kwarg, attr in _KWARG_ATTRIBUTES.items() if out.get(kwarg) is not None}
        if named:
            redacted = self.apply(named)
            for kwarg, attr in _KWARG_ATTRIBUTES.items():
                if attr in named:
                    out[kwarg] = redacted.get(attr)
        if out.get("attributes"):
            out["attributes"] = self.apply(out["attributes"])
        if out.get("body") is not None:
            out["body"] = self.apply_body(out["body"])
        return out

    def apply_body(self, body: Any) -> Any:
        """The body with map keys redacted at any depth (a string body is returned unchanged)."""
        return self._nested(body) if isinstance(body, Mapping) else body

    def _nested(self, value: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, item in value.items():
            action = self._action(key, top_level=False) if type(key) is str else None
            if action is None:
                out[key] = self._nested(item) if _is_map(item) else item
            elif action != DROP:
                out[key] = self._redact(item, action)
        return out

    def _action(self, key: str, *, top_level: bool) -> str | None:
        cache_key = key if top_level else "\0" + key
        try:
            return self._cache[cache_key]
        except KeyError:
            pass
        folded = key.casefold()
        action = self._exact.get(folded)
        if top_level and (folded in _NEVER or folded.startswith(_NEVER_PREFIXES)):
            action = None
        elif action is None and not (top_level and folded in _MANDATORY_REDACTABLE):
            action = next((a for pattern, a in self._globs if pattern.match(folded)), None)
        if len(self._cache) < _MAX_CACHED_KEYS:
            self._cache[cache_key] = action
        return action

    def _redact(self, value: Any, action: str) -> str:
        if action == MASK:
            return MASK_TEXT
        if action == LAST4:
            return MASK_TEXT + value[-4:] if type(value) is str and len(value) >= 8 else MASK_TEXT
        return hmac_text(self._key or b"", value)


def hmac_text(key: bytes, value: Any) -> str:
    """`hmac-sha256:<hex>` of a value, as the `hmac` action writes it (for lookups: hash, then search)."""
    if type(value) is str:
        data = value.encode("utf-8", "surrogatepass")
    else:
        from opentelemetry.proto.common.v1.common_pb2 import AnyValue

        from otel_audit.record import _set_any  # the builder's conversion, so the JSON is what a record holds

        any_value = AnyValue()
        _set_any(any_value, value, "redacted value", 0, None, 64)
        data = any_value_json(any_value).encode("utf-8")
    return HMAC_PREFIX + hmac.digest(key, data, "sha256").hex()


def parse_rules(text: str) -> list[RedactRule]:
    """Parse `key=action,key=action`; a malformed pair is a ConfigError naming it."""
    rules = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, action = part.rpartition("=")
        key, action = key.strip(), action.strip().lower()
        if not sep or not key:
            raise ConfigError(f"{ENV_REDACT}: {part!r} is not key=action (actions: {', '.join(ACTIONS)})")
        rules.append(RedactRule(key, action))
    return rules


def _is_map(value: object) -> bool:
    # Scalars are the common case: rule them out before the (slower) ABC check.
    return type(value) is dict or (
        type(value) not in (str, int, float, bool, bytes) and isinstance(value, Mapping)
    )


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


__all__ = [
    "ACTIONS",
    "DROP",
    "ENV_REDACT",
    "ENV_REDACT_KEY_FILE",
    "ENV_REDACT_MANDATORY",
    "HMAC",
    "HMAC_PREFIX",
    "LAST4",
    "MASK",
    "MASK_TEXT",
    "RedactRule",
    "Redactor",
    "hmac_text",
    "parse_rules",
]
