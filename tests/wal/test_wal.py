"""Append, read, ack and reopen: the WAL's basic contract."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from otel_audit.exceptions import ConfigError, WALError, WALRecordTooLargeError
from otel_audit.wal import WAL, Durability, FullPolicy

from .conftest import payload_for


def test_seqs_start_at_one_and_increase(wal: WAL) -> None:
    """append returns 1, 2, 3...; append_many continues the sequence."""
    assert wal.last_seq == 0 and wal.acked_seq == 0
    assert wal.append(b"a") == 1
    assert wal.append_many([b"b", b"c"]) == [2, 3]
    assert wal.last_seq == 3


def test_read_returns_every_record_in_order(wal: WAL) -> None:
    """read() streams all frames across segment roll-overs."""
    seqs = [wal.append(payload_for(i + 1, 300)) for i in range(100)]
    assert seqs == list(range(1, 101))
    assert wal.stats()["segments"] > 1
    assert list(wal.read()) == [(s, payload_for(s, 300)) for s in seqs]
    assert [s for s, _ in wal.read(after=90)] == list(range(91, 101))


def test_records_survive_reopen(wal_dir: Path) -> None:
    """Everything appended is there after close and open."""
    with WAL.open(wal_dir, segment_bytes=4096) as w:
        w.append_many([payload_for(i) for i in range(1, 51)])
    with WAL.open(wal_dir, segment_bytes=4096) as w:
        assert list(w.read()) == [(i, payload_for(i)) for i in range(1, 51)]
        assert w.append(b"next") == 51


def test_ack_deletes_only_fully_acked_segments(wal_dir: Path) -> None:
    """A segment goes only when its last record is acked; partially acked ones stay."""
    with WAL.open(wal_dir, durability="never", segment_bytes=1024) as w:
        for i in range(1, 101):
            w.append(payload_for(i, 100))
        before = sorted(os.listdir(wal_dir / "segments"))
        firsts = [int(n[:20]) for n in before]
        second_first = firsts[1]
        w.ack(second_first - 2)  # all but the last record of the first segment
        assert sorted(os.listdir(wal_dir / "segments")) == before
        w.ack(second_first - 1)
        assert sorted(os.listdir(wal_dir / "segments")) == before[1:]
        assert [s for s, _ in w.read(after=w.acked_seq)][0] == second_first


def test_seq_continues_after_everything_was_acked_and_deleted(wal_dir: Path) -> None:
    """The checkpoint remembers the last seq when no segment is left."""
    with WAL.open(wal_dir) as w:
        w.append_many([b"x"] * 10)
        w.ack(10)
        assert w.stats()["segments"] == 0
    assert os.listdir(wal_dir / "segments") == []
    with WAL.open(wal_dir) as w:
        assert w.acked_seq == 10 and w.last_seq == 10
        assert w.append(b"y") == 11


def test_ack_beyond_last_seq_is_refused(wal: WAL) -> None:
    """Acking what was never written is a bug in the caller, not something to clamp."""
    wal.append(b"a")
    with pytest.raises(WALError, match="last seq written is 1"):
        wal.ack(2)


def test_ack_is_idempotent_and_never_goes_back(wal: WAL) -> None:
    """Acking a lower seq again leaves the checkpoint where it was."""
    wal.append_many([b"a"] * 5)
    wal.ack(4)
    wal.ack(2)
    assert wal.acked_seq == 4


def test_stats_reports_backlog_and_sizes_from_disk(wal_dir: Path) -> None:
    """stats() counts what is on disk, not what was appended since open."""
    with WAL.open(wal_dir, segment_bytes=4096) as w:
        w.append_many([b"p" * 100] * 10)
        w.ack(4)
    with WAL.open(wal_dir, segment_bytes=4096) as w:
        s = w.stats()
        assert s["backlog_records"] == 6
        assert s["backlog_bytes"] == 6 * (28 + 100)
        assert s["bytes_on_disk"] == sum(p.stat().st_size for p in (wal_dir / "segments").iterdir())
        assert s["first_seq"] == 1 and s["last_seq"] == 10 and s["acked_seq"] == 4
        assert s["oldest_unacked_age"] is not None and 0 <= s["oldest_unacked_age"] < 60
        assert s["appends"] == 0 and s["dropped"] == 0


def test_oldest_unacked_age_is_none_when_all_acked(wal: WAL) -> None:
    """No backlog, no age."""
    wal.append(b"a")
    wal.ack(1)
    assert wal.stats()["oldest_unacked_age"] is None


def test_wait_for_append_wakes_on_new_record(wal: WAL) -> None:
    """wait_for_append returns True at once if a newer record exists, else after the timeout."""
    assert wal.wait_for_append(0, 0.01) is False
    wal.append(b"a")
    assert wal.wait_for_append(0, 5) is True


def test_directory_and_files_are_private(wal_dir: Path) -> None:
    """The directory is 0700 and every file the WAL writes is 0600."""
    with WAL.open(wal_dir, durability="always") as w:
        w.append(b"secret")
        w.ack(1)
        w.append(b"more")
        w.dead_letter(2, b"more", "rejected")
    assert stat.S_IMODE(wal_dir.stat().st_mode) == 0o700
    for p in wal_dir.rglob("*"):
        expected = 0o700 if p.is_dir() else 0o600
        assert stat.S_IMODE(p.stat().st_mode) == expected, p


def test_foreign_names_in_the_directory_are_left_alone(wal_dir: Path) -> None:
    """contexts/, state/ and friends belong to the layers above."""
    (wal_dir / "contexts").mkdir(parents=True)
    (wal_dir / "contexts" / "c1").write_bytes(b"ctx")
    (wal_dir / "state").write_text("s")
    (wal_dir / "segments").mkdir()
    (wal_dir / "segments" / "README").write_text("not a segment")
    with WAL.open(wal_dir) as w:
        w.append(b"a")
        w.ack(1)
    assert (wal_dir / "contexts" / "c1").read_bytes() == b"ctx"
    assert (wal_dir / "state").read_text() == "s"
    assert (wal_dir / "segments" / "README").exists()


def test_options_accept_enum_or_string(wal_dir: Path) -> None:
    """Durability and FullPolicy are str enums; open() takes either form."""
    assert Durability("always") is Durability.ALWAYS and FullPolicy.DROP_NEWEST == "drop_newest"
    with WAL.open(wal_dir, durability=Durability.NEVER, full_policy="raise") as w:
        assert w.options.durability is Durability.NEVER
        assert w.options.full_policy is FullPolicy.RAISE


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"durability": "sometimes"}, "always, interval, never"),
        ({"full_policy": "evict_oldest"}, "block, raise, drop_newest"),
        ({"segment_bytes": -1}, "segment_bytes"),
        ({"max_bytes": 0}, "max_bytes"),
        ({"segment_bytes": 1 << 20, "max_bytes": 1 << 19}, "smaller than segment_bytes"),
        ({"fsync_interval": 0}, "fsync_interval"),
        ({"full_timeout": -1}, "full_timeout"),
        ({"segment_bytes": True}, "segment_bytes"),
    ],
)
def test_bad_options_raise_config_error(wal_dir: Path, kwargs: dict[str, object], message: str) -> None:
    """Each bad option is named in the error, before anything is created."""
    with pytest.raises(ConfigError, match=message):
        WAL.open(wal_dir, **kwargs)  # type: ignore[arg-type]
    assert not wal_dir.exists()


def test_directory_that_is_a_file_is_a_config_error(tmp_path: Path) -> None:
    """A path that is a regular file cannot hold a WAL."""
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        WAL.open(f)


def test_missing_parents_are_created(tmp_path: Path) -> None:
    """WAL.open creates the directory with its parents."""
    with WAL.open(tmp_path / "a" / "b" / "c") as w:
        assert w.append(b"x") == 1


def test_payload_above_max_bytes_can_never_be_written(wal_dir: Path) -> None:
    """A record that could never fit fails at once with a classifying error."""
    with WAL.open(wal_dir, segment_bytes=1024, max_bytes=4096) as w:
        with pytest.raises(WALRecordTooLargeError):
            w.append(b"x" * 5000)


def test_closed_wal_refuses_appends(wal_dir: Path) -> None:
    """Using a closed WAL is an error, and close() may be called twice."""
    w = WAL.open(wal_dir)
    w.close()
    w.close()
    with pytest.raises(WALError, match="closed"):
        w.append(b"x")


def test_empty_append_many_writes_nothing(wal: WAL) -> None:
    """append_many([]) is a no-op that returns []."""
    assert wal.append_many([]) == []
    assert wal.last_seq == 0
