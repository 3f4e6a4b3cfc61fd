"""The judge benchmark runs end to end (a tiny R) and prints every row of its table."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("numpy")
pytest.importorskip("scipy")

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import judge as bench  # noqa: E402
import judge_adapter  # noqa: E402


def test_a_tiny_run_prints_a_row_per_scenario_and_judge_and_the_release_rows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    table = bench.main(["--runs", "1/1", "--seed", "3"])
    assert table in capsys.readouterr().out
    for scenario in bench.SCENARIOS:
        for judge in bench.JUDGES:
            assert f"| {scenario.key}. {scenario.title} | {judge} | 1 |" in table
    assert "| errors x2: rolled back while at 1% | 1 |" in table
    assert "| healthy: completed without a rollback | 1 |" in table


def test_the_adapter_speaks_the_harness_interface() -> None:
    import numpy as np

    judge = judge_adapter.make(share=0.5, horizon_s=1800, interval_s=10, seed=0, mode="canary")
    rng = np.random.default_rng(0)
    for tick in range(1, 30):
        for arm in ("control", "treatment"):
            latencies = np.exp(np.log(100) + 0.5 * rng.standard_normal(200))
            latencies.setflags(write=False)
            errors = 40 if arm == "treatment" else 2
            judge.observe(arm, errors, 200, latencies, float(10 * tick))
        if judge.decision() != "continue":
            break
    assert judge.decision() == "fail"
    assert judge.explain()["fired"] == "errors:rate"
    judge.set_share(0.05, 300.0, 900.0)
    with pytest.raises(ValueError, match="mode"):
        judge_adapter.make(mode="blue-green")


def test_the_adapter_aggregates_exactly_as_the_server_does() -> None:
    import numpy as np

    from unveil.release.histogram import Histogram

    rng = np.random.default_rng(1)
    values = np.concatenate([np.exp(rng.normal(4.6, 2.0, 2000)), [0.0, -3.0, 0.01, 1e9, 1e12]])
    fast = judge_adapter.histogram_of(values)
    slow = Histogram.of(float(x) for x in values)
    assert fast.buckets == slow.buckets
    assert fast.count == slow.count
    assert fast.total == pytest.approx(slow.total)
    with pytest.raises(ValueError, match="finite"):
        judge_adapter.histogram_of(np.array([1.0, np.nan]))
