"""Hostile input gets a clear error, never a crash, and never damages what was already stored."""

from __future__ import annotations

import gzip
import math
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import otel_audit
from otel_audit.archive import ArchiveReader
from otel_audit.canonical import canonical_bytes
from otel_audit.exceptions import AuditWriteError, InvalidAuditRecordError, OtelAuditError, WALError
from otel_audit.integrity.verify import verify_archive, verify_wal
from otel_audit.record import build_audit_log_record
from otel_audit.wal import WAL, WALReader

from .builders import KEY, SIGNER, make_streams, write_archive, write_wal

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


class Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


def nested(depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = {"k": leaf}
    return leaf


hostile_scalars = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), min_size=1, max_size=3),
    st.binary(max_size=64),
    st.integers(),
    st.floats(),
    st.sampled_from(
        [math.nan, math.inf, -math.inf, None, True, Opaque(), {1, 2}, b"\xff\xfe", "x" * 100_000]
    ),
)
hostile_values = st.recursive(
    hostile_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(st.text(max_size=5), st.integers(), st.binary(max_size=3)), inner, max_size=4
        ),
    ),
    max_leaves=10,
) | st.integers(1, 60).map(lambda d: nested(d, "deep"))
hostile_keys = st.one_of(
    st.text(max_size=20), st.sampled_from(["", "\ud800", "audit.sequence.number", "a" * 5000])
)
hostile_text = st.one_of(
    st.text(max_size=30), st.none(), st.integers(), st.sampled_from(["\ud800", "x" * 10_000])
)


@st.composite
def record_calls(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "event_name": draw(st.one_of(st.just("user.login"), hostile_text)),
        "actor_id": draw(hostile_text),
        "actor_type": draw(st.one_of(st.just("user"), hostile_text)),
        "action": draw(st.one_of(st.just("LOGIN"), hostile_text)),
        "outcome": draw(st.one_of(st.just("success"), hostile_text)),
        "target_id": draw(st.one_of(st.none(), hostile_text)),
        "source_id": draw(st.one_of(st.none(), hostile_text)),
        "body": draw(st.one_of(st.none(), hostile_values)),
        "attributes": draw(st.dictionaries(hostile_keys, hostile_values, max_size=6)),
        "timestamp": draw(st.one_of(st.none(), st.integers(-5, 2**70), st.floats(), st.just("yesterday"))),
        "record_id": draw(st.one_of(st.none(), hostile_text)),
    }


@given(record_calls())
@SETTINGS
def test_the_record_builder_builds_a_consistent_record_or_names_the_problem(call: dict[str, Any]) -> None:
    event_name = call.pop("event_name")
    try:
        record = build_audit_log_record(event_name, **call)  # type: ignore[arg-type]
    except InvalidAuditRecordError as exc:
        assert str(exc)  # a message naming the field
        return
    assert record.canonical_bytes() == canonical_bytes(record.proto)
    assert len(record.proto.SerializeToString()) > 0


@pytest.fixture(scope="module")
def audit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[otel_audit.Audit]:
    """A real pipeline (WAL, chain, HMAC) whose collector is unreachable: every record stays on disk."""
    key_file = tmp_path_factory.mktemp("key") / "hmac.key"
    key_file.write_bytes(KEY)
    key_file.chmod(0o600)
    configured = otel_audit.configure(
        service_name="hostile",
        wal_dir=tmp_path_factory.mktemp("hostile") / "wal",
        endpoint="http://127.0.0.1:9",
        durability="never",
        fail_closed=True,
        hmac_key_file=str(key_file),
        max_bytes=64 << 20,
    )
    yield configured
    configured.shutdown(timeout=1.0)


# The pipeline's sender thread draws backoff jitter from `random`; Hypothesis notices and warns.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
@given(st.lists(record_calls(), min_size=1, max_size=4))
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_hostile_calls_to_record_leave_the_wal_verifiable(
    audit: otel_audit.Audit, calls: list[dict[str, Any]]
) -> None:
    """Whatever record() is given, the records persisted before and after still verify as one chain."""
    for call in calls:
        event_name = call.pop("event_name")
        try:
            audit.record(event_name, **call)  # type: ignore[arg-type]
        except (InvalidAuditRecordError, AuditWriteError) as exc:
            assert str(exc)
    receipt = audit.record("user.login", actor_id="ok", actor_type="user", action="LOGIN", outcome="success")
    assert receipt is not None
    report = verify_wal(audit.config.wal_dir, [SIGNER.verifier()])
    assert report.ok, [str(f) for f in report.findings]


# -- the WAL and archive readers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine_wal(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[int, bytes]]]:
    root = tmp_path_factory.mktemp("pristine") / "wal"
    write_wal(root, make_streams(30, streams=1, digest_every=None))
    return root, list(WALReader(root).read())


damage = st.tuples(
    st.sampled_from(["truncate", "overwrite", "append", "replace"]),
    st.floats(0, 1),
    st.binary(min_size=1, max_size=200),
)


@given(damage)
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_damaged_wal_segments_are_clear_errors_and_repair_keeps_every_whole_frame_before_the_damage(
    pristine_wal: tuple[Path, list[tuple[int, bytes]]], tmp_path_factory: pytest.TempPathFactory, spec: Any
) -> None:
    source, frames = pristine_wal
    how, where, junk = spec
    work = tmp_path_factory.mktemp("damaged") / "wal"
    shutil.copytree(source, work)
    (segment,) = (work / "segments").iterdir()
    data = segment.read_bytes()
    at = int(where * len(data))
    if how == "truncate":
        data = data[:at]
    elif how == "overwrite":
        data = data[:at] + junk + data[at + len(junk) :]
    elif how == "append":
        data += junk
    else:
        data = junk
    segment.write_bytes(data)
    intact = _frames_before(frames, at if how != "append" else len(data), how)
    try:
        read = list(WALReader(work).read())
        assert read[: len(intact)] == intact
    except WALError as exc:
        assert str(exc)
    report = verify_wal(work, [SIGNER.verifier()])  # the verifier copes too, whatever it finds
    assert report.records_read >= len(intact) or not report.ok
    with WAL.open(work, durability="never") as wal:  # a writer repairs (quarantines) instead of failing
        after = list(wal.read())
    assert after[: len(intact)] == intact


def _frames_before(frames: list[tuple[int, bytes]], at: int, how: str) -> list[tuple[int, bytes]]:
    """The frames wholly stored before byte `at` of the segment (all of them if only junk was appended)."""
    if how == "replace":
        return []
    from otel_audit.wal import frame
    from otel_audit.wal.segment import HEADER_SIZE

    out, pos = [], HEADER_SIZE
    for seq, payload in frames:
        pos += frame.HEADER_SIZE + len(payload)
        if pos > at:
            break
        out.append((seq, payload))
    return out


@given(st.binary(max_size=2000), st.floats(0, 1), st.booleans())
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_archive_reader_skips_what_it_cannot_read_and_keeps_the_rest(
    tmp_path_factory: pytest.TempPathFactory, junk: bytes, where: float, compress: bool
) -> None:
    directory = tmp_path_factory.mktemp("archive")
    streams = make_streams(12, streams=1, digest_every=None)
    clean = write_archive(directory / "clean.jsonl", streams, batch=4).read_bytes()
    hostile = clean[: int(where * len(clean))] + junk + b"\n" + clean  # damage, then an intact copy
    path = directory / ("hostile.jsonl.gz" if compress else "hostile.jsonl")
    if compress:
        data = gzip.compress(hostile)
        path.write_bytes(data[: max(10, int(where * len(data)))])  # a cut gzip stream as well
    else:
        path.write_bytes(hostile)
    records = list(ArchiveReader(path).records())  # never raises on content
    report = verify_archive(path, [SIGNER.verifier()])  # nor does the verifier
    if not compress:
        assert len(records) >= len(streams.records)
        assert [s.records for s in report.streams] == [len(streams.records)]
        assert report.kinds("problem") <= {"unreadable"}  # the junk, if it parsed as JSON at all


def test_a_hostile_verify_input_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    with pytest.raises(WALError, match="no WAL directory"):
        verify_wal(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(OtelAuditError, match="segments"):
        verify_wal(tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        verify_archive(tmp_path / str(uuid.uuid4()))
