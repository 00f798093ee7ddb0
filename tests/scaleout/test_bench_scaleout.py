"""benchmarks/scaleout.py runs end to end (smallest size) and its table shows what it measured."""

from __future__ import annotations

import pytest

from benchmarks import scaleout

pytestmark = pytest.mark.e2e


def test_one_producer_through_one_gateway_is_measured_and_tabulated() -> None:
    results = scaleout.run("smoke", gateways=(1,), producers=(1,), log=lambda _: None)

    (row,) = results["rows"]
    assert row["records"] == scaleout.RECORDS_PER_PRODUCER["smoke"]
    assert row["records"] <= row["archived"] <= row["records"] + 1  # + the stream's end record
    assert 0 < row["acked_s"] <= row["archived_s"]
    table = scaleout.render(results)
    assert f"| 1 | 1 | {row['records']:,} | {row['acked_rate']:,.0f} |" in table
