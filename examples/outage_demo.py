"""An app that keeps auditing through a collector outage: records go to the WAL, then out when it is back.

Run it against a local collector, stop the collector for a while, start it again, and watch the
backlog grow and drain (Ctrl-C or SIGTERM stops it gracefully; kill -9 it and run it again to see
the backlog replayed):

    .venv/bin/python examples/outage_demo.py --rate 20

`make demo` (examples/demo.py) runs this script as its application, under a real collector.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import otel_audit

ACTIONS = [
    ("document.read", "READ", "success"),
    ("document.update", "UPDATE", "success"),
    ("user.login.failure", "LOGIN", "failure"),
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=20.0, help="audit records per second (default 20)")
    parser.add_argument(
        "--duration", type=float, default=0.0, help="stop after SECONDS (default: run until stopped)"
    )
    parser.add_argument(
        "--ids-file", help="append each persisted record id to this file (the demo counts them)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args()

    trace.set_tracer_provider(TracerProvider())
    tracer = trace.get_tracer("outage-demo")
    audit = otel_audit.configure(service_name=os.environ.get("OTEL_SERVICE_NAME", "outage-demo"))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # Unbuffered appends: an id is in the file as soon as write() returns, so a SIGKILL loses none
    # of the ids written, just as it loses none of the records persisted.
    ids_fd = os.open(args.ids_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600) if args.ids_file else None

    sent = 0
    started = last_report = time.monotonic()
    try:
        while not stop.is_set() and (args.duration <= 0 or time.monotonic() - started < args.duration):
            event, action, outcome = ACTIONS[sent % len(ACTIONS)]
            # Each record is made inside a span: it carries that span's trace and span ids.
            with tracer.start_as_current_span(f"handle {event}"):
                receipt = audit.record(
                    event,
                    actor_id=f"user-{sent % 7}",
                    actor_type="user",
                    action=action,
                    outcome=outcome,
                    target_type="document",
                    target_id=f"doc-{sent % 13}",
                    source_id="198.51.100.7",
                    attributes={"demo.sequence": sent},
                )
            assert receipt is not None  # fail-closed (the default): a failure would have raised
            sent += 1
            if ids_fd is not None:
                os.write(ids_fd, f"{receipt.record_id}\n".encode())
            now = time.monotonic()
            if not args.quiet and now - last_report >= 1.0:
                last_report = now
                stats = audit.stats()
                print(
                    f"sent {sent}  delivered seq {stats['sender_delivered_seq']}  "
                    f"backlog {stats['backlog_records']}  last error {stats['sender_last_error'] or '-'}",
                    flush=True,
                )
            stop.wait(1.0 / args.rate)
    except KeyboardInterrupt:
        pass
    finally:
        delivered = audit.force_flush(timeout=5.0)
        stats = audit.stats()
        audit.shutdown(timeout=1.0)
        if ids_fd is not None:
            os.close(ids_fd)
        print(
            f"stopped after {sent} records; "
            + (
                "all delivered" if delivered else f"{stats['backlog_records']} wait in {audit.config.wal_dir}"
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
