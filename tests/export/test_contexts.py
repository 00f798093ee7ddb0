"""The context store: durable, content-addressed, readable by other processes."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from otel_audit.exceptions import WALContextError
from otel_audit.export.contexts import ContextStore, context_id_of

from .protos import context_blob


def test_put_writes_one_private_file_named_by_the_blob_hash(tmp_path: Path) -> None:
    """The file is named by its id, holds the blob, and is 0600 in a 0700 directory."""
    blob = context_blob()
    cid = ContextStore(tmp_path).put(blob)
    assert cid == context_id_of(blob) and len(cid) == 8
    path = tmp_path / "contexts" / f"{cid.hex()}.pb"
    assert path.read_bytes() == blob
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "contexts").stat().st_mode) == 0o700
    assert [p.name for p in (tmp_path / "contexts").iterdir()] == [path.name]


def test_same_blob_twice_is_stored_once(tmp_path: Path) -> None:
    """A second put of the same context returns the same id without a new file."""
    store = ContextStore(tmp_path)
    a = store.put(context_blob("a"))
    assert store.put(context_blob("a")) == a
    b = store.put(context_blob("b"))
    assert a != b
    assert len(list((tmp_path / "contexts").glob("*.pb"))) == 2
    assert sorted(store.ids()) == sorted([a, b])


def test_a_fresh_store_reads_contexts_from_disk(tmp_path: Path) -> None:
    """Replay after a restart resolves ids written by the previous process."""
    cid = ContextStore(tmp_path).put(context_blob("x"))
    assert ContextStore(tmp_path).get(cid) == context_blob("x")


def test_missing_context_raises_an_error_naming_the_file(tmp_path: Path) -> None:
    """A missing file is a WALContextError with the id and path, so the sender can dead-letter."""
    with pytest.raises(WALContextError, match="does not exist") as info:
        ContextStore(tmp_path).get(b"\xab" * 8)
    assert info.value.context_id == "ab" * 8
    assert info.value.path.endswith(f"{'ab' * 8}.pb")


def test_corrupted_context_file_is_detected_by_its_hash(tmp_path: Path) -> None:
    """Flipped bytes in a context file are refused, not spliced into requests."""
    cid = ContextStore(tmp_path).put(context_blob())
    path = tmp_path / "contexts" / f"{cid.hex()}.pb"
    data = bytearray(path.read_bytes())
    data[3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WALContextError, match="corrupt"):
        ContextStore(tmp_path).get(cid)


def test_put_repairs_a_corrupted_file(tmp_path: Path) -> None:
    """A new process putting the same context rewrites a damaged file atomically."""
    cid = ContextStore(tmp_path).put(context_blob())
    path = tmp_path / "contexts" / f"{cid.hex()}.pb"
    path.write_bytes(b"garbage")
    assert ContextStore(tmp_path).put(context_blob()) == cid
    assert ContextStore(tmp_path).get(cid) == context_blob()
    assert not list((tmp_path / "contexts").glob(".*tmp"))


def test_another_process_reads_contexts_without_writing(tmp_path: Path) -> None:
    """Read-only use (CLI, inspection) resolves ids and leaves the directory untouched."""
    cid = ContextStore(tmp_path).put(context_blob("ro"))
    before = sorted((p.name, p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    code = (
        "import sys; from otel_audit.export.contexts import ContextStore;"
        f"sys.stdout.buffer.write(ContextStore({str(tmp_path)!r}).get(bytes.fromhex({cid.hex()!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True).stdout
    assert out == context_blob("ro")
    assert sorted((p.name, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before
