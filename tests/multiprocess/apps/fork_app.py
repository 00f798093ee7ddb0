"""A process that configures the audit pipeline, then forks: run by tests/multiprocess/test_fork.py.

Usage: ``python fork_app.py SCENARIO WAL_DIR ENDPOINT``; prints one JSON line per event on stdout.

- ``graceful``: the parent records, forks 3 children that record 200 each and exit, records again.
- ``killed``: a child records 500 records and SIGKILLs itself; the parent says ``child-dead`` and
  waits for a line on stdin before it drains the orphan the child left (the test starts the
  collector in between), then reports when no orphan is left.
- ``busy``: a thread of the parent records without pause (its sender always has a request in
  flight) while the main thread forks 10 children that record 50 each.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any

import otel_audit
from otel_audit.shards import ShardRoot

LOGIN: dict[str, Any] = {"actor_id": "u-1", "actor_type": "user", "action": "LOGIN", "outcome": "success"}


def say(**event: Any) -> None:
    print(json.dumps(event), flush=True)


def record(audit: otel_audit.Audit, who: str, n: int) -> None:
    for i in range(n):
        audit.record("user.login.success", **LOGIN, attributes={"who": who, "i": i})


def fork(body: Any) -> int:
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            body()
        except BaseException:  # noqa: BLE001 - report and leave with a failure code, never return to the caller
            import traceback

            traceback.print_exc()
            code = 1
        finally:
            # A forked child leaves through the normal exit path (atexit: flush, end records, shard removed).
            sys.stdout.flush()
            sys.exit(code)
    return pid


def wait_children(pids: list[int]) -> list[int]:
    return [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]


def no_orphans(root: str, own: str) -> bool:
    """No shard but this process's own: an orphan being drained is held by this process meanwhile."""
    return all(s.id == own for s in ShardRoot(root).status())


def main(scenario: str, wal_dir: str, endpoint: str) -> None:
    audit = otel_audit.configure(
        service_name="forker", wal_dir=wal_dir, endpoint=endpoint, retry_max_backoff=0.5
    )
    say(event="configured", shard=audit.stats()["shard_id"])
    if scenario == "graceful":
        record(audit, "parent", 3)
        pids = [fork(lambda k=k: record(audit, f"child-{k}", 200)) for k in range(3)]
        say(event="children", codes=wait_children(pids))
        record(audit, "parent", 3)
    elif scenario == "killed":

        def die() -> None:
            record(audit, "child", 500)
            os.kill(os.getpid(), signal.SIGKILL)

        say(event="child-dead", codes=wait_children([fork(die)]))
        sys.stdin.readline()
        deadline = time.monotonic() + 30
        own = audit.stats()["shard_id"]
        while not no_orphans(wal_dir, own) and time.monotonic() < deadline:
            time.sleep(0.1)
        say(event="drained", ok=no_orphans(wal_dir, own))
    elif scenario == "busy":
        stop = threading.Event()
        sent = [0]

        def loop() -> None:
            while not stop.is_set():
                audit.record("user.login.success", **LOGIN, attributes={"who": "parent", "i": sent[0]})
                sent[0] += 1

        thread = threading.Thread(target=loop)
        thread.start()
        pids = []
        for k in range(10):
            pids.append(fork(lambda k=k: record(audit, f"child-{k}", 50)))
            time.sleep(0.05)
        codes = wait_children(pids)
        stop.set()
        thread.join()
        say(event="children", codes=codes, parent_records=sent[0])
    assert audit.force_flush(30), "the parent's records were not all delivered"
    audit.shutdown(timeout=10)
    say(event="done")


if __name__ == "__main__":
    main(*sys.argv[1:4])
