"""`otel-audit list`: newest first, paged by sequence number, filtered, on a WAL and on an archive."""

from __future__ import annotations

import json
import re

from .builders import Spec
from .conftest import RECORDS, Invoke


def seqs_of(table: str) -> list[int]:
    return [int(line.split()[0]) for line in table.splitlines()[1:] if line.strip()]


def test_list_shows_newest_first_with_the_audit_columns(invoke: Invoke, source_args: list[str]) -> None:
    result = invoke("list", *source_args, "--limit", "3")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "SEQ",
        "TIME",
        "EVENT",
        "USER",
        "ACTION",
        "OUTCOME",
        "RESOURCE",
        "TRACE",
        "ID",
    ]
    assert seqs_of(result.stdout) == [50, 49, 48]
    spec = Spec(48)
    assert lines[3].split()[1:7] == [
        "2026-04-02T06:07:28.000Z",
        spec.event,
        spec.user,
        "LOGIN",
        spec.outcome,
        spec.target,
    ]
    assert lines[3].split()[7] == f"{spec.trace_id:032x}"[:12] + "…"
    assert "next page: --before 48" in result.stderr


def test_paging_with_the_printed_cursor_visits_every_record_once(
    invoke: Invoke, source_args: list[str]
) -> None:
    seen: list[int] = []
    args = ["list", *source_args, "--limit", "7"]
    for _ in range(20):
        result = invoke(*args)
        assert result.exit_code == 0, result.output
        seen += seqs_of(result.stdout)
        cursor = re.search(r"next page: --before (\d+)", result.stderr)
        if cursor is None:
            break
        args = ["list", *source_args, "--limit", "7", "--before", cursor.group(1)]
    assert seen == list(range(RECORDS, 0, -1))


def test_filters_combine_user_outcome_and_event_glob(invoke: Invoke, source_args: list[str]) -> None:
    result = invoke("list", *source_args, "--user", "u-1", "--outcome", "failure", "--event", "user.login.*")
    assert result.exit_code == 0, result.output
    expected = [i for i in range(RECORDS, 0, -1) if Spec(i).user == "u-1" and Spec(i).outcome == "failure"]
    assert expected and seqs_of(result.stdout) == expected


def test_exact_event_filter_excludes_other_names(invoke: Invoke, source_args: list[str]) -> None:
    result = invoke("list", *source_args, "--event", "user.login.failure", "--limit", "100")
    assert seqs_of(result.stdout) == [i for i in range(RECORDS, 0, -1) if i % 4 == 0]


def test_trace_id_matches_whole_ids_and_odd_length_prefixes(invoke: Invoke, source_args: list[str]) -> None:
    whole = f"{Spec(33).trace_id:032x}"
    result = invoke("list", *source_args, "--trace-id", whole.upper())
    assert result.exit_code == 0, result.output
    assert seqs_of(result.stdout) == [33]
    # 31 hex digits: ids ...0020 to ...002f share them (records 32..47).
    result = invoke("list", *source_args, "--trace-id", whole[:31], "--limit", "100")
    assert seqs_of(result.stdout) == list(range(47, 31, -1))


def test_non_hex_trace_id_is_refused(invoke: Invoke, source_args: list[str]) -> None:
    result = invoke("list", *source_args, "--trace-id", "xyz")
    assert result.exit_code == 2
    assert "is not hexadecimal" in result.stderr


def test_time_window_with_absolute_bounds(invoke: Invoke, source_args: list[str]) -> None:
    result = invoke("list", *source_args, "--since", "2026-04-02T06:07:00Z", "--until", "2026-04-02T06:07:02")
    assert seqs_of(result.stdout) == [22, 21, 20]


def test_relative_since_excludes_records_older_than_the_age(invoke: Invoke, source_args: list[str]) -> None:
    result = invoke("list", *source_args, "--since", "1h")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "no records match" in result.stderr
    assert seqs_of(invoke("list", *source_args, "--since", "100000d", "-n", "2").stdout) == [50, 49]


def test_bad_time_filter_is_a_one_line_error(invoke: Invoke, source_args: list[str]) -> None:
    result = invoke("list", *source_args, "--since", "yesterday-ish")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: --since: 'yesterday-ish' is not a time")


def test_since_after_until_is_refused(invoke: Invoke, source_args: list[str]) -> None:
    result = invoke("list", *source_args, "--since", "2026-04-03", "--until", "2026-04-02")
    assert result.exit_code == 2
    assert "--since is later than --until" in result.stderr


def test_json_lines_carry_every_field(invoke: Invoke, source_args: list[str]) -> None:
    result = invoke("list", *source_args, "--json", "--limit", "2")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["seq"] for r in rows] == [50, 49]
    spec = Spec(50)
    row = rows[0]
    assert row["record_id"] == spec.record_id
    assert row["trace_id"] == f"{spec.trace_id:032x}"
    assert row["span_id"] == f"{spec.span_id:016x}"
    assert row["time_unix_nano"] == spec.time_ns
    assert row["attributes"]["audit.actor.id"] == spec.user
    assert row["attributes"]["http.response.status_code"] == 200
    assert row["resource"] == {"service.name": "billing", "host.name": "web-1"}
    assert row["scope"] == {"name": "otel_audit", "version": "0.1.0"}


def test_wal_and_archive_give_the_same_records(invoke: Invoke, wal_dir: object, archive: object) -> None:
    wal = [json.loads(x) for x in invoke("list", "--wal", wal_dir, "--json", "-n", "50").stdout.splitlines()]
    arc = [
        json.loads(x) for x in invoke("list", "--archive", archive, "--json", "-n", "50").stdout.splitlines()
    ]
    for row in wal + arc:
        row.pop("location")
    assert len(wal) == RECORDS and wal == arc


def test_wal_from_environment_variable(invoke: Invoke, wal_dir: object) -> None:
    result = invoke("list", "-n", "1", env={"OTEL_AUDIT_WAL_DIR": str(wal_dir)})
    assert result.exit_code == 0, result.output
    assert seqs_of(result.stdout) == [50]


def test_explicit_wal_and_archive_together_are_refused(
    invoke: Invoke, wal_dir: object, archive: object
) -> None:
    result = invoke("list", "--wal", wal_dir, "--archive", archive)
    assert result.exit_code == 2
    assert "either --wal or --archive" in result.stderr


def test_archive_option_wins_over_the_environment_wal(invoke: Invoke, archive: object) -> None:
    result = invoke("list", "--archive", archive, "-n", "1", env={"OTEL_AUDIT_WAL_DIR": "/nonexistent"})
    assert result.exit_code == 0, result.output
    assert seqs_of(result.stdout) == [50]


def test_several_archive_files_number_records_across_files(invoke: Invoke, tmp_path: object) -> None:
    from pathlib import Path

    from .builders import write_archive

    first, second = Path(str(tmp_path)) / "a.jsonl", Path(str(tmp_path)) / "b.jsonl.gz"
    write_archive(first, list(range(1, 11)))
    import gzip

    plain = Path(str(tmp_path)) / "b.tmp"
    write_archive(plain, list(range(11, 21)))
    second.write_bytes(gzip.compress(plain.read_bytes()))
    result = invoke("list", "--archive", first, "--archive", second, "--json", "-n", "3", "--before", "13")
    rows = [json.loads(x) for x in result.stdout.splitlines()]
    assert [(r["seq"], r["record_id"]) for r in rows] == [(i, Spec(i).record_id) for i in (12, 11, 10)]


def test_an_empty_wal_lists_nothing_and_says_so(invoke: Invoke, tmp_path: object) -> None:
    from pathlib import Path

    from otel_audit.wal import WAL

    directory = Path(str(tmp_path)) / "empty"
    WAL.open(directory).close()
    result = invoke("list", "--wal", directory)
    assert result.exit_code == 0, result.output
    assert result.stdout == "" and "no records" in result.stderr
    assert invoke("tail", "--wal", directory).exit_code == 0
    assert invoke("export", "--wal", directory).stdout == ""


def test_a_filtered_archive_page_offers_no_next_page_when_nothing_older_matches(
    invoke: Invoke, archive: object
) -> None:
    result = invoke("list", "--archive", archive, "--user", "u-1", "--outcome", "failure")
    assert seqs_of(result.stdout) == [36, 16]
    assert "next page" not in result.stderr


def test_every_command_help_cites_the_wal_environment_variable(invoke: Invoke) -> None:
    for command in (["status"], ["list"], ["get"], ["tail"], ["export"], ["dead-letter", "list"]):
        text = " ".join(invoke(*command, "--help").stdout.split())
        assert "[env var: OTEL_AUDIT_WAL_DIR]" in text, command
