"""Signers write verifiable proofs over the canonical form; any change to the record breaks them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otel_audit.canonical import canonical_bytes
from otel_audit.exceptions import ConfigError
from otel_audit.integrity.signing import (
    Ed25519Signer,
    Ed25519Verifier,
    Es256Signer,
    Es256Verifier,
    HmacSha256Signer,
    Signer,
    key_fingerprint,
    load_signing_key,
    read_hmac_key_file,
    sign_record,
    signer_from_env,
)
from otel_audit.record import build_audit_log_record

KEY = bytes(range(32))


def record() -> LogRecord:
    return build_audit_log_record(
        "user.login.success",
        actor_id="u1",
        actor_type="user",
        action="LOGIN",
        outcome="success",
        record_id="r-1",
        attributes={"n": 1},
    ).proto


def signers() -> list[Signer]:
    return [
        HmacSha256Signer(KEY),
        Ed25519Signer(ed25519.Ed25519PrivateKey.generate()),
        Es256Signer(ec.generate_private_key(ec.SECP256R1())),
    ]


def attribute(proto: LogRecord, key: str) -> str:
    return next(str(kv.value.string_value) for kv in proto.attributes if kv.key == key)


@pytest.mark.parametrize("signer", signers(), ids=lambda s: s.algorithm)
def test_signed_record_verifies(signer: Signer) -> None:
    proto = record()
    sign_record(proto, signer)
    assert attribute(proto, "audit.integrity.signer") == "producer"
    assert attribute(proto, "audit.integrity.canonicalization") == "jcs"
    assert signer.verifier().verify(proto)


@pytest.mark.parametrize("signer", signers(), ids=lambda s: s.algorithm)
def test_tampered_record_fails_verification(signer: Signer) -> None:
    """Editing an attribute, a timestamp or the proof itself is detected."""
    for tamper in (
        lambda p: p.attributes[2].value.__setattr__("string_value", "mallory"),
        lambda p: setattr(p, "time_unix_nano", p.time_unix_nano - 1),
        lambda p: p.attributes.add(key="added").value.__setattr__("string_value", "x"),
    ):
        proto = record()
        sign_record(proto, signer)
        tamper(proto)
        assert not signer.verifier().verify(proto)


@pytest.mark.parametrize("signer", signers(), ids=lambda s: s.algorithm)
def test_forged_or_missing_proof_fails_verification(signer: Signer) -> None:
    proto = record()
    assert not signer.verifier().verify(proto)  # unsigned
    sign_record(proto, signer)
    value = next(kv for kv in proto.attributes if kv.key == "audit.integrity.value")
    proof = bytearray(base64.b64decode(value.value.string_value))
    proof[0] ^= 1
    value.value.string_value = base64.b64encode(bytes(proof)).decode()
    assert not signer.verifier().verify(proto)
    value.value.string_value = "not base64!"
    assert not signer.verifier().verify(proto)


def test_hmac_proof_is_the_hmac_of_the_canonical_bytes() -> None:
    """A third party recomputes it with nothing but the key and the canonical form."""
    proto = record()
    sign_record(proto, HmacSha256Signer(KEY))
    expected = hmac.new(KEY, canonical_bytes(proto), hashlib.sha256).digest()
    assert base64.b64decode(attribute(proto, "audit.integrity.value")) == expected


def test_resigning_replaces_the_previous_proof() -> None:
    proto = record()
    sign_record(proto, HmacSha256Signer(KEY))
    sign_record(proto, HmacSha256Signer(KEY))
    assert [kv.key for kv in proto.attributes].count("audit.integrity.value") == 1


def test_wrong_key_fails_verification() -> None:
    proto = record()
    sign_record(proto, HmacSha256Signer(KEY))
    assert not HmacSha256Signer(bytes(32)).verifier().verify(proto)
    sign_record(proto, Ed25519Signer(ed25519.Ed25519PrivateKey.generate()))
    assert not Ed25519Signer(ed25519.Ed25519PrivateKey.generate()).verifier().verify(proto)


def test_es256_proof_is_jws_raw_r_s() -> None:
    proto = record()
    sign_record(proto, Es256Signer(ec.generate_private_key(ec.SECP256R1())))
    assert len(base64.b64decode(attribute(proto, "audit.integrity.value"))) == 64


def test_es256_rejects_other_curves() -> None:
    with pytest.raises(ConfigError, match="P-256"):
        Es256Signer(ec.generate_private_key(ec.SECP384R1()))


def test_resource_attributes_name_the_algorithm_and_key() -> None:
    """HMAC never publishes a certificate; signatures publish the key's sha256 fingerprint."""
    assert HmacSha256Signer(KEY).resource_attributes() == {"audit.integrity.algorithm": "HMAC-SHA256"}
    key = ed25519.Ed25519PrivateKey.generate()
    attributes = Ed25519Signer(key).resource_attributes()
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert attributes == {
        "audit.integrity.algorithm": "EdDSA",
        "audit.integrity.certificate": "sha256:" + hashlib.sha256(der).hexdigest(),
    }
    assert key_fingerprint(key.public_key()) == attributes["audit.integrity.certificate"]
    es = Es256Signer(ec.generate_private_key(ec.SECP256R1())).resource_attributes()
    assert es["audit.integrity.algorithm"] == "ES256"


def test_short_hmac_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="at least 32"):
        HmacSha256Signer(b"short")


def test_hmac_key_file_raw_and_text_forms(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.write_bytes(b"\xff" * 31 + b"\n")  # binary: the newline byte is part of the key
    raw.chmod(0o600)
    assert read_hmac_key_file(raw) == b"\xff" * 31 + b"\n"
    text = tmp_path / "text"
    text.write_text("ab" * 32 + "\n")
    text.chmod(0o600)
    assert read_hmac_key_file(text) == b"ab" * 32


def test_group_readable_hmac_key_file_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "key"
    path.write_bytes(KEY)
    path.chmod(0o644)
    read_hmac_key_file(path)
    assert "chmod 600" in caplog.text


def test_missing_key_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope"):
        read_hmac_key_file(tmp_path / "nope")


def _write_pem(path: Path, key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path


def _write_public_pem(path: Path, key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def test_pem_keys_load_as_the_matching_signer_and_verify_from_public_pem(tmp_path: Path) -> None:
    ed_key = ed25519.Ed25519PrivateKey.generate()
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_signer = load_signing_key(_write_pem(tmp_path / "ed.pem", ed_key))
    ec_signer = load_signing_key(_write_pem(tmp_path / "ec.pem", ec_key))
    assert isinstance(ed_signer, Ed25519Signer)
    assert isinstance(ec_signer, Es256Signer)
    for signer, verifier in (
        (ed_signer, Ed25519Verifier.from_pem_file(_write_public_pem(tmp_path / "ed.pub", ed_key))),
        (ec_signer, Es256Verifier.from_pem_file(_write_public_pem(tmp_path / "ec.pub", ec_key))),
    ):
        proto = record()
        sign_record(proto, signer)
        assert verifier.verify(proto)


def test_garbage_pem_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.pem"
    path.write_text("not a key")
    with pytest.raises(ConfigError, match="bad.pem"):
        load_signing_key(path)


def test_signer_from_env(tmp_path: Path) -> None:
    key_file = tmp_path / "hmac"
    key_file.write_bytes(os.urandom(32))
    key_file.chmod(0o600)
    pem = _write_pem(tmp_path / "ed.pem", ed25519.Ed25519PrivateKey.generate())
    assert signer_from_env({}) is None
    assert isinstance(signer_from_env({"OTEL_AUDIT_HMAC_KEY_FILE": str(key_file)}), HmacSha256Signer)
    assert isinstance(signer_from_env({"OTEL_AUDIT_SIGNING_KEY_FILE": str(pem)}), Ed25519Signer)
    with pytest.raises(ConfigError, match="not both"):
        signer_from_env({"OTEL_AUDIT_HMAC_KEY_FILE": str(key_file), "OTEL_AUDIT_SIGNING_KEY_FILE": str(pem)})


def test_worked_example_of_docs_integrity_md() -> None:
    """The HMAC value printed in docs/integrity.md for the draft's login example."""
    proto = build_audit_log_record(
        "user.login.success",
        actor_id="u8472",
        actor_type="user",
        action="LOGIN",
        outcome="success",
        target_id="/api/auth/session",
        target_type="http.endpoint",
        source_id="203.0.113.42",
        attributes={"audit.schema.version": "1.0.0", "session.id": "sess-abc123", "tls.version": "TLSv1.3"},
        record_id="a1b2c3d4-e5f6-7890-abcd-ef1234567890",
        timestamp=1714041600000000000,
        observed_timestamp_ns=1714041600001000000,
    ).proto
    sign_record(proto, HmacSha256Signer(b"0123456789abcdef0123456789abcdef"))
    assert attribute(proto, "audit.integrity.value") == "02T8/oIuIJ3e/5F5U82tqJ5jk4LBKj/nH53rnudO49s="
