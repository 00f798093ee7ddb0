"""`--wal ROOT` with shards: status per shard, list/get/export/tail merged across shards, dead letters per shard."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from otel_audit.export.contexts import ContextStore
from otel_audit.export.payload import encode_payload
from otel_audit.shards import SHARD_ID_FILE
from otel_audit.wal import WAL, WALReader

from .builders import Spec, build_record, context_message, write_root, write_wal
from .conftest import Invoke
from .test_dead_letter import REASON
from .test_tail import Follower

A, B, ROOT_ID = "aaaa000000000001", "bbbb000000000002", "r000000000000000"
TOTAL = 60


def spec_index(shard: str, seq: int) -> int:
    """Record i lives in the root if i % 3 == 0, in A if i % 3 == 1, in B if i % 3 == 2 (seq = its rank)."""
    return {ROOT_ID: 3 * seq, A: 3 * seq - 2, B: 3 * seq - 1}[shard]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Three shards written by the real WAL, their records interleaved in time (record i at second i)."""
    directory = tmp_path / "wal"
    write_root(
        directory,
        {
            A: [i for i in range(1, TOTAL + 1) if i % 3 == 1],
            B: [i for i in range(1, TOTAL + 1) if i % 3 == 2],
        },
        [i for i in range(1, TOTAL + 1) if i % 3 == 0],
    )
    return directory


def ids_of(json_lines: str) -> list[str]:
    return [json.loads(line)["record_id"] for line in json_lines.splitlines()]


def expected_ids(indexes: list[int]) -> list[str]:
    return [Spec(i).record_id for i in indexes]


# -- status ------------------------------------------------------------------------------------


def test_status_has_a_row_per_shard_and_a_total(invoke: Invoke, root: Path) -> None:
    (root / "shards" / A / "state").mkdir()
    (root / "shards" / A / "state" / "sender.json").write_text(
        json.dumps(
            {"last_error": "UNAVAILABLE: connection refused", "last_error_time": "2026-04-02T06:07:00Z"}
        )
    )
    (root / "state").mkdir()  # the sender writes epoch seconds; shown as UTC
    (root / "state" / "sender.json").write_text(
        json.dumps({"last_error": "DEADLINE_EXCEEDED", "last_error_time": 1_775_110_020.5})
    )
    (root / "budget").write_text(str(1 << 20))
    with WAL.open(root / "shards" / B, durability="never", segment_bytes=4096) as wal:
        wal.ack(5)
        result = invoke("status", "--wal", root)
        data = json.loads(invoke("status", "--wal", root, "--json").stdout)
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert result.stdout.splitlines()[0].split()[:4] == ["SHARD", "PATH", "WRITER", "BACKLOG"]
    assert rows[ROOT_ID].split()[1:4] == [".", "orphan", "20"]
    assert rows[A].split()[1:4] == [f"shards/{A}", "orphan", "20"]
    assert "UNAVAILABLE: connection refused (at 2026-04-02T06:07:00Z)" in rows[A]
    assert rows[B].split()[1:5] == [f"shards/{B}", "pid", str(os.getpid()), "15"]
    assert "1.0 MiB" in rows[ROOT_ID]
    assert "DEADLINE_EXCEEDED (at 2026-04-02T06:07:00.500Z)" in rows[ROOT_ID]
    assert rows[B].split()[-1] == "unknown"  # B has no state/sender.json
    assert rows["total"].split()[1:8] == ["3", "shard(s)", "1", "live,", "2", "orphan", "55"]

    by_id = {s["id"]: s for s in data["shards"]}
    assert [s["id"] for s in data["shards"]] == [ROOT_ID, A, B]
    assert by_id[ROOT_ID]["root"] is True and by_id[ROOT_ID]["budget_bytes"] == 1 << 20
    assert by_id[B]["holder_pid"] == os.getpid() and by_id[B]["orphan"] is False
    assert by_id[B]["backlog_records"] == 15 and by_id[B]["acked_seq"] == 5
    assert by_id[A]["last_error"] == "UNAVAILABLE: connection refused" and by_id[B]["sender"] is None
    total = data["total"]
    assert total["backlog_records"] == 55 and total["shards"] == 3
    assert total["writers"] == 1 and total["orphans"] == 2
    assert total["backlog_bytes"] == sum(s["backlog_bytes"] for s in data["shards"])
    assert total["oldest_unacked_age"] == max(s["oldest_unacked_age"] for s in data["shards"])


def test_max_age_is_about_the_oldest_record_of_any_shard(invoke: Invoke, root: Path) -> None:
    for path in (root, root / "shards" / B):
        with WAL.open(path, durability="never", segment_bytes=4096) as wal:
            wal.ack(20)  # only shard A still has a backlog
    time.sleep(0.05)
    result = invoke("status", "--wal", root, "--max-age", "0.01")
    assert result.exit_code == 2 and "more than --max-age 0.01s" in result.stderr
    with WAL.open(root / "shards" / A, durability="never", segment_bytes=4096) as wal:
        wal.ack(20)
    result = invoke("status", "--wal", root, "--max-age", "0", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["total"]["backlog_records"] == 0


# -- list, paging, get, export -----------------------------------------------------------------


def test_list_merges_every_shard_newest_first(invoke: Invoke, root: Path) -> None:
    result = invoke("list", "--wal", root, "-n", "100", "--json")
    assert result.exit_code == 0, result.output
    assert ids_of(result.stdout) == expected_ids(list(range(TOTAL, 0, -1)))
    rows = [json.loads(x) for x in result.stdout.splitlines()]
    assert rows[0]["seq"] == 20 and "shard" not in rows[0]  # record 60: the root's seq 20
    assert rows[1]["shard"] == B and rows[1]["seq"] == 20  # record 59
    assert rows[2]["shard"] == A and rows[2]["seq"] == 20 and f"shards/{A}" in rows[2]["location"]
    table = invoke("list", "--wal", root, "-n", "4").stdout.splitlines()[1:]
    assert [line.split()[0] for line in table] == ["20", f"{B}:20", f"{A}:20", "19"]


def test_paging_across_shards_visits_every_record_once(invoke: Invoke, root: Path) -> None:
    seen: list[str] = []
    cursors: list[str] = []
    args = ["list", "--wal", root, "-n", "7", "--json"]
    for _ in range(20):
        result = invoke(*args)
        assert result.exit_code == 0, result.output
        seen += ids_of(result.stdout)
        match = re.search(r"next page: --before (\S+)", result.stderr)
        if match is None:
            break
        cursors.append(match.group(1))
        args = ["list", "--wal", root, "-n", "7", "--json", "--before", match.group(1)]
    assert seen == expected_ids(list(range(TOTAL, 0, -1)))
    # After records 60..54: the root stopped at its seq 18 (record 54), A and B at 19 (records 55, 56).
    assert cursors[0] == f"18,{A}:19,{B}:19"
    assert all(re.fullmatch(rf"\d+,{A}:\d+,{B}:\d+", c) for c in cursors), cursors


def test_paging_with_a_filter_across_shards(invoke: Invoke, root: Path) -> None:
    seen: list[str] = []
    args = ["list", "--wal", root, "-n", "3", "--json", "--outcome", "failure"]
    for _ in range(20):
        result = invoke(*args)
        seen += ids_of(result.stdout)
        match = re.search(r"next page: --before (\S+)", result.stderr)
        if match is None:
            break
        args = [*args[:8], "--before", match.group(1)]
    assert seen == expected_ids([i for i in range(TOTAL, 0, -1) if i % 4 == 0])


def test_a_cursor_naming_a_removed_shard_lists_the_others_with_a_warning(invoke: Invoke, root: Path) -> None:
    os.rename(root / "shards" / B, root / "shards" / f".removed-{B}-1")
    result = invoke("list", "--wal", root, "-n", "2", "--json", "--before", f"18,{A}:19,{B}:19")
    assert result.exit_code == 0, result.output
    assert ids_of(result.stdout) == expected_ids([52, 51])  # B (53) is gone
    assert f"warning: shard '{B}' of the cursor is gone" in result.stderr


def test_a_bad_cursor_is_a_usage_error(invoke: Invoke, root: Path) -> None:
    result = invoke("list", "--wal", root, "--before", f"{A}:x")
    assert result.exit_code == 2 and "is not a cursor" in result.stderr


def test_get_by_record_id_searches_every_shard(invoke: Invoke, root: Path) -> None:
    index = spec_index(B, 7)
    result = invoke("get", "--wal", root, Spec(index).record_id, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["shard"] == B and data["seq"] == 7 and data["record_id"] == Spec(index).record_id
    text = invoke("get", "--wal", root, f"{B}:7").stdout
    assert f"seq            {B}:7" in text and f"record id      {Spec(index).record_id}" in text


def test_get_by_seq_needs_the_shard_and_plain_seq_is_the_root(invoke: Invoke, root: Path) -> None:
    assert json.loads(invoke("get", "--wal", root, "7", "--json").stdout)["record_id"] == Spec(21).record_id
    for key in (f"{A}:7", "root:7", f"{ROOT_ID}:7"):
        shard = A if key.startswith(A) else ROOT_ID
        data = json.loads(invoke("get", "--wal", root, key, "--json").stdout)
        assert data["record_id"] == Spec(spec_index(shard, 7)).record_id, key
    missing = invoke("get", "--wal", root, "cccc000000000003:7")
    assert missing.exit_code == 1 and "no record with sequence number cccc000000000003:7" in missing.stderr


def test_export_merges_shards_oldest_first(invoke: Invoke, root: Path) -> None:
    result = invoke("export", "--wal", root)
    assert result.exit_code == 0, result.output
    assert ids_of(result.stdout) == expected_ids(list(range(1, TOTAL + 1)))
    csv_lines = invoke("export", "--wal", root, "--format", "csv").stdout.splitlines()
    assert [line.split(",")[0] for line in csv_lines[1:4]] == [f"{A}:1", f"{B}:1", "1"]


def test_a_root_whose_shards_hold_nothing_lists_nothing(invoke: Invoke, tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    write_root(directory, {A: []}, [])
    result = invoke("list", "--wal", directory)
    assert result.exit_code == 0 and "no records" in result.stderr


# -- dead letters ------------------------------------------------------------------------------


def dead_letter(shard_dir: Path, *seqs: int) -> None:
    payloads = dict(WALReader(shard_dir).read())
    with WAL.open(shard_dir, durability="never", segment_bytes=4096) as wal:
        for seq in seqs:
            wal.dead_letter(seq, payloads[seq], REASON)


def test_dead_letters_of_every_shard_are_listed_with_their_shard(invoke: Invoke, root: Path) -> None:
    dead_letter(root, 2)
    dead_letter(root / "shards" / A, 3)
    result = invoke("dead-letter", "list", "--wal", root)
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split()[:2] == ["SHARD", "SEQ"]
    assert sorted(r.split()[:2] for r in rows) == sorted([[ROOT_ID, "2"], [A, "3"]])
    data = [json.loads(x) for x in invoke("dead-letter", "list", "--wal", root, "--json").stdout.splitlines()]
    assert {(d["shard"], d["seq"], d["record_id"]) for d in data} == {
        (ROOT_ID, 2, Spec(6).record_id),
        (A, 3, Spec(spec_index(A, 3)).record_id),
    }
    shown = invoke("dead-letter", "show", "--wal", root, f"{A}:3", "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["record"]["record_id"] == Spec(spec_index(A, 3)).record_id
    assert json.loads(invoke("dead-letter", "show", "--wal", root, "2", "--json").stdout)["shard"] == ROOT_ID
    missing = invoke("dead-letter", "show", "--wal", root, f"{B}:3")
    assert missing.exit_code == 1 and f"no dead letter with key {B}:3" in missing.stderr


def test_requeue_goes_into_each_records_own_shard(invoke: Invoke, root: Path) -> None:
    dead_letter(root / "shards" / A, 3)
    dead_letter(root / "shards" / B, 4)
    with WAL.open(root / "shards" / B, durability="never", segment_bytes=4096):
        result = invoke("dead-letter", "requeue", "--wal", root, f"{A}:3", f"{B}:4")
        assert result.exit_code == 0, result.output
    # A is idle: appended to A's WAL as its seq 21. B is held: handed to B's inbox.
    assert f"(seq 3) of shard {A} as WAL seq 21" in result.stdout
    assert f"(seq 4) of shard {B} to the running sender (pid {os.getpid()})" in result.stdout
    seq, _ = list(WALReader(root / "shards" / A).read(after=20))[0]
    assert seq == 21
    shown = json.loads(invoke("get", "--wal", root, f"{A}:21", "--json").stdout)
    assert shown["record_id"] == Spec(spec_index(A, 3)).record_id
    inbox = root / "shards" / B / "dead-letter" / "requeue"
    assert sorted(p.name for p in inbox.iterdir()) == [f"{4:020d}.frame", f"{4:020d}.json"]
    assert WALReader(root).stats()["last_seq"] == 20  # nothing went to the root
    listed = invoke("dead-letter", "list", "--wal", root)
    assert f"1 requeued, waiting for the running sender: seq {B}:4" in listed.stderr


# -- tail -f -----------------------------------------------------------------------------------


def followed_ids(follower: Follower) -> list[str]:
    return [json.loads(x)["record_id"] for x in list(follower.lines) if x.startswith("{")]


def wait_for_id(follower: Follower, record_id: str, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if record_id in followed_ids(follower):
            return followed_ids(follower)
        assert follower.proc.poll() is None, follower.proc.stderr.read() if follower.proc.stderr else ""
        time.sleep(0.02)
    raise AssertionError(f"{record_id} never printed; got {followed_ids(follower)}")


def append(shard_dir: Path, indexes: range) -> None:
    contexts = ContextStore(shard_dir)
    cid = contexts.put(context_message().SerializeToString())
    with WAL.open(shard_dir, durability="never", segment_bytes=4096) as wal:
        for i in indexes:
            wal.append(encode_payload(cid, build_record(Spec(i)).SerializeToString()))


def test_follow_picks_up_a_new_shard_and_survives_one_removed(root: Path) -> None:
    follower = Follower("--wal", str(root), "--json")
    try:
        assert wait_for_id(follower, Spec(TOTAL).record_id) == expected_ids([59, 60])
        append(root / "shards" / A, range(61, 63))
        wait_for_id(follower, Spec(62).record_id)
        # A new process starts and gets shards/<new id>/: found by the rescan (every second).
        new = root / "shards" / "cccc000000000003"
        write_wal(new, range(100, 103))
        (new / SHARD_ID_FILE).write_text(new.name)
        wait_for_id(follower, Spec(102).record_id)
        # Shard B is drained and removed as a process would (renamed away, then deleted).
        os.rename(root / "shards" / B, root / "shards" / f".removed-{B}-1")
        time.sleep(0.3)
        append(root, range(200, 202))
        ids = wait_for_id(follower, Spec(201).record_id)
    finally:
        code, err = follower.interrupt()
    assert code == 0, err
    assert "Traceback" not in err
    assert ids == expected_ids([59, 60, 61, 62, 100, 101, 102, 200, 201])


def test_tail_shows_the_last_records_of_all_shards_with_their_keys(invoke: Invoke, root: Path) -> None:
    result = invoke("tail", "--wal", root, "-n", "3")
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == [f"{A}:20", f"{B}:20", "20"]


def test_a_shard_with_nothing_older_drops_out_of_the_cursor(invoke: Invoke, tmp_path: Path) -> None:
    directory = tmp_path / "wal"
    write_root(directory, {A: [1, 2]}, list(range(3, 9)))  # A's records are older than all the root's
    first = invoke("list", "--wal", directory, "-n", "5")
    assert f"next page: --before 2,{A}:3" in first.stderr
    second = invoke("list", "--wal", directory, "-n", "2", "--before", f"2,{A}:3")
    assert [line.split()[0] for line in second.stdout.splitlines()[1:]] == ["1", f"{A}:2"]
    assert f"next page: --before {A}:2" in second.stderr
    last = invoke("list", "--wal", directory, "--before", f"{A}:2")
    assert [line.split()[0] for line in last.stdout.splitlines()[1:]] == [f"{A}:1"]
    assert "next page" not in last.stderr


def test_verify_reads_every_shard(invoke: Invoke, root: Path) -> None:
    result = invoke("verify", "--wal", root, "--json")
    assert json.loads(result.stdout)["records_read"] == TOTAL
