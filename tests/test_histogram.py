"""The log-bucket histogram: a storage format, so its boundaries and errors are pinned."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unveil.release.histogram import (
    GROWTH,
    HIGHEST,
    LOWEST,
    OVERFLOW,
    RELATIVE_ERROR,
    UNDERFLOW,
    Histogram,
    HistogramError,
    bucket_lower,
    bucket_middle,
    bucket_of,
    bucket_upper,
)

VALUES = st.floats(min_value=LOWEST, max_value=HIGHEST, exclude_max=True, allow_nan=False)
ANY_VALUES = st.lists(st.floats(min_value=-10.0, max_value=2e7, allow_nan=False), max_size=60)


def test_the_format_constants_are_pinned() -> None:
    # Changing any of these silently would misread every stored window.
    assert LOWEST == 0.01
    assert OVERFLOW == 241
    assert pytest.approx(0.01 * 2**30) == HIGHEST
    assert pytest.approx(1.0905077326652577) == GROWTH
    assert pytest.approx(0.0442737824274138) == RELATIVE_ERROR
    assert bucket_of(0.01) == 1
    assert bucket_of(0.0099999) == UNDERFLOW
    assert bucket_of(0.0) == UNDERFLOW
    assert bucket_of(-3.0) == UNDERFLOW
    assert bucket_of(0.02) == 9  # one doubling = eight buckets
    assert bucket_of(100.0) == 107
    assert bucket_of(HIGHEST) == OVERFLOW
    assert bucket_of(1e12) == OVERFLOW


@settings(max_examples=300)
@given(VALUES)
def test_a_value_lies_in_its_bucket_and_its_middle_is_within_the_stated_error(x: float) -> None:
    b = bucket_of(x)
    assert 1 <= b <= 240
    assert bucket_lower(b) <= x < bucket_upper(b)
    assert abs(bucket_middle(b) / x - 1.0) <= RELATIVE_ERROR + 1e-12


def test_non_finite_values_and_bad_indexes_are_refused_by_name() -> None:
    with pytest.raises(HistogramError, match="value"):
        bucket_of(math.nan)
    with pytest.raises(HistogramError, match="value"):
        Histogram.of([1.0, math.inf])
    with pytest.raises(HistogramError, match="bucket: 242"):
        bucket_lower(242)


@given(ANY_VALUES, ANY_VALUES)
def test_merging_two_windows_equals_aggregating_their_values_together(
    a: list[float], b: list[float]
) -> None:
    merged = Histogram.of(a).merge(Histogram.of(b))
    together = Histogram.of(a + b)
    assert merged.buckets == together.buckets
    assert merged.count == together.count == len(a) + len(b)
    assert merged.total == pytest.approx(together.total)


@settings(max_examples=100)
@given(st.lists(VALUES, min_size=1, max_size=200), st.floats(0.0, 1.0))
def test_quantiles_are_within_one_bucket_of_the_exact_order_statistic(
    values: list[float], q: float
) -> None:
    h = Histogram.of(values)
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(values)))
    exact = ordered[rank - 1]
    estimate = h.quantile(q)
    assert exact / GROWTH <= estimate <= exact * GROWTH * (1 + 1e-12)


@given(ANY_VALUES)
def test_the_stored_form_round_trips_through_json(values: list[float]) -> None:
    h = Histogram.of(values)
    back = Histogram.from_dict(json.loads(json.dumps(h.to_dict())))
    assert back.buckets == h.buckets
    assert back.count == h.count
    assert back.total == pytest.approx(h.total)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"format": 2, "count": 0, "sum": 0, "buckets": {}}, "format"),
        ({"format": 1, "count": 1, "sum": 0, "buckets": []}, "buckets"),
        ({"format": 1, "count": 1, "sum": 0, "buckets": {"x": 1}}, "buckets"),
        ({"format": 1, "count": 1, "sum": 0, "buckets": {"3": -1}}, r"buckets\[3\]"),
        ({"format": 1, "count": 1, "sum": 0, "buckets": {"300": 1}}, "bucket: 300"),
        ({"format": 1, "count": 2, "sum": 0, "buckets": {"3": 1}}, "count"),
        ({"format": 1, "count": 1, "sum": "1", "buckets": {"3": 1}}, "sum"),
    ],
)
def test_a_bad_stored_histogram_is_refused_naming_the_field(
    data: dict[str, object], field: str
) -> None:
    with pytest.raises(HistogramError, match=field):
        Histogram.from_dict(data)


def test_empty_histogram_answers_nan_and_counts_from_a_bucket() -> None:
    assert math.isnan(Histogram().quantile(0.5))
    assert math.isnan(Histogram().mean)
    h = Histogram.of([1.0, 2.0, 4.0, 4.0])
    assert h.count_from(bucket_of(2.0)) == 3
    assert h.mean == pytest.approx(2.75)
    with pytest.raises(HistogramError, match="quantile"):
        h.quantile(1.5)
