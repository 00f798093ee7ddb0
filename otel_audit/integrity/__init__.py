"""Tamper evidence for audit records: the per-stream hash chain and producer signatures."""

from otel_audit.integrity.chain import (
    ATTR_SEQUENCE_END,
    ATTR_SEQUENCE_NUMBER,
    ATTR_SEQUENCE_PREVIOUS_HASH,
    ATTR_SEQUENCE_PREVIOUS_RECORD_ID,
    ATTR_SEQUENCE_STREAM_ID,
    ChainProblem,
    StreamChain,
    check_chain,
    stream_end_record,
)
from otel_audit.integrity.signing import (
    Ed25519Signer,
    Ed25519Verifier,
    Es256Signer,
    Es256Verifier,
    HmacSha256Signer,
    HmacSha256Verifier,
    Signer,
    Verifier,
    load_signing_key,
    sign_record,
    signer_from_env,
)

__all__ = [
    "ATTR_SEQUENCE_END",
    "ATTR_SEQUENCE_NUMBER",
    "ATTR_SEQUENCE_PREVIOUS_HASH",
    "ATTR_SEQUENCE_PREVIOUS_RECORD_ID",
    "ATTR_SEQUENCE_STREAM_ID",
    "ChainProblem",
    "Ed25519Signer",
    "Ed25519Verifier",
    "Es256Signer",
    "Es256Verifier",
    "HmacSha256Signer",
    "HmacSha256Verifier",
    "Signer",
    "StreamChain",
    "Verifier",
    "check_chain",
    "load_signing_key",
    "sign_record",
    "signer_from_env",
    "stream_end_record",
]
