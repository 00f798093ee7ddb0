"""Producer signatures over the canonical form (HMAC-SHA256, Ed25519, ES256) and their verifiers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Final, Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otel_audit import config
from otel_audit.canonical import INTEGRITY_PREFIX, canonical_bytes
from otel_audit.exceptions import ConfigError

_logger = logging.getLogger(__name__)

ATTR_INTEGRITY_VALUE: Final = "audit.integrity.value"
ATTR_INTEGRITY_SIGNER: Final = "audit.integrity.signer"
ATTR_INTEGRITY_CANONICALIZATION: Final = "audit.integrity.canonicalization"
RESOURCE_INTEGRITY_ALGORITHM: Final = "audit.integrity.algorithm"
RESOURCE_INTEGRITY_CERTIFICATE: Final = "audit.integrity.certificate"
SIGNER_PRODUCER: Final = "producer"
CANONICALIZATION_JCS: Final = "jcs"

ALGORITHM_HMAC_SHA256: Final = "HMAC-SHA256"
ALGORITHM_EDDSA: Final = "EdDSA"
ALGORITHM_ES256: Final = "ES256"

ENV_HMAC_KEY_FILE: Final = config.OTEL_AUDIT_HMAC_KEY_FILE
"""File holding the HMAC-SHA256 key (see `read_hmac_key_file` for the format)."""
ENV_SIGNING_KEY_FILE: Final = config.OTEL_AUDIT_SIGNING_KEY_FILE
"""PEM (PKCS#8) private key file: Ed25519 (EdDSA) or P-256 (ES256), chosen by the key's type."""

MIN_HMAC_KEY_BYTES: Final = 32


@runtime_checkable
class Verifier(Protocol):
    """Checks a proof over canonical bytes; `verify` checks a whole signed record."""

    @property
    def algorithm(self) -> str:
        """The `audit.integrity.algorithm` value this verifier accepts."""
        ...

    def verify_bytes(self, data: bytes, proof: bytes) -> bool:
        """True when `proof` is valid for `data`; never raises on a bad proof."""
        ...

    def verify(self, record: LogRecord) -> bool:
        """True when the record's `audit.integrity.value` matches its canonical form."""
        ...


@runtime_checkable
class Signer(Protocol):
    """Computes the proof written to `audit.integrity.value`; thread-safe, no I/O."""

    @property
    def algorithm(self) -> str:
        """The `audit.integrity.algorithm` resource attribute value (a JWA/IANA name)."""
        ...

    def sign(self, data: bytes) -> bytes:
        """The raw proof (MAC or signature) over `data`, the record's canonical bytes."""
        ...

    def resource_attributes(self) -> dict[str, str]:
        """The resource attributes to publish with every record this signer signs."""
        ...

    def verifier(self) -> Verifier:
        """A verifier for this signer's proofs (same key for HMAC, the public key otherwise)."""
        ...


class _RecordVerifier:
    """`verify(record)` for every verifier: one place decides what a valid signed record is."""

    algorithm: str

    def verify_bytes(self, data: bytes, proof: bytes) -> bool:
        raise NotImplementedError

    def verify(self, record: LogRecord) -> bool:
        """True when the record carries a producer proof in JCS form that matches its content."""
        proof_text = canonicalization = None
        for kv in record.attributes:
            if kv.key == ATTR_INTEGRITY_VALUE:
                proof_text = kv.value.string_value
            elif kv.key == ATTR_INTEGRITY_CANONICALIZATION:
                canonicalization = kv.value.string_value
        if proof_text is None or canonicalization not in (None, CANONICALIZATION_JCS):
            return False
        try:
            proof = base64.b64decode(proof_text, validate=True)
        except ValueError:
            return False
        return self.verify_bytes(canonical_bytes(record), proof)


class HmacSha256Verifier(_RecordVerifier):
    """Verifies HMAC-SHA256 proofs with the shared key."""

    algorithm = ALGORITHM_HMAC_SHA256

    def __init__(self, key: bytes) -> None:
        self._key = bytes(key)

    def verify_bytes(self, data: bytes, proof: bytes) -> bool:
        return hmac.compare_digest(hmac.digest(self._key, data, "sha256"), proof)


class HmacSha256Signer:
    """HMAC-SHA256 with a shared key; `audit.integrity.certificate` is never set (draft rule)."""

    algorithm = ALGORITHM_HMAC_SHA256

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_HMAC_KEY_BYTES:
            raise ConfigError(
                f"HMAC-SHA256 key has {len(key)} bytes; use at least {MIN_HMAC_KEY_BYTES}"
                " (e.g. `head -c 32 /dev/urandom > key`)"
            )
        self._key = bytes(key)

    @classmethod
    def from_key_file(cls, path: str | os.PathLike[str]) -> HmacSha256Signer:
        """Load the key with `read_hmac_key_file`."""
        return cls(read_hmac_key_file(path))

    def sign(self, data: bytes) -> bytes:
        return hmac.digest(self._key, data, "sha256")

    def resource_attributes(self) -> dict[str, str]:
        return {RESOURCE_INTEGRITY_ALGORITHM: self.algorithm}

    def verifier(self) -> HmacSha256Verifier:
        return HmacSha256Verifier(self._key)


class Ed25519Verifier(_RecordVerifier):
    """Verifies EdDSA (Ed25519) signatures with the public key."""

    algorithm = ALGORITHM_EDDSA

    def __init__(self, public_key: ed25519.Ed25519PublicKey) -> None:
        self._key = public_key
        self.certificate = key_fingerprint(public_key)

    @classmethod
    def from_pem_file(cls, path: str | os.PathLike[str]) -> Ed25519Verifier:
        """Load a PEM SubjectPublicKeyInfo Ed25519 public key."""
        key = _load_public_key(path)
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise ConfigError(f"{path}: not an Ed25519 public key ({type(key).__name__})")
        return cls(key)

    def verify_bytes(self, data: bytes, proof: bytes) -> bool:
        try:
            self._key.verify(proof, data)
        except InvalidSignature:
            return False
        return True


class Ed25519Signer:
    """EdDSA over Ed25519 (RFC 8032): a 64-byte signature of the canonical bytes themselves."""

    algorithm = ALGORITHM_EDDSA

    def __init__(self, private_key: ed25519.Ed25519PrivateKey) -> None:
        self._key = private_key
        self._public = private_key.public_key()
        self.certificate = key_fingerprint(self._public)

    @classmethod
    def from_pem_file(cls, path: str | os.PathLike[str], password: bytes | None = None) -> Ed25519Signer:
        """Load a PEM (PKCS#8) Ed25519 private key."""
        key = _load_private_key(path, password)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ConfigError(f"{path}: not an Ed25519 private key ({type(key).__name__})")
        return cls(key)

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def resource_attributes(self) -> dict[str, str]:
        return {
            RESOURCE_INTEGRITY_ALGORITHM: self.algorithm,
            RESOURCE_INTEGRITY_CERTIFICATE: self.certificate,
        }

    def verifier(self) -> Ed25519Verifier:
        return Ed25519Verifier(self._public)


class Es256Verifier(_RecordVerifier):
    """Verifies ES256 signatures (JWS form: 64 bytes r||s) with the P-256 public key."""

    algorithm = ALGORITHM_ES256

    def __init__(self, public_key: ec.EllipticCurvePublicKey) -> None:
        _require_p256(public_key.curve, "public key")
        self._key = public_key
        self.certificate = key_fingerprint(public_key)

    @classmethod
    def from_pem_file(cls, path: str | os.PathLike[str]) -> Es256Verifier:
        """Load a PEM SubjectPublicKeyInfo P-256 public key."""
        key = _load_public_key(path)
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ConfigError(f"{path}: not an EC public key ({type(key).__name__})")
        return cls(key)

    def verify_bytes(self, data: bytes, proof: bytes) -> bool:
        if len(proof) != 64:
            return False
        signature = encode_dss_signature(int.from_bytes(proof[:32], "big"), int.from_bytes(proof[32:], "big"))
        try:
            self._key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True


class Es256Signer:
    """ECDSA P-256 with SHA-256 over the canonical bytes; the proof is JWS's 64-byte r||s, not DER."""

    algorithm = ALGORITHM_ES256

    def __init__(self, private_key: ec.EllipticCurvePrivateKey) -> None:
        _require_p256(private_key.curve, "private key")
        self._key = private_key
        self._public = private_key.public_key()
        self.certificate = key_fingerprint(self._public)

    @classmethod
    def from_pem_file(cls, path: str | os.PathLike[str], password: bytes | None = None) -> Es256Signer:
        """Load a PEM (PKCS#8 or SEC1) P-256 private key."""
        key = _load_private_key(path, password)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{path}: not an EC private key ({type(key).__name__})")
        return cls(key)

    def sign(self, data: bytes) -> bytes:
        r, s = decode_dss_signature(self._key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def resource_attributes(self) -> dict[str, str]:
        return {
            RESOURCE_INTEGRITY_ALGORITHM: self.algorithm,
            RESOURCE_INTEGRITY_CERTIFICATE: self.certificate,
        }

    def verifier(self) -> Es256Verifier:
        return Es256Verifier(self._public)


def apply_signature(record: LogRecord, canonical: bytes, signer: Signer, *, replace: bool = True) -> None:
    """Replace the record's `audit.integrity.*` attributes with `signer`'s proof over `canonical`.

    `canonical` must be `canonical_bytes(record)`; callers that already hashed the record pass
    the bytes they hashed, so the record is rendered once. `replace=False` skips looking for
    old proofs, for callers that know there are none (a freshly built record).
    """
    if replace:
        strip_integrity(record)
    add = record.attributes.add
    add(key=ATTR_INTEGRITY_VALUE).value.string_value = base64.b64encode(signer.sign(canonical)).decode(
        "ascii"
    )
    add(key=ATTR_INTEGRITY_SIGNER).value.string_value = SIGNER_PRODUCER
    add(key=ATTR_INTEGRITY_CANONICALIZATION).value.string_value = CANONICALIZATION_JCS


def sign_record(record: LogRecord, signer: Signer) -> None:
    """Sign a record that is not part of a chain (the chain signs as it seals)."""
    apply_signature(record, canonical_bytes(record), signer)


def strip_integrity(record: LogRecord) -> None:
    """Remove every `audit.integrity.*` attribute (they are outside the canonical form anyway)."""
    attributes = record.attributes
    for index in range(len(attributes) - 1, -1, -1):
        if attributes[index].key.startswith(INTEGRITY_PREFIX):
            del attributes[index]


def key_fingerprint(public_key: ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey) -> str:
    """`sha256:<lowercase hex>` of the public key's DER SubjectPublicKeyInfo.

    The draft's fingerprint form hashes a DER certificate; we sign with bare keys, so the
    fingerprint identifies the key (`openssl pkey -pubin -outform DER | sha256sum` gives it).
    """
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def read_hmac_key_file(path: str | os.PathLike[str]) -> bytes:
    """Read an HMAC key file: its bytes are the key, except that a text file loses trailing whitespace.

    So both `head -c 32 /dev/urandom > key` (raw) and `openssl rand -hex 32 > key` (64 ASCII
    characters, used as they are, not hex-decoded) work. A key readable by group or others is
    logged as a warning.
    """
    file = Path(path)
    try:
        data = file.read_bytes()
        mode = file.stat().st_mode
    except OSError as error:
        raise ConfigError(
            f"cannot read HMAC key file {file}: {error.strerror}; check {ENV_HMAC_KEY_FILE}"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        _logger.warning("HMAC key file %s is accessible by group or others; chmod 600 it", file)
    if data.isascii() and all(32 <= byte < 127 or byte in b"\t\r\n" for byte in data):
        data = data.rstrip()
    return data


def load_signing_key(
    path: str | os.PathLike[str], password: bytes | None = None
) -> Ed25519Signer | Es256Signer:
    """A signer for a PEM private key file: Ed25519 gives EdDSA, P-256 gives ES256."""
    key = _load_private_key(path, password)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return Ed25519Signer(key)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return Es256Signer(key)
    raise ConfigError(f"{path}: unsupported private key type {type(key).__name__}; use Ed25519 or P-256")


def load_public_key(path: str | os.PathLike[str]) -> Ed25519Verifier | Es256Verifier:
    """A verifier for a PEM public key file: Ed25519 verifies EdDSA, P-256 verifies ES256.

    Its `certificate` is the `sha256:<hex>` fingerprint the signer publishes on the Resource.
    """
    key = _load_public_key(path)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return Ed25519Verifier(key)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return Es256Verifier(key)
    raise ConfigError(f"{path}: unsupported public key type {type(key).__name__}; use Ed25519 or P-256")


def hmac_verifier_from_key_file(path: str | os.PathLike[str]) -> HmacSha256Verifier:
    """A verifier for an HMAC key file in the format `read_hmac_key_file` reads."""
    return HmacSha256Verifier(read_hmac_key_file(path))


def signer_from_env(environ: Mapping[str, str] | None = None) -> Signer | None:
    """The signer configured by OTEL_AUDIT_HMAC_KEY_FILE or OTEL_AUDIT_SIGNING_KEY_FILE, or None.

    Setting both is a configuration error: which proof a record carries must not be a guess.
    """
    env = os.environ if environ is None else environ
    hmac_file, key_file = env.get(ENV_HMAC_KEY_FILE), env.get(ENV_SIGNING_KEY_FILE)
    if hmac_file and key_file:
        raise ConfigError(f"set {ENV_HMAC_KEY_FILE} or {ENV_SIGNING_KEY_FILE}, not both")
    if hmac_file:
        return HmacSha256Signer.from_key_file(hmac_file)
    if key_file:
        return load_signing_key(key_file)
    return None


def _load_private_key(path: str | os.PathLike[str], password: bytes | None) -> object:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"cannot read signing key file {path}: {error.strerror}") from None
    try:
        return serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{path}: not a usable PEM private key ({error})") from None


def _load_public_key(path: str | os.PathLike[str]) -> object:
    try:
        return serialization.load_pem_public_key(Path(path).read_bytes())
    except OSError as error:
        raise ConfigError(f"cannot read public key file {path}: {error.strerror}") from None
    except ValueError as error:
        raise ConfigError(f"{path}: not a PEM public key ({error})") from None


def _require_p256(curve: ec.EllipticCurve, what: str) -> None:
    if not isinstance(curve, ec.SECP256R1):
        raise ConfigError(f"ES256 needs a P-256 (secp256r1) {what}, not {curve.name}")


__all__ = [
    "ALGORITHM_EDDSA",
    "ALGORITHM_ES256",
    "ALGORITHM_HMAC_SHA256",
    "ATTR_INTEGRITY_CANONICALIZATION",
    "ATTR_INTEGRITY_SIGNER",
    "ATTR_INTEGRITY_VALUE",
    "CANONICALIZATION_JCS",
    "ENV_HMAC_KEY_FILE",
    "ENV_SIGNING_KEY_FILE",
    "RESOURCE_INTEGRITY_ALGORITHM",
    "RESOURCE_INTEGRITY_CERTIFICATE",
    "SIGNER_PRODUCER",
    "Ed25519Signer",
    "Ed25519Verifier",
    "Es256Signer",
    "Es256Verifier",
    "HmacSha256Signer",
    "HmacSha256Verifier",
    "Signer",
    "Verifier",
    "apply_signature",
    "hmac_verifier_from_key_file",
    "key_fingerprint",
    "load_public_key",
    "load_signing_key",
    "read_hmac_key_file",
    "sign_record",
    "signer_from_env",
    "strip_integrity",
]
