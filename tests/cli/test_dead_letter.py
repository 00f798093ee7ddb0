"""`otel-audit dead-letter`: rejected records with the collector's error, and requeueing them."""

from __future__ import annotations

import json
from pathlib import Path

from otel_audit.wal import WAL, WALReader

from .builders import Spec
from .conftest import RECORDS, Invoke

REASON = "rejected by the collector (INVALID_ARGUMENT): record too large"


def dead_letter(wal_dir: Path, *seqs: int) -> None:
    """Move records to dead-letter/ as the sender does: WAL.dead_letter with the server's error."""
    payloads = dict(WALReader(wal_dir).read())
    with WAL.open(wal_dir, durability="never", segment_bytes=4096) as wal:
        for seq in seqs:
            wal.dead_letter(seq, payloads[seq], REASON)


def test_list_shows_each_entry_with_the_servers_error(invoke: Invoke, wal_dir: Path) -> None:
    dead_letter(wal_dir, 3, 8)
    result = invoke("dead-letter", "list", "--wal", wal_dir)
    assert result.exit_code == 0, result.output
    rows = result.stdout.splitlines()[1:]
    assert [r.split()[0] for r in rows] == ["3", "8"]
    assert Spec(3).event in rows[0] and REASON in rows[0]
    data = [
        json.loads(x) for x in invoke("dead-letter", "list", "--wal", wal_dir, "--json").stdout.splitlines()
    ]
    assert data[1]["seq"] == 8 and data[1]["reason"] == REASON and data[1]["record_id"] == Spec(8).record_id


def test_show_prints_the_reason_and_the_whole_record(invoke: Invoke, wal_dir: Path) -> None:
    dead_letter(wal_dir, 8)
    result = invoke("dead-letter", "show", "--wal", wal_dir, "8")
    assert result.exit_code == 0, result.output
    assert f"reason       {REASON}" in result.stdout
    assert f"trace id       {Spec(8).trace_id:032x}" in result.stdout
    assert "audit.actor.id" in result.stdout
    missing = invoke("dead-letter", "show", "--wal", wal_dir, "9")
    assert missing.exit_code == 1 and "no dead letter with sequence number 9" in missing.stderr


def test_requeue_appends_to_an_idle_wal_and_removes_the_entry(invoke: Invoke, wal_dir: Path) -> None:
    dead_letter(wal_dir, 3, 8)
    result = invoke("dead-letter", "requeue", "--wal", wal_dir, "8")
    assert result.exit_code == 0, result.output
    assert f"as WAL seq {RECORDS + 1}" in result.stdout
    seq, payload = list(WALReader(wal_dir).read(after=RECORDS))[0]
    assert seq == RECORDS + 1
    shown = json.loads(invoke("get", "--wal", wal_dir, str(seq), "--json").stdout)
    assert shown["record_id"] == Spec(8).record_id
    remaining = invoke("dead-letter", "list", "--wal", wal_dir, "--json").stdout.splitlines()
    assert [json.loads(x)["seq"] for x in remaining] == [3]


def test_requeue_while_the_application_runs_hands_entries_to_its_inbox(invoke: Invoke, wal_dir: Path) -> None:
    dead_letter(wal_dir, 3, 8)
    with WAL.open(wal_dir, durability="never", segment_bytes=4096):
        result = invoke("dead-letter", "requeue", "--wal", wal_dir, "--all")
        assert result.exit_code == 0, result.output
        assert "to the running sender" in result.stdout
        listed = invoke("dead-letter", "list", "--wal", wal_dir)
    inbox = wal_dir / "dead-letter" / "requeue"
    assert sorted(p.name for p in inbox.iterdir()) == [
        f"{3:020d}.frame",
        f"{3:020d}.json",
        f"{8:020d}.frame",
        f"{8:020d}.json",
    ]
    assert (
        "no dead letters" in listed.stderr
        and "2 requeued, waiting for the running sender: seq 3, 8" in listed.stderr
    )
    assert WALReader(wal_dir).stats()["last_seq"] == RECORDS  # nothing written behind the writer's back


def test_requeue_needs_seqs_or_all(invoke: Invoke, wal_dir: Path) -> None:
    result = invoke("dead-letter", "requeue", "--wal", wal_dir)
    assert result.exit_code == 2 and "or --all" in result.stderr


def test_a_damaged_dead_letter_frame_is_refused_without_moving_anything(
    invoke: Invoke, wal_dir: Path
) -> None:
    dead_letter(wal_dir, 3)
    frame = wal_dir / "dead-letter" / f"{3:020d}.frame"
    data = bytearray(frame.read_bytes())
    data[-1] ^= 0xFF
    frame.write_bytes(bytes(data))
    result = invoke("dead-letter", "requeue", "--wal", wal_dir, "3")
    assert result.exit_code == 1
    assert "is damaged" in result.stderr and result.stderr.count("\n") == 1
    assert frame.exists()


def test_a_damaged_entry_is_listed_without_hiding_the_others(invoke: Invoke, wal_dir: Path) -> None:
    dead_letter(wal_dir, 3, 8)
    (wal_dir / "dead-letter" / f"{3:020d}.frame").write_bytes(b"garbage")
    result = invoke("dead-letter", "list", "--wal", wal_dir)
    assert result.exit_code == 0, result.output
    rows = result.stdout.splitlines()[1:]
    assert rows[0].split()[0] == "3" and "(unreadable: wal: dead-letter frame" in rows[0]
    eight = [r for r in rows if r.startswith("8 ")]
    assert len(eight) == 1 and eight[0].split()[2] == Spec(8).event
