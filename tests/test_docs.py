"""The configuration reference names every variable config.py defines."""

from __future__ import annotations

from pathlib import Path

import otel_audit.config as config

ROOT = Path(__file__).resolve().parent.parent


def test_every_otel_audit_variable_is_documented() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    names = [v for k, v in vars(config).items() if k.startswith("OTEL_AUDIT_") and isinstance(v, str)]
    assert names, "config.py defines no OTEL_AUDIT_* constants"
    missing = [n for n in names if n not in text]
    assert not missing, f"undocumented in docs/configuration.md: {missing}"
