"""The statistics of a dark-launch experiment's report, and of a release's experiment guard.

An experiment runs a candidate code path beside the control on real traffic
and counts, per run, one outcome: match, mismatch, ignored, error, timeout
or skipped, with both paths' durations in the server's log-bucket histograms
(release/histogram.py). This module turns those aggregates into what people
read and what a release is judged on. Pure: numbers in, numbers out.

The methods, and why:

- **Mismatch rate** = mismatches / (matches + mismatches): the share of
  compared runs whose answers differed. Ignored runs (an accepted difference),
  errors, timeouts and skips are not comparisons and stay out of it. Its
  interval is the **Wilson score interval**: unlike the textbook
  estimate +- z * standard error it stays inside [0, 1], and it keeps its
  coverage for rates near 0, where experiments live (a 0.3% rate over a few
  hundred runs).
- **Latency quantiles** (p50, p95, p99) of each path come with a
  distribution-free **order-statistic interval**: the q-quantile lies between
  the l-th and u-th smallest of n values with probability
  P(l <= Binomial(n, q) < u), whatever the distribution. The ranks are chosen
  by the normal approximation of that binomial (with a continuity margin of
  one rank each side); a histogram knows a rank's value only up to its bucket,
  so the interval runs from the *lower edge* of the l-th value's bucket to the
  *upper edge* of the u-th value's bucket: the histogram's 9% resolution widens
  the interval instead of biasing it.
- **The candidate's difference** at a quantile (candidate minus control, in
  ms) gets the interval [candidate low - control high, candidate high -
  control low] from per-path intervals at level 1 - alpha/2 each: by
  Bonferroni both hold together with probability at least 1 - alpha, and then
  the difference lies inside. Conservative (wider than needed), never narrow.
- **The release guard** (``exceeds``) asks whether the mismatch rate is above
  a maximum. A release looks again after every window, so a fixed-sample
  interval would raise false alarms with each look; the test is the lower end
  of a one-sided **confidence sequence** instead, valid at every look at
  once: an e-value (a mixture of likelihood ratios of a few rates above the
  maximum against the maximum, a nonnegative supermartingale while the rate
  is at most the maximum) that crosses 1/alpha only with probability alpha
  over the whole release (Ville's inequality), like the judge's own tests.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist

from unveil.release.histogram import Histogram, bucket_lower, bucket_upper

__all__ = [
    "DEFAULT_CONFIDENCE",
    "QUANTILES",
    "Difference",
    "Estimate",
    "GuardCheck",
    "error_breakdown",
    "exceeds",
    "mismatch_rate",
    "quantile_difference",
    "quantile_interval",
    "wilson",
]

#: the confidence of every interval a report shows
DEFAULT_CONFIDENCE = 0.95
#: the quantiles a report shows, by name
QUANTILES: tuple[tuple[str, float], ...] = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
#: the rates above the guard's maximum that the confidence sequence mixes, as ratios
#: to that maximum (a mismatch rate 5% above the maximum up to 50 times it), equally weighted
_RATIOS = (1.05, 1.1, 1.2, 1.35, 1.5, 1.75, 2.0, 2.5, 3.0, 5.0, 10.0, 20.0, 50.0)


@dataclass(frozen=True, slots=True)
class Estimate:
    """A number with its interval; all None when there is no data to say anything."""

    value: float | None
    low: float | None
    high: float | None

    def as_data(self, digits: int = 6) -> dict[str, float | None]:
        """JSON-ready, rounded (the intervals are far wider than the rounding)."""
        return {
            "value": _round(self.value, digits),
            "low": _round(self.low, digits),
            "high": _round(self.high, digits),
        }


@dataclass(frozen=True, slots=True)
class Difference:
    """The candidate's quantile against the control's, each with its interval."""

    control: Estimate
    candidate: Estimate
    difference: Estimate  # candidate - control, in the values' unit (ms)


_NONE = Estimate(None, None, None)


def _round(x: float | None, digits: int) -> float | None:
    return None if x is None else round(x, digits)


def _z(confidence: float) -> float:
    """The two-sided normal quantile of a confidence level."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: {confidence!r} is not between 0 and 1")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson(successes: int, trials: int, confidence: float = DEFAULT_CONFIDENCE) -> Estimate:
    """The share successes / trials with its Wilson score interval (two-sided)."""
    if trials < 0 or not 0 <= successes <= trials:
        raise ValueError(f"{successes} of {trials} is not a count of trials")
    if trials == 0:
        return _NONE
    z = _z(confidence)
    p = successes / trials
    z2n = z * z / trials
    centre = (p + z2n / 2.0) / (1.0 + z2n)
    half = z * math.sqrt(p * (1.0 - p) / trials + z2n / (4.0 * trials)) / (1.0 + z2n)
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return Estimate(p, low, high)


def mismatch_rate(
    matches: int, mismatches: int, confidence: float = DEFAULT_CONFIDENCE
) -> Estimate:
    """Mismatches among compared runs (matches + mismatches), with its Wilson interval."""
    return wilson(mismatches, matches + mismatches, confidence)


def _rank_bucket(histogram: Histogram, rank: int) -> int:
    """The bucket of the rank-th smallest value (1-based)."""
    seen, index = 0, 0
    for index, n in histogram.buckets:  # noqa: B007 - where the loop stops is the answer
        seen += n
        if seen >= rank:
            break
    return index


def quantile_interval(
    histogram: Histogram, q: float, confidence: float = DEFAULT_CONFIDENCE
) -> Estimate:
    """The q-quantile of a histogram's values with a distribution-free interval.

    The estimate is the histogram's own quantile (log-linear inside its
    bucket); the interval is the order-statistic one described above, widened
    to whole buckets. An edge that would need a rank beyond the data is
    unbounded (None): with 20 values nothing bounds a p99 from above.
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile: {q!r} is not between 0 and 1")
    n = histogram.count
    if n == 0:
        return _NONE
    z = _z(confidence)
    spread = z * math.sqrt(n * q * (1.0 - q))
    low_rank = math.floor(n * q - spread)  # 1-based ranks, one rank of margin each side
    high_rank = math.ceil(n * q + spread) + 1
    low = None if low_rank < 1 else bucket_lower(_rank_bucket(histogram, low_rank))
    high = None if high_rank > n else bucket_upper(_rank_bucket(histogram, high_rank))
    if low is not None and not math.isfinite(low):
        low = None  # the underflow bucket: below 0.01, unbounded below in the format
    if high is not None and not math.isfinite(high):
        high = None
    return Estimate(histogram.quantile(q), low, high)


def quantile_difference(
    control: Histogram,
    candidate: Histogram,
    q: float,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Difference:
    """The candidate's q-quantile minus the control's, with a Bonferroni-combined interval."""
    per_path = 1.0 - (1.0 - confidence) / 2.0
    c = quantile_interval(control, q, per_path)
    t = quantile_interval(candidate, q, per_path)
    if c.value is None or t.value is None:
        return Difference(c, t, _NONE)
    low = None if t.low is None or c.high is None else t.low - c.high
    high = None if t.high is None or c.low is None else t.high - c.low
    return Difference(
        quantile_interval(control, q, confidence),
        quantile_interval(candidate, q, confidence),
        Estimate(t.value - c.value, low, high),
    )


def error_breakdown(
    errors: Mapping[str, int], runs: int
) -> list[dict[str, float | int | str | None]]:
    """Candidate errors by exception type, most frequent first, with their share of runs."""
    ordered = sorted(errors.items(), key=lambda item: (-item[1], item[0]))
    return [
        {"type": name, "count": n, "share": None if runs == 0 else round(n / runs, 6)}
        for name, n in ordered
    ]


# -- the release guard ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GuardCheck:
    """One look of an experiment guard: is the mismatch rate shown to be above the maximum?"""

    runs: int  # compared runs: matches + mismatches
    mismatches: int
    max_rate: float
    alpha: float
    log_evidence: float  # log of the e-value against "the rate is at most max_rate"
    lower: float | None  # the confidence sequence's lower end (None: too few runs)
    exceeded: bool

    def as_data(self) -> dict[str, object]:
        """The explanation a release records with its decision."""
        rate = self.mismatches / self.runs if self.runs else None
        return {
            "runs": self.runs,
            "mismatches": self.mismatches,
            "mismatch_rate": _round(rate, 6),
            "max_mismatch_rate": self.max_rate,
            "lower_bound": _round(self.lower, 6),
            "confidence": 1.0 - self.alpha,
            "evidence": round(math.exp(min(self.log_evidence, 700.0)), 4),
            "threshold": round(1.0 / self.alpha, 4),
            "exceeded": self.exceeded,
        }


def _log_evidence(mismatches: int, runs: int, p0: float) -> float:
    """log of the mixture e-value of rates above p0 against p0 (see the module's notes)."""
    matches = runs - mismatches
    logs: list[float] = []
    for ratio in _RATIOS:
        p = p0 * ratio
        if p >= 1.0:
            continue
        term = mismatches * math.log(p / p0)
        if matches:
            term += matches * math.log((1.0 - p) / (1.0 - p0))
        logs.append(term)
    if not logs:  # p0 so high that no listed rate lies above it: nothing to test
        return 0.0
    top = max(logs)
    return top + math.log(sum(math.exp(x - top) for x in logs) / len(_RATIOS))


def _lower_bound(mismatches: int, runs: int, alpha: float) -> float | None:
    """The smallest rate not rejected: the confidence sequence's one-sided lower end."""
    if runs == 0 or mismatches == 0:
        return 0.0 if runs else None
    threshold = math.log(1.0 / alpha)
    # at the observed rate the e-value is below 1 (each ratio's likelihood falls there),
    # so the bound lies between nearly 0 and the observed rate
    low, high = 1e-12, mismatches / runs
    if _log_evidence(mismatches, runs, low) < threshold:
        return 0.0
    for _ in range(60):  # the e-value falls as the rate tested rises
        middle = (low + high) / 2.0
        if _log_evidence(mismatches, runs, middle) >= threshold:
            low = middle
        else:
            high = middle
    return low


def exceeds(
    mismatches: int,
    runs: int,
    max_rate: float,
    min_runs: int = 0,
    alpha: float = 0.05,
    with_bound: bool = True,
) -> GuardCheck:
    """Whether the mismatch rate is shown, at every look at once, to exceed ``max_rate``.

    ``runs`` are compared runs (matches + mismatches). Below ``min_runs`` the
    answer is never "exceeded", whatever the evidence: a plan says how many
    runs it wants before an experiment may stop a release. ``with_bound=False``
    skips the lower bound (a search), for callers that need only the answer.
    """
    if not 0 <= mismatches <= runs:
        raise ValueError(f"{mismatches} mismatches in {runs} runs")
    if not 0.0 < max_rate < 1.0:
        raise ValueError(f"max_rate: {max_rate!r} is not between 0 and 1")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: {alpha!r} is not between 0 and 1")
    log_e = _log_evidence(mismatches, runs, max_rate)
    crossed = log_e >= math.log(1.0 / alpha)
    lower = _lower_bound(mismatches, runs, alpha) if with_bound else None
    return GuardCheck(runs, mismatches, max_rate, alpha, log_e, lower, crossed and runs >= min_runs)
