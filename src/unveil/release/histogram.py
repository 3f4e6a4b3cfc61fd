"""The fixed log-spaced histogram the server keeps per metric and 10-second window.

Why this shape: a guard must compare whole distributions and their tails,
not only means, yet the server keeps one aggregate per (environment, flag,
variant, metric, window) for days. A histogram whose bucket boundaries are a
constant of the format is small (only non-empty buckets are stored), merges
by adding counts (windows roll up into coarser ones exactly) and answers
quantiles with a known relative error.

The format's buckets (version 1) are defined in core/logbuckets.py, where the
SDK can share them: 240 regular buckets, each 2**(1/8) (about 9.05%) wider
than the one before, from 0.01 to 0.01 * 2**30, an underflow bucket 0 and an
overflow bucket 241.

Why these numbers: in milliseconds, 0.01 ms to three hours covers every
latency a request has; as a count or a size the same range holds any
reasonable tracked value. Eight buckets per doubling is fine enough that a
quantile read from the bucket's geometric middle is within 4.4% of the
truth (half a bucket: ``2**(1/16) - 1``), and coarse enough that a window of
a few hundred latencies fills only 30-40 buckets. The judge compares arms
with margins of a few percent by treating each bucket's values as spread
evenly (in log) inside it, so it needs no finer buckets.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from unveil.core.logbuckets import (
    BUCKETS_PER_DOUBLING,
    FORMAT_VERSION,
    GROWTH,
    HIGHEST,
    LOWEST,
    OVERFLOW,
    REGULAR_BUCKETS,
    RELATIVE_ERROR,
    UNDERFLOW,
    HistogramError,
    bucket_lower,
    bucket_middle,
    bucket_of,
    bucket_upper,
)
from unveil.core.logbuckets import check_index as _check_index

__all__ = [
    "FORMAT_VERSION",
    "GROWTH",
    "LOWEST",
    "BUCKETS_PER_DOUBLING",
    "REGULAR_BUCKETS",
    "UNDERFLOW",
    "OVERFLOW",
    "RELATIVE_ERROR",
    "Histogram",
    "HistogramError",
    "bucket_of",
    "bucket_lower",
    "bucket_upper",
    "bucket_middle",
    "position_value",
    "EMPTY",
]


@dataclass(frozen=True, slots=True)
class Histogram:
    """Count, sum and the non-empty buckets of one metric in one window.

    ``buckets`` is sorted by bucket index and holds only positive counts, so
    that equal data gives equal values (and equal stored text).
    """

    count: int = 0
    total: float = 0.0
    buckets: tuple[tuple[int, int], ...] = ()

    @classmethod
    def of(cls, values: Iterable[float]) -> Histogram:
        """Aggregate raw values (what the server does with a window's reports)."""
        counts: dict[int, int] = {}
        total = 0.0
        n = 0
        for value in values:
            index = bucket_of(value)
            counts[index] = counts.get(index, 0) + 1
            total += value
            n += 1
        return cls(n, total, tuple(sorted(counts.items())))

    @classmethod
    def from_counts(cls, counts: Mapping[int, int], total: float) -> Histogram:
        """Build from bucket counts, checking each (for stored or received data)."""
        cleaned: dict[int, int] = {}
        for index, n in counts.items():
            _check_index(index)
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise HistogramError(f"buckets[{index}]: {n!r} is not a count (an integer >= 0)")
            if n:
                cleaned[index] = n
        if not math.isfinite(total):
            raise HistogramError(f"sum: {total!r} is not a finite number")
        return cls(sum(cleaned.values()), float(total), tuple(sorted(cleaned.items())))

    def merge(self, other: Histogram) -> Histogram:
        """The histogram of both windows' values together (exact: counts add)."""
        counts = dict(self.buckets)
        for index, n in other.buckets:
            counts[index] = counts.get(index, 0) + n
        return Histogram(
            self.count + other.count, self.total + other.total, tuple(sorted(counts.items()))
        )

    @property
    def mean(self) -> float:
        """The exact mean of the recorded values (from the kept sum), NaN when empty."""
        return self.total / self.count if self.count else math.nan

    def quantile(self, q: float) -> float:
        """The q-quantile, interpolated log-linearly inside its bucket.

        Within the regular range it is off by at most one bucket's width and,
        read at the middle of a bucket, by at most RELATIVE_ERROR; NaN when
        the histogram is empty.
        """
        if not 0.0 <= q <= 1.0:
            raise HistogramError(f"quantile: {q!r} is not between 0 and 1")
        if not self.count:
            return math.nan
        position = self.rank_position(q)
        return _position_value(position)

    def rank_position(self, q: float) -> float:
        """The q-quantile as a position on the bucket scale (bucket i spans [i, i+1)).

        Positions are what the judge works with: a shift of the data by a
        factor f moves every position by log2(f) * 8.
        """
        target = q * self.count
        seen = 0
        for index, n in self.buckets:
            if seen + n >= target and n:
                inside = (target - seen) / n
                return index + min(max(inside, 0.0), 1.0)
            seen += n
        last = self.buckets[-1][0]
        return last + 1.0

    def count_from(self, index: int) -> int:
        """How many values lie in bucket ``index`` or above."""
        return sum(n for i, n in self.buckets if i >= index)

    def to_dict(self) -> dict[str, object]:
        """The stored form: JSON-ready, buckets as {"index": count} for non-empty ones."""
        return {
            "format": FORMAT_VERSION,
            "count": self.count,
            "sum": self.total,
            "buckets": {str(i): n for i, n in self.buckets},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Histogram:
        """Read the stored form back, naming the field that is wrong."""
        if data.get("format") != FORMAT_VERSION:
            raise HistogramError(f"format: {data.get('format')!r} is not {FORMAT_VERSION}")
        raw = data.get("buckets")
        if not isinstance(raw, Mapping):
            raise HistogramError("buckets: expected an object of bucket index -> count")
        counts: dict[int, int] = {}
        for key, n in raw.items():
            if not isinstance(key, str) or not key.isdigit():
                raise HistogramError(f"buckets: key {key!r} is not a bucket index")
            if not isinstance(n, int) or isinstance(n, bool):
                raise HistogramError(f"buckets[{key}]: {n!r} is not a count (an integer >= 0)")
            counts[int(key)] = n
        total = data.get("sum")
        if isinstance(total, bool) or not isinstance(total, int | float):
            raise HistogramError(f"sum: {total!r} is not a number")
        histogram = cls.from_counts(counts, float(total))
        if data.get("count") != histogram.count:
            raise HistogramError(
                f"count: {data.get('count')!r} is not the sum of the bucket counts "
                f"({histogram.count})"
            )
        return histogram


EMPTY = Histogram()


def _position_value(position: float) -> float:
    """The value at a position of the bucket scale (log-linear inside a bucket)."""
    if position <= 1.0:
        return LOWEST
    if position >= OVERFLOW:
        return HIGHEST
    return LOWEST * math.pow(2.0, (position - 1.0) / BUCKETS_PER_DOUBLING)


def position_value(position: float) -> float:
    """Public form of the position -> value map, for explanations."""
    return _position_value(position)
