"""`otel-audit tail`: the last records, and -f following a WAL or an archive while it is written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from otel_audit.export.contexts import ContextStore
from otel_audit.export.payload import encode_payload
from otel_audit.wal import WAL

from .builders import Spec, build_record, context_message, request_line
from .conftest import Invoke

CLI = str(Path(sys.executable).with_name("otel-audit"))


def test_tail_prints_the_last_records_oldest_first(invoke: Invoke, source_args: list[str]) -> None:
    result = invoke("tail", *source_args, "-n", "3")
    assert result.exit_code == 0, result.output
    assert [int(line.split()[0]) for line in result.stdout.splitlines()[1:]] == [48, 49, 50]


class Follower:
    """`otel-audit tail -f` in a real subprocess, its stdout collected line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [CLI, "tail", "-f", "--interval", "0.05", "-n", "2", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def seqs(self) -> list[int]:
        return [int(x.split()[0]) for x in list(self.lines) if x.split() and x.split()[0].isdigit()]

    def wait_for(self, seq: int, timeout: float = 10.0) -> list[int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if seq in self.seqs():
                return self.seqs()
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
            time.sleep(0.02)
        raise AssertionError(f"seq {seq} never printed; got {self.seqs()}")

    def interrupt(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        code = self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        assert self.proc.stderr is not None
        return code, self.proc.stderr.read()


def test_follow_prints_records_appended_by_a_running_writer_and_ctrl_c_exits_0(wal_dir: Path) -> None:
    follower = Follower("--wal", str(wal_dir))
    try:
        assert follower.wait_for(50) == [49, 50]
        # The writer holds LOCK the whole time, as the application would: tail reads without it.
        contexts = ContextStore(wal_dir)
        cid = contexts.put(context_message().SerializeToString())
        with WAL.open(wal_dir, durability="never", segment_bytes=4096) as wal:
            for i in range(51, 71):
                wal.append(encode_payload(cid, build_record(Spec(i)).SerializeToString()))
            assert follower.wait_for(70) == list(range(49, 71))
    finally:
        code, err = follower.interrupt()
    assert code == 0, err
    assert "Traceback" not in err


def test_follow_an_archive_reads_lines_the_collector_appends(archive: Path) -> None:
    follower = Follower("--archive", str(archive))
    try:
        assert follower.wait_for(50) == [49, 50]
        with open(archive, "a") as f:
            f.write(request_line([Spec(51), Spec(52)]))
            f.flush()
            f.write(request_line([Spec(53)])[:40])  # half a line: not printed until it is whole
            f.flush()
            assert follower.wait_for(52) == [49, 50, 51, 52]
            time.sleep(0.3)
            assert follower.seqs() == [49, 50, 51, 52]
            f.write(request_line([Spec(53)])[40:])
        assert follower.wait_for(53) == [49, 50, 51, 52, 53]
    finally:
        code, err = follower.interrupt()
    assert code == 0, err


def test_follow_an_archive_across_rotation(archive: Path) -> None:
    follower = Follower("--archive", str(archive))
    try:
        follower.wait_for(50)
        # The file exporter renames the full file and starts a new one.
        os.rename(archive, archive.with_name("audit-2026-04-02T06-10-00.000.jsonl"))
        archive.write_text(request_line([Spec(51)]))
        assert follower.wait_for(51) == [49, 50, 51]
    finally:
        code, _ = follower.interrupt()
    assert code == 0
