"""Recovery at open: torn tails are cut, flipped bytes are quarantined, good frames all survive."""

from __future__ import annotations

import logging
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_audit.exceptions import WALFormatError
from otel_audit.wal import WAL, frame, segment

from .conftest import payload_for


def _build(directory: Path, records: int = 60) -> tuple[dict[str, bytes], dict[int, tuple[str, int, int]]]:
    """Write a WAL of a few segments; return its segment bytes and where each frame lives."""
    rng = random.Random(7)
    with WAL.open(directory, durability="never", segment_bytes=1024) as w:
        for seq in range(1, records + 1):
            w.append(payload_for(seq, rng.randrange(0, 120)))
    files = {p.name: p.read_bytes() for p in sorted((directory / "segments").iterdir())}
    where: dict[int, tuple[str, int, int]] = {}
    for name, data in files.items():
        pos = segment.HEADER_SIZE
        while pos < len(data):
            status, header = frame.check(data, pos, len(data))
            assert status is frame.Check.OK and header is not None
            where[header.seq] = (name, pos, pos + header.size)
            pos += header.size
    return files, where


@pytest.fixture(scope="module")
def pristine(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, bytes], dict[int, tuple[str, int, int]]]:
    return _build(tmp_path_factory.mktemp("pristine") / "wal")


def _materialize(directory: Path, files: dict[str, bytearray]) -> None:
    seg_dir = directory / "segments"
    seg_dir.mkdir(parents=True)
    for name, data in files.items():
        (seg_dir / name).write_bytes(bytes(data))


def _open_and_read(directory: Path) -> tuple[list[tuple[int, bytes]], dict[str, object]]:
    with WAL.open(directory, durability="never", segment_bytes=1024) as w:
        return list(w.read()), w.stats()


def _assert_sound(got: list[tuple[int, bytes]], must_have: set[int]) -> None:
    """No invented or damaged record, strictly increasing, and every untouched frame present."""
    seqs = [s for s, _ in got]
    assert seqs == sorted(set(seqs)), "seqs must strictly increase"
    for seq, payload in got:
        assert payload.startswith(f"record-{seq:010d}|".encode()), seq
        assert payload == payload_for(seq, len(payload)), seq
    missing = must_have - set(seqs)
    assert not missing, f"good frames lost: {sorted(missing)}"


def test_torn_tail_is_cut_and_copied_to_quarantine(wal_dir: Path, pristine) -> None:  # type: ignore[no-untyped-def]
    """A frame cut short at the end of the last segment is removed; its bytes go to quarantine/."""
    files, where = pristine
    last_name = max(files)
    cut = len(files[last_name]) - 5
    damaged = {n: bytearray(b) for n, b in files.items()}
    del damaged[last_name][cut:]
    _materialize(wal_dir, damaged)
    got, stats = _open_and_read(wal_dir)
    whole = {s for s, (n, a, b) in where.items() if n != last_name or b <= cut}
    _assert_sound(got, whole)
    assert {s for s, _ in got} == whole
    quarantined = list((wal_dir / "quarantine").iterdir())
    assert len(quarantined) == 1 and quarantined[0].name.endswith(".torn")
    assert stats["quarantine_count"] == 1
    # The cut segment now ends on a frame boundary, so appends continue cleanly.
    with WAL.open(wal_dir, segment_bytes=1024) as w:
        seq = w.append(payload_for(max(whole) + 1))
        assert seq == max(whole) + 1
        assert list(w.read(after=seq - 1)) == [(seq, payload_for(seq))]


def test_every_truncation_point_of_the_last_segment(tmp_path: Path, pristine) -> None:  # type: ignore[no-untyped-def]
    """Cutting the last segment anywhere keeps exactly the frames wholly before the cut."""
    files, where = pristine
    last_name = max(files)
    for cut in range(0, len(files[last_name]), 7):
        d = tmp_path / f"cut{cut}"
        damaged = {n: bytearray(b) for n, b in files.items()}
        del damaged[last_name][cut:]
        _materialize(d, damaged)
        got, _ = _open_and_read(d)
        whole = {s for s, (n, a, b) in where.items() if n != last_name or b <= cut}
        _assert_sound(got, whole)
        assert {s for s, _ in got} == whole, cut
        shutil.rmtree(d)


@pytest.fixture
def fast_tmp() -> Iterator[Path]:
    """A directory on tmpfs when there is one: these cases test repair logic, not the disk's fsync."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix="otel-audit-wal-test-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_random_bit_flips_never_crash_open_nor_lose_good_frames(fast_tmp: Path, pristine) -> None:  # type: ignore[no-untyped-def]
    """1,200 seeded cases of 1-4 flipped bits anywhere in any segment."""
    tmp_path = fast_tmp
    files, where = pristine
    names = sorted(files)
    rng = random.Random(20240601)
    logging.getLogger("otel_audit.wal").setLevel(logging.ERROR)
    try:
        for case in range(1200):
            damaged = {n: bytearray(b) for n, b in files.items()}
            touched: set[tuple[str, int]] = set()
            for _ in range(rng.choice((1, 1, 2, 4))):
                name = rng.choice(names)
                off = rng.randrange(len(damaged[name]))
                damaged[name][off] ^= 1 << rng.randrange(8)
                touched.add((name, off))
            d = tmp_path / f"c{case}"
            _materialize(d, damaged)
            got, stats = _open_and_read(d)
            untouched = {
                s for s, (n, a, b) in where.items() if not any(tn == n and a <= to < b for tn, to in touched)
            }
            _assert_sound(got, untouched)
            if len(untouched) < len(where):
                assert stats["quarantine_count"] >= 1, case
            # A second open finds nothing more to repair: the first one left a clean WAL.
            got2, stats2 = _open_and_read(d)
            assert got2 == got and stats2["quarantine_count"] == stats["quarantine_count"]
            shutil.rmtree(d)
    finally:
        logging.getLogger("otel_audit.wal").setLevel(logging.NOTSET)


def test_mid_segment_damage_is_quarantined_and_later_frames_kept(wal_dir: Path, pristine, caplog) -> None:  # type: ignore[no-untyped-def]
    """Garbage in the middle of a segment is cut out; the frames after it stay readable."""
    files, where = pristine
    name, start, stop = where[5]
    damaged = {n: bytearray(b) for n, b in files.items()}
    damaged[name][start + 10 : start + 14] = b"\xff\xff\xff\xff"
    _materialize(wal_dir, damaged)
    with caplog.at_level(logging.WARNING, logger="otel_audit.wal"):
        got, stats = _open_and_read(wal_dir)
    assert [s for s, _ in got] == [s for s in sorted(where) if s != 5]
    assert stats["quarantined_frames"] == 1
    assert any(f"at position {start}" in r.getMessage() for r in caplog.records)
    bad = [p for p in (wal_dir / "quarantine").iterdir() if p.name.endswith(".bad")]
    assert len(bad) == 1 and bad[0].read_bytes() == bytes(damaged[name][start:stop])


def test_damaged_segment_header_is_rebuilt_from_the_name(wal_dir: Path, pristine) -> None:  # type: ignore[no-untyped-def]
    """A flipped header byte costs no frame: the name gives the first seq."""
    files, where = pristine
    damaged = {n: bytearray(b) for n, b in files.items()}
    first = min(files)
    damaged[first][3] ^= 0x40
    _materialize(wal_dir, damaged)
    got, _ = _open_and_read(wal_dir)
    assert [s for s, _ in got] == sorted(where)


def test_unknown_format_version_raises_format_error(wal_dir: Path) -> None:
    """An intact header of another version is refused, not repaired."""
    with WAL.open(wal_dir) as w:
        w.append(b"x")
    seg = next((wal_dir / "segments").iterdir())
    data = bytearray(seg.read_bytes())
    import struct
    import zlib

    data[8:10] = struct.pack("<H", 99)
    data[20:24] = zlib.crc32(bytes(data[:20])).to_bytes(4, "little")
    seg.write_bytes(bytes(data))
    with pytest.raises(WALFormatError, match="version 99"):
        WAL.open(wal_dir)


def test_damaged_checkpoint_means_nothing_acked(wal_dir: Path) -> None:
    """A checkpoint failing its CRC is quarantined; records are re-sent rather than lost."""
    with WAL.open(wal_dir, segment_bytes=1024) as w:
        w.append_many([payload_for(i, 100) for i in range(1, 30)])
        w.ack(3)
    ckpt = wal_dir / "checkpoint"
    ckpt.write_bytes(b"garbage" + ckpt.read_bytes()[7:])
    with WAL.open(wal_dir, segment_bytes=1024) as w:
        assert w.acked_seq == 0
        assert [s for s, _ in w.read()][0] == 1
        assert w.stats()["quarantine_count"] == 1


def test_leftover_temp_files_are_removed(wal_dir: Path) -> None:
    """A crash while creating a segment leaves a .tmp that open deletes."""
    with WAL.open(wal_dir) as w:
        w.append(b"x")
    tmp = wal_dir / "segments" / (segment.segment_name(2) + ".tmp")
    tmp.write_bytes(b"OTAUD")
    with WAL.open(wal_dir) as w:
        assert not tmp.exists()
        assert w.append(b"y") == 2


def test_frames_lost_at_a_segment_boundary_are_counted(wal_dir: Path, pristine) -> None:  # type: ignore[no-untyped-def]
    """Damage at the end of a non-last segment is a hole in the seqs, reported in stats."""
    files, where = pristine
    first = min(files)
    last_in_first = max(s for s, (n, _, _) in where.items() if n == first)
    _, start, _ = where[last_in_first]
    damaged = {n: bytearray(b) for n, b in files.items()}
    damaged[first][start + 5] ^= 1
    _materialize(wal_dir, damaged)
    got, stats = _open_and_read(wal_dir)
    assert last_in_first not in {s for s, _ in got}
    assert stats["quarantined_frames"] == 1
