"""The bucket arithmetic the SDK, the server and the judge share (core/logbuckets.py)."""

from __future__ import annotations

import math

import pytest

from unveil.core.logbuckets import (
    HIGHEST,
    LOWEST,
    OVERFLOW,
    RELATIVE_ERROR,
    UNDERFLOW,
    HistogramError,
    bucket_lower,
    bucket_middle,
    bucket_of,
    bucket_upper,
)


def test_the_edges_of_the_scale() -> None:
    assert bucket_of(-5.0) == bucket_of(0.0) == UNDERFLOW
    assert bucket_of(LOWEST) == 1
    assert bucket_of(HIGHEST) == OVERFLOW
    assert bucket_lower(UNDERFLOW) == -math.inf
    assert bucket_upper(UNDERFLOW) == LOWEST
    assert bucket_lower(OVERFLOW) == HIGHEST
    assert bucket_upper(OVERFLOW) == math.inf
    assert bucket_middle(UNDERFLOW) == LOWEST
    assert bucket_middle(OVERFLOW) == HIGHEST


@pytest.mark.parametrize("value", [0.013, 1.0, 182.0, 9.9e6])
def test_a_value_lies_in_its_bucket_and_its_middle_is_close(value: float) -> None:
    index = bucket_of(value)
    assert bucket_lower(index) <= value < bucket_upper(index)
    assert abs(bucket_middle(index) / value - 1.0) <= RELATIVE_ERROR + 1e-12


@pytest.mark.parametrize("index", [-1, OVERFLOW + 1])
def test_a_bucket_the_format_lacks_is_refused(index: int) -> None:
    with pytest.raises(HistogramError, match="outside"):
        bucket_middle(index)


def test_a_value_that_is_not_finite_is_refused() -> None:
    with pytest.raises(HistogramError, match="not a finite number"):
        bucket_of(math.nan)
