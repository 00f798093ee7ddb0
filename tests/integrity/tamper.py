"""Mutations an attacker (or a broken disk) can make to archived or WAL-stored audit records, and clean controls.

Each mutation takes the records of a verified-clean input and returns a changed copy, or None when
the random choice turned out to change nothing the records claim (for example a bit flip that
only changes the case of a hex digit): those are not tampering and are counted, not verified.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import random
from collections.abc import Callable
from typing import Any

from otel_audit.canonical import canonical_bytes_from_otlp_json

Record = dict[str, Any]
Mutation = Callable[[list[Record], random.Random], "list[Record] | None"]

SEQ_NUMBER = "audit.sequence.number"
STREAM_ID = "audit.sequence.stream_id"
PROOF = "audit.integrity.value"


def attribute(record: Record, key: str) -> dict[str, Any] | None:
    for kv in record.get("attributes", []):
        if isinstance(kv, dict) and kv.get("key") == key:
            value = kv.get("value")
            return value if isinstance(value, dict) else None
    return None


def number(record: Record) -> int:
    value = attribute(record, SEQ_NUMBER)
    return int(value["intValue"]) if value else 0


def stream(record: Record) -> str:
    value = attribute(record, STREAM_ID)
    return str(value["stringValue"]) if value else ""


def claims(record: Record) -> tuple[bytes, str]:
    """What a record asserts: its canonical bytes and its proof (everything else is envelope)."""
    proof = attribute(record, PROOF) or {}
    return canonical_bytes_from_otlp_json(record), json.dumps(proof, sort_keys=True)


def _copy_with(records: list[Record], index: int) -> tuple[list[Record], Record]:
    out = list(records)
    out[index] = copy.deepcopy(records[index])
    return out, out[index]


def _scalars(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every scalar in a record, integrity attributes excluded (their own mutations test them)."""
    found: list[tuple[Any, ...]] = []
    if isinstance(node, dict):
        if str(node.get("key", "")).startswith("audit.integrity."):
            return found
        for key, item in node.items():
            if key != "key":
                found += _scalars(item, (*path, key))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            found += _scalars(item, (*path, index))
    else:
        found.append(path)
    return found


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        node = node[step]
    return node


def _set(node: Any, path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value


def _changed(value: Any, rng: random.Random, field: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + rng.choice([-1, 1, 7, 1000])
    if isinstance(value, float):
        return value + 1.0
    text = str(value)
    if field in ("intValue", "timeUnixNano", "observedTimeUnixNano"):
        return str(int(text) + rng.choice([-1, 1, 86_400_000_000_000]))
    if field in ("traceId", "spanId") or (len(text) == 64 and all(c in "0123456789abcdef" for c in text)):
        at = rng.randrange(len(text))
        return text[:at] + rng.choice([c for c in "0123456789abcdef" if c != text[at]]) + text[at + 1 :]
    if not text:
        return "x"
    at = rng.randrange(len(text))
    return text[:at] + rng.choice([c for c in "aZ9._-é" if c != text[at]]) + text[at + 1 :]


def flip_value(records: list[Record], rng: random.Random) -> list[Record] | None:
    """Change one covered scalar of one record: an attribute value, the body, a timestamp, an id."""
    out, target = _copy_with(records, rng.randrange(len(records)))
    path = rng.choice(_scalars(target))
    _set(target, path, _changed(_get(target, path), rng, path[-1]))
    return out


def flip_byte(records: list[Record], rng: random.Random) -> list[Record] | None:
    """Flip one bit of one record's JSON text; a result that no longer parses is a lost record."""
    index = rng.randrange(len(records))
    data = bytearray(json.dumps(records[index], separators=(",", ":"), ensure_ascii=False).encode())
    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    out = list(records)
    try:
        changed = json.loads(data.decode("utf-8"))
        if not isinstance(changed, dict):
            raise ValueError
        try:
            if claims(changed) == claims(records[index]):
                return None  # e.g. the case of a hex digit: the same claims
        except ValueError:
            pass  # no longer an OTLP record: the verifier reports it unreadable
        out[index] = changed
    except ValueError:
        del out[index]  # torn beyond parsing: the record is gone from the archive
    return out


def delete(records: list[Record], rng: random.Random) -> list[Record] | None:
    out = list(records)
    del out[rng.randrange(len(out))]
    return out


def delete_range(records: list[Record], rng: random.Random) -> list[Record] | None:
    sid = stream(rng.choice(records))
    numbers = sorted(number(r) for r in records if stream(r) == sid)
    start = rng.randrange(len(numbers))
    gone = set(numbers[start : start + rng.randint(2, 6)])
    return [r for r in records if stream(r) != sid or number(r) not in gone]


def truncate(records: list[Record], rng: random.Random) -> list[Record] | None:
    """Cut the tail of one stream (end record included), as deleting the newest lines does."""
    sid = stream(rng.choice(records))
    last = max(number(r) for r in records if stream(r) == sid)
    keep_below = last - rng.randint(1, 6)
    return [r for r in records if stream(r) != sid or number(r) <= keep_below]


def renumber(records: list[Record], rng: random.Random) -> list[Record] | None:
    """Swap the sequence numbers of two records of a stream (a reordering that sorting cannot undo)."""
    sid = stream(rng.choice(records))
    indexes = [i for i, r in enumerate(records) if stream(r) == sid]
    a, b = rng.sample(indexes, 2)
    out, first = _copy_with(records, a)
    out[b] = second = copy.deepcopy(records[b])
    na, nb = attribute(first, SEQ_NUMBER), attribute(second, SEQ_NUMBER)
    assert na is not None and nb is not None
    na["intValue"], nb["intValue"] = nb["intValue"], na["intValue"]
    return out


def duplicate_modified(records: list[Record], rng: random.Random) -> list[Record] | None:
    """A second copy of a record with other content under the same number (a 'corrected' copy)."""
    changed = flip_value([copy.deepcopy(rng.choice(records))], rng)
    assert changed is not None
    return [*records, changed[0]]


def move_between_streams(records: list[Record], rng: random.Random) -> list[Record] | None:
    out, target = _copy_with(records, rng.randrange(len(records)))
    sid = attribute(target, STREAM_ID)
    others = sorted({stream(r) for r in records} - {stream(target)})
    if sid is None or not others:
        return None
    sid["stringValue"] = rng.choice(others)
    return out


def forge_proof(records: list[Record], rng: random.Random) -> list[Record] | None:
    out, target = _copy_with(records, rng.randrange(len(records)))
    proof = attribute(target, PROOF)
    assert proof is not None
    raw = base64.b64decode(proof["stringValue"])
    choice = rng.randrange(3)
    if choice == 0:
        forged = bytes(rng.randrange(256) for _ in raw)
    elif choice == 1:
        forged = bytearray(raw)
        forged[rng.randrange(len(forged))] ^= 1 << rng.randrange(8)
        forged = bytes(forged)
    else:
        forged = raw[:-1]
    proof["stringValue"] = base64.b64encode(forged).decode()
    return out


def strip_proof(records: list[Record], rng: random.Random) -> list[Record] | None:
    out, target = _copy_with(records, rng.randrange(len(records)))
    target["attributes"] = [kv for kv in target["attributes"] if kv["key"] != PROOF]
    return out


def modify_and_relink(records: list[Record], rng: random.Random) -> list[Record] | None:
    """Edit a record and repair the chain after it (without the key): only the proofs can tell."""
    changed = flip_value(records, rng)
    assert changed is not None
    index = next(i for i, (a, b) in enumerate(zip(records, changed, strict=True)) if a is not b)
    edited = changed[index]
    successor = next(
        (i for i, r in enumerate(changed) if stream(r) == stream(edited) and number(r) == number(edited) + 1),
        None,
    )
    try:
        digest = hashlib.sha256(canonical_bytes_from_otlp_json(edited)).hexdigest()
    except ValueError:
        return changed
    if successor is not None:
        changed[successor] = copy.deepcopy(changed[successor])
        link = attribute(changed[successor], "audit.sequence.previous_hash")
        if link is not None:
            link["stringValue"] = digest
    return changed


def append_forged(records: list[Record], rng: random.Random) -> list[Record] | None:
    """A new record chained correctly behind a stream's last one, with a made-up proof."""
    sid = stream(rng.choice(records))
    last = max((r for r in records if stream(r) == sid), key=number)
    forged = copy.deepcopy(last)
    for kv in forged["attributes"]:
        if kv["key"] == SEQ_NUMBER:
            kv["value"]["intValue"] = str(number(last) + 1)
        elif kv["key"] in ("audit.record.id", "log.record.uid"):
            kv["value"]["stringValue"] = "00000000-0000-4000-8000-00000000f0f0"
        elif kv["key"] == "audit.sequence.previous_hash":
            kv["value"]["stringValue"] = hashlib.sha256(canonical_bytes_from_otlp_json(last)).hexdigest()
        elif kv["key"] == "audit.sequence.end":
            kv["value"]["boolValue"] = False
    return [*records, forged]


TAMPERING: dict[str, Mutation] = {
    "flip_value": flip_value,
    "flip_byte": flip_byte,
    "delete": delete,
    "delete_range": delete_range,
    "truncate": truncate,
    "renumber": renumber,
    "duplicate_modified": duplicate_modified,
    "move_between_streams": move_between_streams,
    "forge_proof": forge_proof,
    "strip_proof": strip_proof,
    "modify_and_relink": modify_and_relink,
    "append_forged": append_forged,
}


# -- clean controls: what redelivery and re-encoding legitimately do -----------------------------------


def shuffle(records: list[Record], rng: random.Random) -> list[Record]:
    out = list(records)
    rng.shuffle(out)
    return out


def redeliver(records: list[Record], rng: random.Random) -> list[Record]:
    out = list(records)
    at = rng.randrange(len(out))
    out[at:at] = rng.sample(records, rng.randint(1, 10))
    return out


def reencode(records: list[Record], rng: random.Random) -> list[Record]:
    """The same records as another OTLP/JSON writer may write them: numbers for ints, base64 ids."""
    out = copy.deepcopy(records)
    for record in rng.sample(out, max(1, len(out) // 3)):
        for kv in record.get("attributes", []):
            if "intValue" in kv["value"]:
                kv["value"]["intValue"] = int(kv["value"]["intValue"])
        for name in ("traceId", "spanId"):
            if record.get(name) and len(record[name]) in (16, 32):  # hex, not already base64
                record[name] = base64.b64encode(bytes.fromhex(record[name])).decode()
        record["attributes"].reverse()
    return out


CLEAN: dict[str, Callable[[list[Record], random.Random], list[Record]]] = {
    "shuffle": shuffle,
    "redeliver": redeliver,
    "reencode": reencode,
}
