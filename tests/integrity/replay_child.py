"""A child application for the replay test: records audit events with the collector down, then waits to be killed.

Usage: python replay_child.py WAL_DIR ENDPOINT KEY_FILE COUNT

Prints ``r <record_id> <integrity_hash>`` after each receipt (one write each, below PIPE_BUF, so a
SIGKILL never leaves half a line), then ``done`` and sleeps until killed.
"""

from __future__ import annotations

import os
import sys
import time

import otel_audit


def main(wal_dir: str, endpoint: str, key_file: str, count: str) -> None:
    audit = otel_audit.configure(
        service_name="replay-child",
        wal_dir=wal_dir,
        endpoint=endpoint,
        durability="never",  # a SIGKILL keeps the page cache: nothing acknowledged is lost
        fail_closed=True,
        retry_max_backoff=0.2,
        hmac_key_file=key_file,
    )
    logger = audit.get_audit_logger("replay.second")
    for n in range(int(count)):
        if n % 3 == 2:
            receipt = logger.emit(
                "config.change",
                {
                    "audit.actor.id": "ops",
                    "audit.actor.type": "user",
                    "audit.action": "UPDATE",
                    "audit.outcome": "success",
                    "n": n,
                },
            )
        else:
            receipt = audit.record(
                "document.read",
                actor_id=f"u{n}",
                actor_type="user",
                action="READ",
                outcome="success",
                target_id=f"doc/{n}",
                attributes={"n": n},
                body={"n": n},
            )
        assert receipt is not None
        os.write(1, f"r {receipt.record_id} {receipt.integrity_hash}\n".encode())
    os.write(1, b"done\n")
    time.sleep(600)


if __name__ == "__main__":
    main(*sys.argv[1:])
