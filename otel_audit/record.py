"""The OTel audit data model: validate one audit event and build its OTLP LogRecord directly."""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.trace import get_current_span

from otel_audit.canonical import any_value_json, canonical_bytes_from_parts, json_string
from otel_audit.exceptions import InvalidAuditRecordError

_logger = logging.getLogger(__name__)

# Attribute names of the draft's data model (specification/audit/data-model.md).
ATTR_RECORD_ID: Final = "audit.record.id"
ATTR_LOG_RECORD_UID: Final = "log.record.uid"
ATTR_ACTOR_ID: Final = "audit.actor.id"
ATTR_ACTOR_TYPE: Final = "audit.actor.type"
ATTR_ACTION: Final = "audit.action"
ATTR_OUTCOME: Final = "audit.outcome"
ATTR_TARGET_ID: Final = "audit.target.id"
ATTR_TARGET_TYPE: Final = "audit.target.type"
ATTR_SOURCE_ID: Final = "audit.source.id"
ATTR_SOURCE_TYPE: Final = "audit.source.type"
ATTR_SCHEMA_VERSION: Final = "audit.schema.version"
# Ours: the keys whose string/bytes values were cut at the length limit.
ATTR_TRUNCATED: Final = "audit.truncated"

ACTOR_TYPES: Final = frozenset({"user", "service", "system"})
OUTCOMES: Final = frozenset({"success", "failure", "unknown"})
ANONYMOUS_ACTOR: Final = "anonymous"
_ACTOR_TYPE_JSON: Final = {t: '{"stringValue":"' + t + '"}' for t in ACTOR_TYPES}
_OUTCOME_JSON: Final = {o: '{"stringValue":"' + o + '"}' for o in OUTCOMES}

DEFAULT_MAX_VALUE_LENGTH: Final = 8192
DEFAULT_MAX_ATTRIBUTE_COUNT: Final = 128
DEFAULT_MAX_DEPTH: Final = 8
DEFAULT_MAX_FUTURE_SKEW_NS: Final = 1_000_000_000
MAX_RECORD_ID_LENGTH: Final = 256
MAX_EVENT_NAME_LENGTH: Final = 256
MAX_ACTION_LENGTH: Final = 64

# Set by the keyword arguments or later by the chain and the signer; accepting them in
# `attributes` would let a caller forge or contradict them.
_RESERVED_KEYS: Final = frozenset(
    {
        ATTR_RECORD_ID,
        ATTR_LOG_RECORD_UID,
        ATTR_ACTOR_ID,
        ATTR_ACTOR_TYPE,
        ATTR_ACTION,
        ATTR_OUTCOME,
        ATTR_TARGET_ID,
        ATTR_TARGET_TYPE,
        ATTR_SOURCE_ID,
        ATTR_SOURCE_TYPE,
        ATTR_TRUNCATED,
    }
)
_RESERVED_PREFIXES: Final = ("audit.sequence.", "audit.integrity.", "audit.digest.")
_KWARG_FOR_KEY: Final = {
    ATTR_RECORD_ID: "record_id",
    ATTR_LOG_RECORD_UID: "record_id",
    ATTR_ACTOR_ID: "actor_id",
    ATTR_ACTOR_TYPE: "actor_type",
    ATTR_ACTION: "action",
    ATTR_OUTCOME: "outcome",
    ATTR_TARGET_ID: "target_id",
    ATTR_TARGET_TYPE: "target_type",
    ATTR_SOURCE_ID: "source_id",
    ATTR_SOURCE_TYPE: "source_type",
}

_EVENT_NAME_RE: Final = re.compile(r"[a-z][a-z0-9_-]*(?:\.[a-z0-9][a-z0-9_-]*)*")
_ACTION_RE: Final = re.compile(r"[A-Z][A-Z0-9_]*")
_HOSTNAME_RE: Final = re.compile(
    r"(?=.{1,253}\.?$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_UINT64_MAX: Final = 2**64 - 1
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

ENV_VALUE_LENGTH_LIMIT: Final = "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT"
ENV_LOGRECORD_VALUE_LENGTH_LIMIT: Final = "OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT"
ENV_COUNT_LIMIT: Final = "OTEL_ATTRIBUTE_COUNT_LIMIT"
ENV_LOGRECORD_COUNT_LIMIT: Final = "OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT"


@dataclass(frozen=True, slots=True)
class AttributeLimits:
    """Bounds applied to every audit record built by `build_audit_log_record`.

    Args:
        max_value_length: string values longer than this (in characters) and bytes values longer
            than this (in bytes) are cut and their key listed in `audit.truncated`; None: no limit.
            The record id is never cut (a cut id would break deduplication): it is capped at 256.
        max_count: attributes per record, mandatory ones included; more is an error, never a drop.
        max_depth: nesting of arrays and maps inside one attribute value.
        max_future_skew_ns: a Timestamp up to this far after ObservedTimestamp is clamped to it
            (clock noise between hosts); further in the future is an error.
    """

    max_value_length: int | None = DEFAULT_MAX_VALUE_LENGTH
    max_count: int = DEFAULT_MAX_ATTRIBUTE_COUNT
    max_depth: int = DEFAULT_MAX_DEPTH
    max_future_skew_ns: int = DEFAULT_MAX_FUTURE_SKEW_NS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AttributeLimits:
        """Read the OTel limit variables; the log-record-specific ones win over the global ones.

        A malformed value is logged and ignored (the default applies): a typo in the environment
        must not stop an application from auditing.
        """
        env = os.environ if environ is None else environ
        length = _env_limit(env, ENV_LOGRECORD_VALUE_LENGTH_LIMIT)
        if length is None:
            length = _env_limit(env, ENV_VALUE_LENGTH_LIMIT)
        count = _env_limit(env, ENV_LOGRECORD_COUNT_LIMIT)
        if count is None:
            count = _env_limit(env, ENV_COUNT_LIMIT)
        return cls(
            max_value_length=DEFAULT_MAX_VALUE_LENGTH if length is None else length,
            max_count=DEFAULT_MAX_ATTRIBUTE_COUNT if count is None else count,
        )


def _env_limit(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        value = -1
    if value < 0:
        _logger.warning("%s=%r is not a non-negative integer; using the default", name, raw)
        return None
    return value


@functools.cache
def default_limits() -> AttributeLimits:
    """The limits from the environment, read once per process (the hot path must not parse env)."""
    return AttributeLimits.from_env()


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """A built audit record: the OTLP LogRecord, its id, and its attributes pre-rendered for hashing.

    `proto` is mutable on purpose: the chain and the signer append their attributes to it
    before it is serialized once into the WAL. Whoever appends a non-integrity attribute must
    go through `add_string`/`add_value` so `parts` (attribute key -> canonical JSON of its
    value, see `otel_audit.canonical.canonical_bytes_from_parts`) stays in step.
    """

    proto: LogRecord
    record_id: str
    parts: dict[str, str | None]

    def add_string(self, key: str, value: str) -> None:
        """Append a string attribute to the proto and to the canonical parts."""
        self.proto.attributes.add(key=key).value.string_value = value
        self.parts[key] = '{"stringValue":' + json_string(value) + "}"

    def add_value(self, key: str, value: AnyValue) -> None:
        """Append an attribute holding a copy of `value` to the proto and to the canonical parts."""
        kv = self.proto.attributes.add(key=key)
        kv.value.CopyFrom(value)
        self.parts[key] = any_value_json(value)

    def canonical_bytes(self) -> bytes:
        """The record's canonical bytes (RFC 8785), equal to `canonical.canonical_bytes(self.proto)`."""
        return canonical_bytes_from_parts(self.proto, self.parts)


@dataclass(frozen=True, slots=True)
class AuditReceipt:
    """What emitting an audit record returns (the draft's AuditReceipt).

    Attributes:
        record_id: the record's `audit.record.id`, unchanged.
        integrity_hash: SHA-256 of the record's canonical form (see `otel_audit.canonical`)
            as lowercase hex: the text the next record of the stream carries in
            `audit.sequence.previous_hash`.
        sink_timestamp: nanoseconds since the epoch when the record was persisted (WAL append
            per the durability mode) or acknowledged by the collector, per the wait mode.
    """

    record_id: str
    integrity_hash: str
    sink_timestamp: int


def build_audit_log_record(
    event_name: str,
    *,
    actor_id: str | int | None,
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
    observed_timestamp_ns: int | None = None,
    record_id: str | None = None,
    trace_id: int | None = None,
    span_id: int | None = None,
    trace_flags: int | None = None,
    limits: AttributeLimits | None = None,
) -> AuditRecord:
    """Validate an audit event against the draft data model and build its OTLP LogRecord.

    Pure and thread-safe; reads only the clock and the current span. Attribute order is fixed:
    record id, `log.record.uid`, actor id/type, action, outcome, target, source, the caller's
    attributes in their order, then `audit.truncated` when a value was cut.

    Args:
        event_name: the EventName, dot-separated lowercase segments (`user.login.success`).
        actor_id: who acted; None or "" becomes `anonymous`; an int is written as its decimal text.
        actor_type: `user`, `service` or `system`.
        action: an upper-case verb (`LOGIN`, `UPDATE`, `PASSWORD_RESET`).
        outcome: `success`, `failure` or `unknown`.
        target_type, target_id, source_id, source_type: optional; "" counts as not given.
            `source_type` is derived from `source_id` (ipv4/ipv6/hostname) when not given.
        body: optional AnyValue (str, bytes, number, bool, sequence, mapping); not truncated.
        attributes: further attributes; may not contain the keys set by the keyword arguments
            nor `audit.sequence.*` / `audit.integrity.*` / `audit.digest.*` (the chain, the signer
            and digest records own those).
        timestamp: when the action happened: an aware datetime or ns since the epoch;
            None means now (ObservedTimestamp).
        observed_timestamp_ns: when it was observed; None means now.
        record_id: the dedup key, stable across retries; a uuid4 is made when None.
        trace_id, span_id, trace_flags: explicit correlation; when trace_id and span_id are
            both None, the current span's context is used (if valid).
        limits: bounds; `default_limits()` (from the environment) when None.

    Returns:
        The AuditRecord (proto + record id).

    Raises:
        InvalidAuditRecordError: naming the offending field or attribute key.
    """
    lim = default_limits() if limits is None else limits
    _check_event_name(event_name)
    if record_id is None:
        record_id = new_record_id()
    else:
        _check_record_id(record_id)
    actor_text = _actor_id_text(actor_id)
    if actor_type not in ACTOR_TYPES:
        raise InvalidAuditRecordError(
            f"{ATTR_ACTOR_TYPE}: {actor_type!r} is not one of {sorted(ACTOR_TYPES)}"
        )
    _check_action(action)
    if outcome not in OUTCOMES:
        raise InvalidAuditRecordError(f"{ATTR_OUTCOME}: {outcome!r} is not one of {sorted(OUTCOMES)}")
    time_ns, observed_ns = _timestamps(timestamp, observed_timestamp_ns, lim.max_future_skew_ns)

    if trace_id is None and span_id is None:
        ctx = get_current_span().get_span_context()
        if ctx.is_valid:
            trace_id, span_id = ctx.trace_id, ctx.span_id
            if trace_flags is None:
                trace_flags = ctx.trace_flags

    rec = LogRecord(time_unix_nano=time_ns, observed_time_unix_nano=observed_ns, event_name=event_name)
    if trace_id:
        if type(trace_id) is not int or not 0 < trace_id < 2**128:
            raise InvalidAuditRecordError(f"trace_id: {trace_id!r} is not a 128-bit unsigned int")
        rec.trace_id = trace_id.to_bytes(16, "big")
    if span_id:
        if type(span_id) is not int or not 0 < span_id <= _UINT64_MAX:
            raise InvalidAuditRecordError(f"span_id: {span_id!r} is not a 64-bit unsigned int")
        rec.span_id = span_id.to_bytes(8, "big")
    if trace_flags:
        flags = int(trace_flags)
        if not 0 <= flags <= 0xFF:
            raise InvalidAuditRecordError(f"trace_flags: {trace_flags!r} is not in 0..255")
        rec.flags = flags

    max_len = lim.max_value_length
    truncated: list[str] = []
    add = rec.attributes.add
    record_id_json = '{"stringValue":' + json_string(record_id) + "}"
    parts: dict[str, str | None] = {ATTR_RECORD_ID: record_id_json, ATTR_LOG_RECORD_UID: record_id_json}
    add(key=ATTR_RECORD_ID).value.string_value = record_id
    add(key=ATTR_LOG_RECORD_UID).value.string_value = record_id
    _add_str(add, parts, ATTR_ACTOR_ID, actor_text, max_len, truncated)
    add(key=ATTR_ACTOR_TYPE).value.string_value = actor_type
    parts[ATTR_ACTOR_TYPE] = _ACTOR_TYPE_JSON[actor_type]
    add(key=ATTR_ACTION).value.string_value = action
    parts[ATTR_ACTION] = _string_json_cached(action)
    add(key=ATTR_OUTCOME).value.string_value = outcome
    parts[ATTR_OUTCOME] = _OUTCOME_JSON[outcome]
    if target_id:
        _add_optional(add, parts, ATTR_TARGET_ID, target_id, max_len, truncated)
    if target_type:
        _add_optional(add, parts, ATTR_TARGET_TYPE, target_type, max_len, truncated)
    if source_id:
        _add_optional(add, parts, ATTR_SOURCE_ID, source_id, max_len, truncated)
        if not source_type:
            source_type = source_type_of(source_id)
    if source_type:
        _add_optional(add, parts, ATTR_SOURCE_TYPE, source_type, max_len, truncated)

    count = len(parts) + (len(attributes) if attributes else 0)
    if count > lim.max_count:
        raise InvalidAuditRecordError(
            f"attributes: {count} attributes exceed the limit of {lim.max_count}"
            f" (set {ENV_COUNT_LIMIT} to raise it)"
        )
    if attributes:
        max_depth = lim.max_depth
        for key, value in attributes.items():
            if type(key) is not str or not key:
                raise InvalidAuditRecordError(f"attributes: key {key!r} is not a non-empty str")
            if key in _RESERVED_KEYS or key.startswith(_RESERVED_PREFIXES):
                raise InvalidAuditRecordError(_reserved_message(key))
            try:
                kv = add(key=key)
            except UnicodeEncodeError:
                raise InvalidAuditRecordError(
                    f"attributes: key {key!r} is not valid UTF-8 (lone surrogate)"
                ) from None
            if type(value) is str and (max_len is None or len(value) <= max_len):
                try:
                    kv.value.string_value = value
                except UnicodeEncodeError:
                    raise InvalidAuditRecordError(_surrogate_message(key)) from None
                parts[key] = '{"stringValue":' + json_string(value) + "}"
            else:
                if _set_any(kv.value, value, key, 0, max_len, max_depth):
                    truncated.append(key)
                parts[key] = any_value_json(kv.value)

    if truncated:
        kv = rec.attributes.add(key=ATTR_TRUNCATED)
        kv.value.array_value.values.extend(AnyValue(string_value=k) for k in truncated)
        parts[ATTR_TRUNCATED] = any_value_json(kv.value)
    if body is not None:
        _set_any(rec.body, body, "body", 0, None, lim.max_depth, homogeneous=False)
    return AuditRecord(rec, record_id, parts)


def new_record_id() -> str:
    """A random (version 4) UUID as text: 122 random bits from os.urandom, like uuid.uuid4().

    Formatted by hand because `str(uuid.uuid4())` costs twice as much, on every record.
    """
    x = os.urandom(16).hex()
    return f"{x[:8]}-{x[8:12]}-4{x[13:16]}-{_UUID_VARIANT[int(x[16], 16) & 3]}{x[17:20]}-{x[20:]}"


_UUID_VARIANT: Final = "89ab"


def source_type_of(source_id: str) -> str | None:
    """Classify a source address as `ipv4`, `ipv6` or `hostname`; None when it is none of them."""
    return _source_type_cached(source_id) if len(source_id) <= 255 else None


@functools.lru_cache(maxsize=4096)
def _source_type_cached(source_id: str) -> str | None:
    # Cached: client addresses repeat, and ip_address() costs microseconds per call.
    try:
        address = ipaddress.ip_address(source_id)
    except ValueError:
        return "hostname" if _HOSTNAME_RE.fullmatch(source_id) else None
    return "ipv4" if address.version == 4 else "ipv6"


def _check_event_name(event_name: object) -> None:
    if type(event_name) is not str or not _valid_event_name(event_name):
        raise InvalidAuditRecordError(
            f"EventName: {event_name!r} is not a dot-separated lowercase name such as"
            f" 'user.login.success' (segments of a-z, 0-9, '_' or '-', the first starting with a"
            f" letter, at most {MAX_EVENT_NAME_LENGTH} characters)"
        )


@functools.lru_cache(maxsize=1024)
def _valid_event_name(event_name: str) -> bool:
    return len(event_name) <= MAX_EVENT_NAME_LENGTH and _EVENT_NAME_RE.fullmatch(event_name) is not None


def _check_action(action: object) -> None:
    if type(action) is not str or not _valid_action(action):
        raise InvalidAuditRecordError(
            f"{ATTR_ACTION}: {action!r} is not an upper-case verb such as 'LOGIN' or 'PASSWORD_RESET'"
            f" (A-Z, 0-9, '_', starting with a letter, at most {MAX_ACTION_LENGTH} characters)"
        )


@functools.lru_cache(maxsize=1024)
def _valid_action(action: str) -> bool:
    return len(action) <= MAX_ACTION_LENGTH and _ACTION_RE.fullmatch(action) is not None


def _check_record_id(record_id: object) -> None:
    if type(record_id) is not str or not record_id or record_id.isspace():
        raise InvalidAuditRecordError(f"{ATTR_RECORD_ID}: {record_id!r} is not a non-empty str")
    if len(record_id) > MAX_RECORD_ID_LENGTH:
        raise InvalidAuditRecordError(
            f"{ATTR_RECORD_ID}: {len(record_id)} characters exceed {MAX_RECORD_ID_LENGTH}"
        )
    try:
        record_id.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidAuditRecordError(_surrogate_message(ATTR_RECORD_ID)) from None


def _actor_id_text(actor_id: object) -> str:
    if actor_id is None or actor_id == "":
        return ANONYMOUS_ACTOR
    if type(actor_id) is str:
        return actor_id
    if isinstance(actor_id, int) and not isinstance(actor_id, bool):
        return str(int(actor_id))
    raise InvalidAuditRecordError(
        f"{ATTR_ACTOR_ID}: {type(actor_id).__name__} is not a str (or int); got {actor_id!r}"
    )


def _timestamps(timestamp: datetime | int | None, observed: int | None, skew_ns: int) -> tuple[int, int]:
    now = time.time_ns()
    if observed is None:
        observed = now
    else:
        _check_ns("ObservedTimestamp", observed)
        if observed > now + skew_ns:
            raise InvalidAuditRecordError(
                f"ObservedTimestamp: {observed} is {(observed - now) / 1e9:.3f}s in the future"
            )
    if timestamp is None:
        return observed, observed
    if type(timestamp) is int:
        _check_ns("Timestamp", timestamp)
        ts = timestamp
    elif isinstance(timestamp, datetime):
        if timestamp.tzinfo is None or timestamp.utcoffset() is None:
            raise InvalidAuditRecordError(
                f"Timestamp: naive datetime {timestamp.isoformat()} is ambiguous; pass an aware one"
                " (tzinfo=timezone.utc)"
            )
        delta = timestamp - _EPOCH
        ts = (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000
        _check_ns("Timestamp", ts)
    else:
        raise InvalidAuditRecordError(
            f"Timestamp: {type(timestamp).__name__} is not a datetime or int nanoseconds"
        )
    if ts > observed:
        if ts - observed > skew_ns:
            raise InvalidAuditRecordError(
                f"Timestamp: {ts} is {(ts - observed) / 1e9:.3f}s after ObservedTimestamp {observed};"
                " the draft requires Timestamp <= ObservedTimestamp (check the clock)"
            )
        ts = observed  # clock noise within the tolerated skew
    return ts, observed


def _check_ns(name: str, value: object) -> None:
    if type(value) is not int or not 0 < value <= _UINT64_MAX:
        raise InvalidAuditRecordError(f"{name}: {value!r} is not a positive int of nanoseconds")


def _add_str(
    add: Any, parts: dict[str, str | None], key: str, value: str, max_len: int | None, truncated: list[str]
) -> None:
    if max_len is not None and len(value) > max_len:
        value = value[:max_len]
        truncated.append(key)
    try:
        add(key=key).value.string_value = value
    except UnicodeEncodeError:
        raise InvalidAuditRecordError(_surrogate_message(key)) from None
    parts[key] = '{"stringValue":' + json_string(value) + "}"


def _add_optional(
    add: Any, parts: dict[str, str | None], key: str, value: object, max_len: int | None, truncated: list[str]
) -> None:
    if type(value) is not str:
        raise InvalidAuditRecordError(f"{key}: {type(value).__name__} is not a str; got {value!r}")
    _add_str(add, parts, key, value, max_len, truncated)


@functools.lru_cache(maxsize=1024)
def _string_json_cached(value: str) -> str:
    return '{"stringValue":' + json_string(value) + "}"


def _reserved_message(key: str) -> str:
    kwarg = _KWARG_FOR_KEY.get(key)
    if kwarg is not None:
        return f"attributes: {key!r} is set by the {kwarg}= argument, not by attributes"
    return f"attributes: {key!r} is reserved (the chain, the signer, digests or truncation set it)"


def _surrogate_message(key: str) -> str:
    return (
        f"{key}: the string is not valid UTF-8 (it holds a lone surrogate); decode it with errors='replace'"
    )


def _category(value: object) -> str:
    # The homogeneity rule for arrays: one category per array, as OTel attribute arrays are.
    if isinstance(value, str):
        return "str"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, (bytes, bytearray)):
        return "bytes"
    if isinstance(value, Mapping):
        return "map"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__


def _set_any(
    target: AnyValue,
    value: object,
    key: str,
    depth: int,
    max_len: int | None,
    max_depth: int,
    *,
    homogeneous: bool = True,
) -> bool:
    """Write `value` into the AnyValue `target`; returns True when a string/bytes value was cut.

    Attribute arrays must be homogeneous (the OTel attribute rule, so backends can type a column);
    the Body is free-form AnyValue in the logs data model, so its arrays may mix types.
    """
    cut = False
    if isinstance(value, str):
        if max_len is not None and len(value) > max_len:
            value, cut = value[:max_len], True
        try:
            target.string_value = str.__str__(value)
        except UnicodeEncodeError:
            raise InvalidAuditRecordError(_surrogate_message(key)) from None
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise InvalidAuditRecordError(f"{key}: int {value} is outside the int64 range of OTLP")
        target.int_value = int(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidAuditRecordError(
                f"{key}: float {value!r} has no canonical JSON form (RFC 8785); store it as a string"
            )
        target.double_value = value
    elif isinstance(value, (bytes, bytearray)):
        if max_len is not None and len(value) > max_len:
            value, cut = value[:max_len], True
        target.bytes_value = bytes(value)
    elif isinstance(value, Mapping):
        if depth >= max_depth:
            raise InvalidAuditRecordError(f"{key}: nested deeper than {max_depth} levels")
        kvlist = target.kvlist_value
        kvlist.SetInParent()
        add = kvlist.values.add
        for sub_key, sub_value in value.items():
            if type(sub_key) is not str or not sub_key:
                raise InvalidAuditRecordError(f"{key}: map key {sub_key!r} is not a non-empty str")
            try:
                kv = add(key=sub_key)
            except UnicodeEncodeError:
                raise InvalidAuditRecordError(_surrogate_message(f"{key}.{sub_key!r}")) from None
            cut |= _set_any(kv.value, sub_value, key, depth + 1, max_len, max_depth, homogeneous=homogeneous)
    elif isinstance(value, (list, tuple)):
        if depth >= max_depth:
            raise InvalidAuditRecordError(f"{key}: nested deeper than {max_depth} levels")
        array = target.array_value
        array.SetInParent()
        if value:
            first = _category(value[0])
            add = array.values.add
            for item in value:
                if homogeneous and _category(item) != first:
                    raise InvalidAuditRecordError(
                        f"{key}: array mixes {first} and {_category(item)}; OTel arrays are homogeneous"
                    )
                cut |= _set_any(add(), item, key, depth + 1, max_len, max_depth, homogeneous=homogeneous)
    elif value is None:
        raise InvalidAuditRecordError(f"{key}: value is None; omit the key instead")
    else:
        raise InvalidAuditRecordError(
            f"{key}: unsupported value type {type(value).__name__}; use str, bool, int, float,"
            " bytes, or a list/tuple/mapping of those"
        )
    return cut


def now_ns() -> int:
    """Wall-clock nanoseconds; the clock used for ObservedTimestamp and receipts."""
    return time.time_ns()


__all__ = [
    "ACTOR_TYPES",
    "ANONYMOUS_ACTOR",
    "ATTR_ACTION",
    "ATTR_ACTOR_ID",
    "ATTR_ACTOR_TYPE",
    "ATTR_LOG_RECORD_UID",
    "ATTR_OUTCOME",
    "ATTR_RECORD_ID",
    "ATTR_SCHEMA_VERSION",
    "ATTR_SOURCE_ID",
    "ATTR_SOURCE_TYPE",
    "ATTR_TARGET_ID",
    "ATTR_TARGET_TYPE",
    "ATTR_TRUNCATED",
    "OUTCOMES",
    "AttributeLimits",
    "AuditReceipt",
    "AuditRecord",
    "build_audit_log_record",
    "default_limits",
    "new_record_id",
    "now_ns",
    "source_type_of",
]
