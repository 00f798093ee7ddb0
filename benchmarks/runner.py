"""Runs one variant in a fresh interpreter and returns its JSON result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class VariantError(RuntimeError):
    """A variant process failed; the message carries its error and the end of its stderr."""


def run_variant(spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Run ``python -m benchmarks.variant <spec>`` from the repository root; return its result.

    Raises:
        VariantError: the process exited non-zero, printed no result, reported an error, or ran
            past ``timeout_s``.
    """
    name = spec.get("variant", spec["kind"])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))),
    }
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.variant", json.dumps(spec)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise VariantError(f"{name}: no result within {timeout_s:.0f} s") from exc
    lines = proc.stdout.strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    except json.JSONDecodeError:
        result = {}
    if proc.returncode != 0 or not result or "error" in result or result.get("errors"):
        problem = result.get("error") or result.get("errors") or f"exit code {proc.returncode}"
        raise VariantError(f"{name}: {problem}\n--- stderr (tail) ---\n{proc.stderr[-3000:]}")
    return result
