"""One application host of the scale-out tests: records audit events through otel_audit to a gateway list.

Usage: python app_host.py NAME WAL_DIR ENDPOINTS COUNT RATE IDS_FILE

ENDPOINTS is comma-separated (as in OTEL_AUDIT_ENDPOINT); RATE is records per second (0: as fast as
possible). Each acknowledged record id (record() returned its receipt: it is in the WAL) is written
to IDS_FILE in order. On stdout, one line each: ``ready``, ``written <count> <seconds>`` once all
are recorded, ``flushed <True|False> <seconds>`` once every record is acknowledged by a gateway (or
the flush timed out), ``stats <json>`` with the sender's requests, retries and exported
counts, then the process shuts down and exits 0 only if the flush succeeded.
"""

from __future__ import annotations

import json
import os
import sys
import time

import otel_audit

FLUSH_TIMEOUT_S = 120.0


def _say(line: str) -> None:
    os.write(1, (line + "\n").encode())


def main(argv: list[str]) -> int:
    name, wal_dir, endpoints, count_text, rate_text, ids_file = argv
    count, rate = int(count_text), float(rate_text)
    audit = otel_audit.configure(
        service_name=f"scaleout-{name}",
        wal_dir=wal_dir,
        endpoint=endpoints.split(","),
        protocol="grpc",
        durability="interval",
        fail_closed=True,
        timeout=2.0,
        retry_max_backoff=0.5,
    )
    _say("ready")
    start = time.monotonic()
    with open(ids_file, "w", encoding="ascii") as ids:
        for n in range(count):
            if rate > 0:
                # Pace against the start, not the previous record, so a slow call does not slow the rest.
                delay = start + n / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            receipt = audit.record(
                "document.update",
                actor_id=f"u-{n % 17}",
                actor_type="user",
                action="UPDATE",
                outcome="success",
                target_type="database.table",
                target_id=f"docs/{n}",
                attributes={"scaleout.host": name, "scaleout.n": n},
            )
            assert receipt is not None  # fail_closed: a failure raises instead
            ids.write(receipt.record_id + "\n")
    written = time.monotonic()
    _say(f"written {count} {written - start:.3f}")
    flushed = audit.force_flush(timeout=FLUSH_TIMEOUT_S)
    _say(f"flushed {flushed} {time.monotonic() - written:.3f}")
    stats = audit.stats()
    _say("stats " + json.dumps({k: stats.get(f"sender_{k}") for k in ("requests", "retries", "exported")}))
    audit.shutdown(timeout=5.0)
    return 0 if flushed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
