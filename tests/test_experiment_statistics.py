"""The statistics of experiment reports and guards (release/experiment.py).

Intervals are checked by what they promise: over many simulated experiments
with a known truth, the truth lies inside about as often as the confidence
says (never much less), and the guard's repeated looks raise false alarms
no more often than its alpha.
"""

from __future__ import annotations

import math
import random

import pytest

from unveil.release.experiment import (
    QUANTILES,
    error_breakdown,
    exceeds,
    mismatch_rate,
    quantile_difference,
    quantile_interval,
    wilson,
)
from unveil.release.histogram import Histogram


def test_wilson_matches_the_textbook_values() -> None:
    none = wilson(0, 10)
    assert none.value == 0.0
    assert none.low == 0.0
    assert none.high == pytest.approx(0.2775, abs=1e-4)
    half = wilson(5, 10)
    assert (half.low, half.high) == (
        pytest.approx(0.2366, abs=1e-4),
        pytest.approx(0.7634, abs=1e-4),
    )
    assert wilson(10, 10).high == 1.0


def test_no_runs_give_no_rate_and_bad_counts_are_refused() -> None:
    empty = mismatch_rate(0, 0)
    assert (empty.value, empty.low, empty.high) == (None, None, None)
    with pytest.raises(ValueError, match="not a count"):
        wilson(3, 2)
    with pytest.raises(ValueError, match="confidence"):
        wilson(1, 2, confidence=1.0)


def test_the_mismatch_rate_interval_covers_a_known_rate_at_its_confidence() -> None:
    rng = random.Random(14)
    truth, runs, trials = 0.03, 1000, 2000
    covered = 0
    for _ in range(trials):
        mismatches = sum(rng.random() < truth for _ in range(runs))
        rate = mismatch_rate(runs - mismatches, mismatches)
        assert rate.low is not None
        assert rate.high is not None
        covered += rate.low <= truth <= rate.high
    assert covered / trials >= 0.93, covered / trials


def test_ignored_and_failed_runs_are_not_comparisons() -> None:
    """mismatch_rate takes matches and mismatches only: the caller leaves the rest out."""
    rate = mismatch_rate(97, 3)
    assert rate.value == pytest.approx(0.03)


def _latencies(rng: random.Random, n: int, shift: float = 0.0) -> list[float]:
    return [rng.lognormvariate(math.log(20.0), 0.3) + shift for _ in range(n)]


def _true_quantile(q: float, shift: float = 0.0) -> float:
    from statistics import NormalDist

    return math.exp(math.log(20.0) + 0.3 * NormalDist().inv_cdf(q)) + shift


@pytest.mark.parametrize(("name", "q"), QUANTILES)
def test_quantile_intervals_cover_the_true_quantile(name: str, q: float) -> None:
    rng = random.Random(f"quantile {name}")
    trials, covered = 300, 0
    for _ in range(trials):
        interval = quantile_interval(Histogram.of(_latencies(rng, 2000)), q)
        assert interval.low is not None
        assert interval.high is not None
        assert interval.low <= (interval.value or 0) <= interval.high
        covered += interval.low <= _true_quantile(q) <= interval.high
    assert covered / trials >= 0.93, f"{name}: {covered / trials}"


def test_a_quantile_beyond_the_data_is_unbounded_and_an_empty_one_unknown() -> None:
    few = Histogram.of([10.0 + i for i in range(20)])
    p99 = quantile_interval(few, 0.99)
    assert p99.value is not None
    assert p99.high is None
    assert quantile_interval(Histogram(), 0.5).value is None
    with pytest.raises(ValueError, match="quantile"):
        quantile_interval(few, 1.0)


@pytest.mark.parametrize(("name", "q"), QUANTILES)
def test_the_difference_interval_covers_a_known_slowdown(name: str, q: float) -> None:
    """The candidate is the control's distribution 5 ms later: every quantile is 5 ms up."""
    rng = random.Random(f"difference {name}")
    trials, covered = 200, 0
    for _ in range(trials):
        control = Histogram.of(_latencies(rng, 3000))
        candidate = Histogram.of(_latencies(rng, 3000, shift=5.0))
        found = quantile_difference(control, candidate, q).difference
        assert found.low is not None
        assert found.high is not None
        assert found.value is not None
        covered += found.low <= 5.0 <= found.high
        if q == 0.5:  # a 5 ms slowdown at 20 ms is seen in the middle (bucket edges
            assert found.low > 0.0  # widen the tails' intervals to around zero)
    assert covered / trials >= 0.95, f"{name}: {covered / trials}"


def test_no_difference_without_both_paths() -> None:
    found = quantile_difference(Histogram(), Histogram.of([1.0, 2.0]), 0.5)
    assert found.difference.value is None
    assert found.candidate.value is not None


def test_errors_are_broken_down_most_frequent_first() -> None:
    assert error_breakdown({"ValueError": 1, "KeyError": 3, "other": 1}, 100) == [
        {"type": "KeyError", "count": 3, "share": 0.03},
        {"type": "ValueError", "count": 1, "share": 0.01},
        {"type": "other", "count": 1, "share": 0.01},
    ]
    assert error_breakdown({"KeyError": 1}, 0)[0]["share"] is None


def test_the_guard_stays_quiet_at_the_maximum_however_often_it_looks() -> None:
    """Rate exactly at the maximum, looked at after every 100 runs up to 20,000: the
    share of experiments that ever cross stays below alpha (5%)."""
    rng = random.Random(7)
    experiments, alarms = 200, 0
    for _ in range(experiments):
        mismatches = runs = 0
        for _look in range(200):
            mismatches += sum(rng.random() < 0.01 for _ in range(100))
            runs += 100
            if exceeds(mismatches, runs, 0.01, with_bound=False).exceeded:
                alarms += 1
                break
    assert alarms / experiments <= 0.05, alarms / experiments


def test_the_guard_fails_a_clearly_higher_rate_but_not_before_min_runs() -> None:
    early = exceeds(12, 200, 0.01, min_runs=500)
    assert not early.exceeded
    assert early.log_evidence > math.log(20)
    late = exceeds(30, 1000, 0.01, min_runs=500)
    assert late.exceeded
    assert late.lower is not None
    assert 0.01 < late.lower < 0.03
    data = late.as_data()
    assert data["mismatch_rate"] == 0.03
    assert data["exceeded"] is True


def test_the_guard_passes_a_rate_below_the_maximum_and_its_lower_bound_stays_below() -> None:
    check = exceeds(5, 1000, 0.01)
    assert not check.exceeded
    assert check.lower is not None
    assert check.lower < 0.005
    assert exceeds(0, 0, 0.01).lower is None
    assert exceeds(0, 50, 0.01).lower == 0.0


def test_the_guard_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="mismatches"):
        exceeds(5, 4, 0.01)
    with pytest.raises(ValueError, match="max_rate"):
        exceeds(1, 4, 0.0)
    with pytest.raises(ValueError, match="alpha"):
        exceeds(1, 4, 0.5, alpha=1.0)


def test_values_at_the_edges_of_the_format_leave_an_end_open() -> None:
    """Below 0.01 ms (the underflow bucket) nothing bounds a value from below, above
    the overflow bucket nothing from above: the interval says so with None."""
    tiny = quantile_interval(Histogram.of([0.001] * 500), 0.5)
    assert tiny.low is None
    assert tiny.high is not None
    huge = quantile_interval(Histogram.of([1e8] * 500), 0.5)
    assert huge.high is None
    assert huge.low is not None
    assert tiny.as_data() == {"value": 0.01, "low": None, "high": round(tiny.high, 6)}


def test_the_guard_with_one_mismatch_bounds_the_rate_only_by_zero() -> None:
    assert exceeds(1, 1000, 0.01).lower == 0.0
    # a maximum so high that no rate above it is tested gives no evidence at all
    assert exceeds(60, 60, 0.99).log_evidence == 0.0
