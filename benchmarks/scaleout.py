"""`python -m benchmarks.scaleout`: aggregate throughput of 1-3 producers through 1 and 2 gateway collectors.

Each producer is a separate process (its own WAL, otel_audit with the gateway list as endpoint)
recording as fast as it can; each gateway is collector-gateway.yaml (fsynced persistent queue)
forwarding to one archive collector (collector-config.yaml), all on 127.0.0.1. Two rates per run:
``acked`` counts records from the first record() to the moment the last producer's force_flush
returned (every record acknowledged by a gateway, i.e. fsynced in its queue), ``archived`` to the
moment the archive holds them all. With one gateway, the acked rate at the most producers is what
one gateway takes on this machine; the sizing in docs/deployment.md quotes it.

Also ``python -m benchmarks.scaleout --produce NAME WAL_DIR ENDPOINTS COUNT``: one producer, as the
benchmark runs it; prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GATEWAY_CONFIG = ROOT / "collector-gateway.yaml"

RECORDS_PER_PRODUCER = {"smoke": 300, "quick": 5_000, "full": 100_000}
PRODUCERS = (1, 2, 3)
GATEWAYS = (1, 2)


@dataclass
class Row:
    gateways: int
    producers: int
    records: int
    acked_s: float
    archived_s: float
    archived: int
    """Records counted in the archive, including each producer's end-of-stream record when it made it."""
    failed_attempts: int

    @property
    def acked_rate(self) -> float:
        return self.records / self.acked_s if self.acked_s else 0.0

    @property
    def archived_rate(self) -> float:
        return self.records / self.archived_s if self.archived_s else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "acked_rate": self.acked_rate, "archived_rate": self.archived_rate}


# -- one producer process --------------------------------------------------------------------


def produce(name: str, wal_dir: str, endpoints: str, count: int) -> dict[str, Any]:
    import otel_audit

    audit = otel_audit.configure(
        service_name=f"bench-{name}",
        wal_dir=wal_dir,
        endpoint=endpoints.split(","),
        protocol="grpc",
        durability="interval",
        retry_max_backoff=0.5,
    )
    start = time.monotonic()
    for n in range(count):
        audit.record(
            "document.update",
            actor_id=f"u-{n % 17}",
            actor_type="user",
            action="UPDATE",
            outcome="success",
            target_type="database.table",
            target_id=f"docs/{n}",
            attributes={"bench.n": n},
        )
    written = time.monotonic() - start
    flushed = audit.force_flush(timeout=600)
    acked = time.monotonic() - start
    stats = audit.stats()
    audit.shutdown(timeout=5)
    return {
        "written_s": written,
        "acked_s": acked,
        "flushed": flushed,
        "retries": stats.get("sender_retries", 0),
        "started": start,
    }


# -- the runs --------------------------------------------------------------------------------


def _producer_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}


class _Tier:
    """An archive collector and ``gateways`` gateway collectors in front of it, on 127.0.0.1."""

    def __init__(self, binary: Path, workdir: Path, gateways: int) -> None:
        from benchmarks.collector import ArchiveCounter, Collector

        self.archive = Collector(binary, workdir / "archive")
        self.gateways = [
            Collector(
                binary,
                workdir / f"gw{index}",
                config=GATEWAY_CONFIG,
                env={"OTEL_AUDIT_FORWARD_ENDPOINT": "", "OTEL_AUDIT_FORWARD_INSECURE": "true"},
            )
            for index in range(gateways)
        ]
        self.counter = ArchiveCounter(self.archive.archive_path)

    def __enter__(self) -> _Tier:
        try:
            self.archive.start()
            for gateway in self.gateways:
                gateway.extra_env["OTEL_AUDIT_FORWARD_ENDPOINT"] = self.archive.grpc_address
                gateway.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for instance in [*self.gateways, self.archive]:
            instance.close()

    @property
    def endpoints(self) -> str:
        return ",".join(g.grpc_endpoint for g in self.gateways)


def _run(tier: _Tier, workdir: Path, producers: int, per_producer: int, log: Any) -> Row:
    """One run; the window opens at the first producer's first record(), so interpreter start-up is not counted."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.scaleout", "--produce", f"p{i}",
             str(workdir / f"wal{i}"), tier.endpoints, str(per_producer)],
            cwd=ROOT, env=_producer_env(), stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        for i in range(producers)
    ]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"producer exited {proc.returncode}: {out[-2000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    if not all(r["flushed"] for r in results):
        raise RuntimeError("a producer's force_flush timed out")
    total = producers * per_producer
    archived = 0
    deadline = time.monotonic() + 600
    while archived < total and time.monotonic() < deadline:
        archived += tier.counter.count_new()[0]
        if archived < total:
            time.sleep(0.02)
    archived_at = time.monotonic()
    # CLOCK_MONOTONIC is one clock for every process of the machine: the producers' marks compare.
    opened = min(r["started"] for r in results)
    acked_s = max(r["started"] + r["acked_s"] for r in results) - opened
    row = Row(
        len(tier.gateways), producers, total, acked_s, archived_at - opened, archived,
        sum(r["retries"] for r in results),
    )  # fmt: skip
    log(
        f"  {row.gateways} gateway(s) {producers} producer(s): acked {row.acked_rate:>8,.0f}/s  "
        f"archived {row.archived_rate:>8,.0f}/s  ({total:,} records)"
    )
    return row


def run(
    profile: str = "quick",
    workdir: Path | None = None,
    log: Any = None,
    *,
    gateways: tuple[int, ...] = GATEWAYS,
    producers: tuple[int, ...] = PRODUCERS,
) -> dict[str, Any]:
    """Every (gateways, producers) combination; returns what :func:`render` prints.

    One archive and gateway set per gateway count, reused for 1, 2 and 3 producers (each run
    waits until the archive holds all of its records before the next starts).
    """
    from benchmarks.collector import resolve_binary

    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    per_producer = RECORDS_PER_PRODUCER[profile]
    binary = resolve_binary()
    base = Path(tempfile.mkdtemp(prefix="otel-audit-scaleout-", dir=workdir))
    rows = []
    try:
        for gateway_count in gateways:
            with _Tier(binary, base / f"g{gateway_count}", gateway_count) as tier:
                for producer_count in producers:
                    run_dir = base / f"g{gateway_count}" / f"p{producer_count}"
                    rows.append(_run(tier, run_dir, producer_count, per_producer, log))
                    shutil.rmtree(run_dir, ignore_errors=True)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return {
        "profile": profile,
        "records_per_producer": per_producer,
        "cpus": os.cpu_count(),
        "load": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "rows": [row.as_dict() for row in rows],
    }


def render(results: dict[str, Any]) -> str:
    """A markdown table: one row per run, rates in records per second."""
    lines = [
        f"Scale-out ({results['profile']} profile, {results['records_per_producer']:,} records per producer, "
        f"{results['cpus']} CPUs, load {results['load']}; producers, gateways and archive share the machine)",
        "",
        "| gateways | producers | records | acked by gateways, rec/s | archived, rec/s | per gateway, rec/s | failed attempts |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['gateways']} | {row['producers']} | {row['records']:,} | {row['acked_rate']:,.0f} | "
            f"{row['archived_rate']:,.0f} | {row['acked_rate'] / row['gateways']:,.0f} | {row['failed_attempts']} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaleout", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(RECORDS_PER_PRODUCER), default="quick")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--produce", nargs=4, metavar=("NAME", "WAL_DIR", "ENDPOINTS", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.produce:
        name, wal_dir, endpoints, count = args.produce
        print(json.dumps(produce(name, wal_dir, endpoints, int(count))), flush=True)
        return 0
    results = run(args.profile)
    print(render(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
