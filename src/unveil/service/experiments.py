"""Dark-launch experiments as the API and the CLI show them: a list, and one report.

The intake keeps an experiment's aggregates in the metric windows of guarded
releases (service/events.py: flag = the experiment's name; metrics
``$experiment.<outcome>`` under variant ``candidate``, ``$experiment.error_type``
with the exception's type name as variant, ``$experiment.ms`` with variant
``control`` or ``candidate``), so retention and roll-up are theirs; the
latest mismatch examples are kept beside them (store/events.py). The
statistics are release/experiment.py's; this module reads, sums and shapes.

``runs(environment, experiment, start, end)`` is also what a release's
experiment guard reads (service/releases.py).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from unveil.core import Problem
from unveil.core.logbuckets import RELATIVE_ERROR
from unveil.release.experiment import (
    DEFAULT_CONFIDENCE,
    QUANTILES,
    error_breakdown,
    mismatch_rate,
    quantile_difference,
)
from unveil.release.histogram import Histogram
from unveil.service.errors import NotFound
from unveil.service.events import (
    CANDIDATE,
    CONTROL,
    DURATION,
    ERROR_TYPE,
    MAX_NAME,
    OUTCOMES,
    outcome_metric,
)
from unveil.service.metrics import histogram_of, read_range
from unveil.store.events import FINE, EventCounts, Window

__all__ = ["MAX_REPORT_RANGE", "MAX_SERIES", "ExperimentReports"]

#: the longest range a report covers (the 10-second windows are kept a week)
MAX_REPORT_RANGE = 7 * 86400
#: the most points of a report's series: windows are merged into wider steps beyond it
MAX_SERIES = 360
_OUTCOME_METRICS = {outcome_metric(o): o for o in OUTCOMES}


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def _outcomes(windows: Sequence[Window]) -> dict[str, int]:
    totals = dict.fromkeys(OUTCOMES, 0)
    for w in windows:
        outcome = _OUTCOME_METRICS.get(w.metric)
        if outcome is not None and w.variant == CANDIDATE:
            totals[outcome] += w.count
    return totals


def _rate_data(outcomes: dict[str, int]) -> dict[str, Any]:
    rate = mismatch_rate(outcomes["match"], outcomes["mismatch"])
    return {**rate.as_data(), "confidence": DEFAULT_CONFIDENCE}


def _quantiles(histogram: Histogram) -> dict[str, float | None]:
    return {
        name: None if not histogram.count else round(histogram.quantile(q), 4)
        for name, q in QUANTILES
    }


class ExperimentReports:
    """Reads experiments' windows and examples for the API, the CLI and release guards."""

    def __init__(self, counts: EventCounts, clock: Callable[[], float] = time.time) -> None:
        self._counts = counts
        self._clock = clock

    def runs(self, environment_id: int, experiment: str, start: int, end: int) -> tuple[int, int]:
        """Matches and mismatches of an experiment in the windows starting in [start, end)."""
        rows = self._counts.windows(
            environment_id,
            experiment,
            {outcome_metric("match"), outcome_metric("mismatch")},
            start,
            end,
            (CANDIDATE,),
        )
        totals = _outcomes(rows)
        return totals["match"], totals["mismatch"]

    def list(self, environment_id: int) -> dict[str, Any]:
        """Every experiment with data still kept: runs, mismatch rate and when last seen."""
        found: dict[str, dict[str, int]] = {}
        last_seen: dict[str, int] = {}
        for flag, metric, count, last in self._counts.totals_by_flag(
            environment_id, _OUTCOME_METRICS, 0
        ):
            outcomes = found.setdefault(flag, dict.fromkeys(OUTCOMES, 0))
            outcomes[_OUTCOME_METRICS[metric]] += count
            last_seen[flag] = max(last_seen.get(flag, 0), last)
        return {
            "experiments": [
                {
                    "name": name,
                    "runs": sum(outcomes.values()),
                    "outcomes": outcomes,
                    "mismatch_rate": _rate_data(outcomes),
                    "last_seen": _iso(last_seen[name]),
                }
                for name, outcomes in sorted(found.items())
            ]
        }

    def report(
        self,
        environment_id: int,
        experiment: str,
        since: str | None = None,
        until: str | None = None,
    ) -> dict[str, Any]:
        """The report of one experiment over [since, until) (default: the last hour).

        ``NotFound`` when the environment has no data of the experiment at all
        (a misspelt name); an experiment with no runs in the range gets a report
        of zeros. Every bad parameter is named (``Invalid``).
        """
        problems: list[Problem] = []
        if not experiment or len(experiment) > MAX_NAME:
            problems.append(Problem("name", f"must be 1 to {MAX_NAME} characters"))
        first, last = read_range(since, until, self._clock(), 3600, MAX_REPORT_RANGE, problems)
        if not self._counts.has_windows(environment_id, experiment, _OUTCOME_METRICS):
            raise NotFound(f"no experiment '{experiment}' has reported in this environment")
        metrics = {*_OUTCOME_METRICS, ERROR_TYPE, DURATION}
        rows = self._counts.windows(environment_id, experiment, metrics, first, last)
        outcomes = _outcomes(rows)
        errors: dict[str, int] = {}
        for w in rows:
            if w.metric == ERROR_TYPE:
                errors[w.variant] = errors.get(w.variant, 0) + w.count
        control = histogram_of([w for w in rows if w.metric == DURATION and w.variant == CONTROL])
        candidate = histogram_of(
            [w for w in rows if w.metric == DURATION and w.variant == CANDIDATE]
        )
        runs = sum(outcomes.values())
        examples = self._counts.examples(environment_id, experiment, first, last)
        return {
            "experiment": experiment,
            "since": _iso(first),
            "until": _iso(last),
            "runs": runs,
            "outcomes": outcomes,
            "mismatch_rate": _rate_data(outcomes),
            "latency": _latency(control, candidate),
            "errors": error_breakdown(errors, runs),
            "examples": [
                {
                    "at": _iso(x.at),
                    "context": x.context,
                    "control": json.loads(x.control),
                    "candidate": json.loads(x.candidate),
                }
                for x in examples
            ],
            "series": _series(rows, first, last),
        }


def _latency(control: Histogram, candidate: Histogram) -> dict[str, Any]:
    """Both paths' p50, p95 and p99 with intervals, and the candidate's difference."""
    paths: dict[str, dict[str, Any]] = {
        CONTROL: {"count": control.count, "mean": _mean(control)},
        CANDIDATE: {"count": candidate.count, "mean": _mean(candidate)},
    }
    difference: dict[str, Any] = {}
    for name, q in QUANTILES:
        found = quantile_difference(control, candidate, q)
        paths[CONTROL][name] = found.control.as_data(4)
        paths[CANDIDATE][name] = found.candidate.as_data(4)
        difference[name] = found.difference.as_data(4)
    return {
        "unit": "ms",
        "confidence": DEFAULT_CONFIDENCE,
        "relative_error": RELATIVE_ERROR,
        **paths,
        "difference": difference,
    }


def _mean(histogram: Histogram) -> float | None:
    return None if not histogram.count else round(histogram.mean, 4)


def _series(rows: Sequence[Window], first: int, last: int) -> dict[str, Any]:
    """Per step (10 s, or wider to keep at most ``MAX_SERIES`` points): runs by outcome,
    the mismatch rate and both paths' quantiles, for charts."""
    step = FINE * max(1, math.ceil((last - first) / FINE / MAX_SERIES))
    by_step: dict[int, list[Window]] = {}
    for w in rows:
        by_step.setdefault(first + (w.start - first) // step * step, []).append(w)
    points = []
    for start in sorted(by_step):
        mine = by_step[start]
        outcomes = _outcomes(mine)
        compared = outcomes["match"] + outcomes["mismatch"]
        points.append(
            {
                "start": _iso(start),
                "outcomes": outcomes,
                "mismatch_rate": None
                if not compared
                else round(outcomes["mismatch"] / compared, 6),
                CONTROL: _quantiles(
                    histogram_of([w for w in mine if w.metric == DURATION and w.variant == CONTROL])
                ),
                CANDIDATE: _quantiles(
                    histogram_of(
                        [w for w in mine if w.metric == DURATION and w.variant == CANDIDATE]
                    )
                ),
            }
        )
    return {"step_seconds": step, "points": points}
