"""A child application for the SIGKILL test: records audit events and prints each acknowledged record id.

Usage: python app_child.py WAL_DIR ENDPOINT PROTOCOL RUN (loop MAX_SECONDS | finish COUNT)

Protocol on stdout, one line per write (a single write of < PIPE_BUF bytes, so a SIGKILL never leaves
half a line): ``ready`` once configured, ``id <record_id>`` after each record() returned its receipt
(i.e. the record is acknowledged as persisted), ``flushed <True|False>`` after the final force_flush.
``loop`` records until killed (or MAX_SECONDS pass, so an orphan cannot run forever); ``finish``
records COUNT more, flushes, shuts down and exits 0 only if everything was delivered.
"""

from __future__ import annotations

import os
import sys
import time

import otel_audit


def _say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def main(argv: list[str]) -> int:
    wal_dir, endpoint, protocol, run, mode, amount = argv
    audit = otel_audit.configure(
        service_name="e2e-child",
        wal_dir=wal_dir,
        endpoint=endpoint,
        protocol=protocol,
        durability="interval",
        fail_closed=True,
        retry_max_backoff=0.5,
    )
    _say("ready")
    deadline = time.monotonic() + float(amount) if mode == "loop" else float("inf")
    count = int(amount) if mode == "finish" else sys.maxsize
    n = 0
    while n < count and time.monotonic() < deadline:
        receipt = audit.record(
            "document.update",
            actor_id=f"u-{n % 17}",
            actor_type="user",
            action="UPDATE",
            outcome="success",
            target_type="database.table",
            target_id=f"docs/{n}",
            source_id="198.51.100.7",
            attributes={"e2e.run": int(run), "e2e.n": n},
            body={"run": int(run), "n": n},
        )
        assert receipt is not None  # fail_closed: a failure raises instead
        _say(f"id {receipt.record_id}")
        n += 1
    if mode == "finish":
        flushed = audit.force_flush(timeout=30.0)
        _say(f"flushed {flushed}")
        audit.shutdown(timeout=10.0)
        return 0 if flushed else 1
    audit.shutdown(timeout=5.0)
    return 2  # the loop is meant to be killed; running out of time is a test failure


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
