"""`otel-audit verify` exits 0 on clean input, 1 on a problem, and reports in text or JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from otel_audit.cli.app import main
from otel_audit.integrity.signing import Ed25519Signer

from .builders import KEY, Streams, make_streams, write_archive, write_wal


@pytest.fixture(scope="module")
def streams() -> Streams:
    return make_streams(40, streams=2, digest_every=10)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "hmac.key"
    path.write_bytes(KEY)
    path.chmod(0o600)
    return path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["verify", *args], env={"OTEL_AUDIT_WAL_DIR": ""})
    return result.exit_code, result.output


def test_a_clean_wal_exits_0_with_one_row_per_stream(
    tmp_path: Path, streams: Streams, key_file: Path
) -> None:
    write_wal(tmp_path / "wal", streams)
    code, out = run("--wal", str(tmp_path / "wal"), "--key-file", str(key_file), "--complete")
    assert code == 0, out
    assert out.count("yes") == 2 and "OK: " in out and "HMAC-SHA256" in out
    assert all(sid in out for sid in streams.stream_ids)


def test_a_gap_exits_1_and_names_the_line(tmp_path: Path, streams: Streams, key_file: Path) -> None:
    order = [i for i in range(len(streams.records)) if i != 9]
    archive = write_archive(tmp_path / "audit.jsonl", streams, order=order, batch=5)
    code, out = run("--archive", str(archive), "--key-file", str(key_file))
    assert code == 1
    assert "FAILED: 1 problem(s) (gap)" in out
    code, out = run("--archive", str(archive), "--key-file", str(key_file), "--json")
    gap = json.loads(out)["findings"][0]
    assert code == 1 and gap["kind"] == "gap" and gap["position"] == f"{archive}:3"  # records 10..14


def test_json_output_is_the_report(tmp_path: Path, streams: Streams, key_file: Path) -> None:
    archive = write_archive(tmp_path / "audit.jsonl", streams)
    code, out = run("--archive", str(archive), "--key-file", str(key_file), "--json")
    data = json.loads(out)
    assert code == 0 and data["ok"] is True and data["records_read"] == len(streams.records)
    assert {s["stream_id"] for s in data["streams"]} == set(streams.stream_ids)
    code, out = run("--archive", str(archive), "--json")  # no key: proofs are not checked, said so
    assert json.loads(out)["counts"] == {"signatures_not_checked": 1}


def test_a_wrong_key_fails_every_record(tmp_path: Path, streams: Streams) -> None:
    other = tmp_path / "other.key"
    other.write_bytes(b"z" * 32)
    other.chmod(0o600)
    code, out = run("--archive", str(write_archive(tmp_path / "a.jsonl", streams)), "--key-file", str(other))
    assert code == 1 and "bad_signature" in out


def test_a_public_key_verifies_eddsa(tmp_path: Path) -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    streams = make_streams(8, streams=1, signer=Ed25519Signer(private))
    pem = tmp_path / "pub.pem"
    pem.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    code, out = run("--archive", str(write_archive(tmp_path / "a.jsonl", streams)), "--public-key", str(pem))
    assert code == 0 and "EdDSA" in out, out


def test_forced_progress_runs_and_usage_errors_exit_2(tmp_path: Path, streams: Streams) -> None:
    archive = write_archive(tmp_path / "a.jsonl", streams)
    code, _ = run("--archive", str(archive), "--progress")
    assert code == 0
    code, out = run()
    assert code == 2 and "give --wal DIR or --archive FILE" in out
    code, out = run("--wal", str(tmp_path / "nowhere"))
    assert code == 1 and "does not exist" in out
