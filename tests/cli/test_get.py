"""`otel-audit get`: one record by id or sequence number, every field, and a clear miss."""

from __future__ import annotations

import json
from pathlib import Path

from .builders import Spec
from .conftest import Invoke


def test_get_by_record_id_shows_every_field(invoke: Invoke, source_args: list[str]) -> None:
    spec = Spec(17)
    result = invoke("get", *source_args, spec.record_id)
    assert result.exit_code == 0, result.output
    out = result.stdout
    for expected in (
        "seq            17",
        f"record id      {spec.record_id}",
        f"trace id       {spec.trace_id:032x}",
        f"span id        {spec.span_id:016x}",
        "trace flags    0x01",
        "2026-04-02T06:06:57.000000000Z  (1775110017000000000)",
        "2026-04-02T06:06:57.000000005Z  (1775110017000000005)",
        f"event          {spec.event}",
        "scope          otel_audit 0.1.0",
        f"audit.actor.id             {spec.user}",
        f"audit.target.id            {spec.target}",
        "audit.source.type          ipv4",
        "http.response.status_code  200",
        "service.name  billing",
        "host.name     web-1",
    ):
        assert expected in out, f"{expected!r} missing from:\n{out}"


def test_get_by_sequence_number_and_by_id_agree(invoke: Invoke, source_args: list[str]) -> None:
    by_seq = json.loads(invoke("get", *source_args, "17", "--json").stdout)
    by_id = json.loads(invoke("get", *source_args, Spec(17).record_id, "--json").stdout)
    assert by_seq == by_id
    assert by_seq["seq"] == 17 and by_seq["record_id"] == Spec(17).record_id


def test_unknown_id_exits_1_with_a_clear_message(invoke: Invoke, source_args: list[str]) -> None:
    result = invoke("get", *source_args, "no-such-record")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("error: no record with record id 'no-such-record' in ")
    assert result.stderr.count("\n") == 1


def test_unknown_sequence_number_exits_1(invoke: Invoke, source_args: list[str]) -> None:
    for seq in ("0", "51", "99999"):
        result = invoke("get", *source_args, seq)
        assert result.exit_code == 1
        assert f"no record with sequence number {seq}" in result.stderr


def test_get_by_seq_on_wal_finds_records_in_later_segments(invoke: Invoke, wal_dir: Path) -> None:
    segments = sorted(p.name for p in (wal_dir / "segments").glob("*.wal"))
    first_of_last = int(segments[-1].split(".")[0])
    result = invoke("get", "--wal", wal_dir, str(first_of_last), "--json")
    assert json.loads(result.stdout)["record_id"] == Spec(first_of_last).record_id
