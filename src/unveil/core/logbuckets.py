"""The bucket arithmetic of unveil's log-spaced histograms, shared by SDK and server.

Why here: the SDK sums tracked values into histogram buckets before it
sends them, the server keeps those buckets per 10-second window and the
judge (release/histogram.py) reads them. All three must put a value in the
same bucket, so the boundaries live in one pure module that each may
import (the SDK may import the core, not the release logic).

The format, version 1 (these numbers are a storage and wire format: never
change them in place; a new format gets a new version):

- regular bucket ``i`` (1 <= i <= 240) holds values in
  ``[0.01 * 2**((i-1)/8), 0.01 * 2**(i/8))``: each bucket is 2**(1/8), about
  9.05%, wider than the one before, from 0.01 to 0.01 * 2**30 (about 1.07e7);
- bucket 0 (underflow) holds values below 0.01, zero and negatives included;
- bucket 241 (overflow) holds values of 2**30 * 0.01 and above.

A value read back as its bucket's geometric middle is within
``RELATIVE_ERROR`` (about 4.4%) of the value recorded.
"""

from __future__ import annotations

import bisect
import math

__all__ = [
    "BUCKETS_PER_DOUBLING",
    "FORMAT_VERSION",
    "GROWTH",
    "HIGHEST",
    "LARGEST_VALUE",
    "LOWEST",
    "OVERFLOW",
    "REGULAR_BUCKETS",
    "RELATIVE_ERROR",
    "UNDERFLOW",
    "HistogramError",
    "bucket_lower",
    "bucket_middle",
    "bucket_of",
    "bucket_upper",
    "check_index",
]

FORMAT_VERSION = 1
LOWEST = 0.01
BUCKETS_PER_DOUBLING = 8
REGULAR_BUCKETS = 240
UNDERFLOW = 0
OVERFLOW = REGULAR_BUCKETS + 1
GROWTH = 2.0 ** (1.0 / BUCKETS_PER_DOUBLING)
#: the largest magnitude of a value or of one summary's sum that SDKs send and the
#: server takes: far beyond any measurement, and small enough that no number of them
#: added up (in a window, or windows merged for a report) can overflow to infinity
LARGEST_VALUE = 1e200
#: a value read back as its bucket's geometric middle is within this share of
#: the value that was recorded (for values inside the regular range)
RELATIVE_ERROR = 2.0 ** (1.0 / (2 * BUCKETS_PER_DOUBLING)) - 1.0

# _BOUNDS[k] is the lower end of regular bucket k + 1; _BOUNDS[-1] is the
# lower end of the overflow bucket. A table, not a logarithm per value, so
# that where a value lands is decided by comparisons alone (and so is the
# same on every machine that computes the table the same way).
_BOUNDS: tuple[float, ...] = tuple(
    LOWEST * 2.0 ** (k / BUCKETS_PER_DOUBLING) for k in range(REGULAR_BUCKETS + 1)
)
HIGHEST = _BOUNDS[-1]


class HistogramError(ValueError):
    """A value or a stored histogram that the format cannot hold."""


def bucket_of(value: float) -> int:
    """The bucket a value falls in (0 underflow, 1..240 regular, 241 overflow)."""
    if not math.isfinite(value):
        raise HistogramError(f"value: {value!r} is not a finite number")
    return bisect.bisect_right(_BOUNDS, value)


def check_index(index: int) -> None:
    """Refuse a bucket index the format does not have."""
    if not UNDERFLOW <= index <= OVERFLOW:
        raise HistogramError(f"bucket: {index} is outside 0..{OVERFLOW}")


def bucket_lower(index: int) -> float:
    """The smallest value of a regular or overflow bucket (underflow: -inf)."""
    check_index(index)
    if index == UNDERFLOW:
        return -math.inf
    return _BOUNDS[index - 1]


def bucket_upper(index: int) -> float:
    """The first value past a bucket (overflow: +inf)."""
    check_index(index)
    if index == OVERFLOW:
        return math.inf
    return _BOUNDS[index]


def bucket_middle(index: int) -> float:
    """The value a bucket stands for: its geometric middle (edges for under/overflow)."""
    check_index(index)
    if index == UNDERFLOW:
        return LOWEST
    if index == OVERFLOW:
        return HIGHEST
    return LOWEST * math.pow(2.0, (index - 0.5) / BUCKETS_PER_DOUBLING)
