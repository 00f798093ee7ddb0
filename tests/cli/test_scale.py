"""Paging a 1M-record WAL touches only the segments that hold the page: fast and memory-bounded."""

from __future__ import annotations

import shutil
import time
import tracemalloc
from pathlib import Path

from otel_audit.cli.sources import WalSource
from otel_audit.export.contexts import ContextStore
from otel_audit.export.payload import encode_payload
from otel_audit.wal import WAL

from .builders import Spec, build_record, context_message
from .conftest import Invoke

RECORDS = 1_000_000


def test_paging_a_million_record_wal_is_fast_and_memory_bounded(invoke: Invoke, tmp_path: Path) -> None:
    directory = tmp_path / "big"
    try:
        contexts = ContextStore(directory)
        with WAL.open(directory, durability="never", segment_bytes=8 << 20) as wal:
            cid = contexts.put(context_message().SerializeToString())
            payload = encode_payload(cid, build_record(Spec(1)).SerializeToString())
            for _ in range(RECORDS // 10_000):
                wal.append_many([payload] * 10_000)
        source = WalSource(directory)
        for before, first in ((None, RECORDS), (RECORDS // 2, RECORDS // 2 - 1), (101, 100)):
            started = time.perf_counter()
            page = source.newest(20, before)
            elapsed = time.perf_counter() - started
            assert [e.seq for e in page.entries] == list(range(first, first - 20, -1))
            assert page.next_before == first - 19
            assert elapsed < 2.0, f"a page before {before} took {elapsed:.2f}s"
        tracemalloc.start()
        try:
            source.newest(20, RECORDS // 2)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 16 << 20, f"paging held {peak / 1e6:.1f} MB"
        # And through the command line, cursor included.
        result = invoke("list", "--wal", directory, "--before", str(RECORDS // 2), "-n", "2")
        assert result.exit_code == 0, result.output
        assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == ["499999", "499998"]
        assert "next page: --before 499998" in result.stderr
    finally:
        shutil.rmtree(directory, ignore_errors=True)
