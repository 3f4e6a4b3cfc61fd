"""The judge's metrics: what the release worker reads, what the API shows, how long it stays.

``GuardReader.batch`` gives the judge both arms' aggregates over closed
10-second windows, for every guard of a plan whatever its source: SDK
metrics from the windows the event intake keeps, Prometheus guards from a
``PrometheusSource``; exposures always from unveil's own counts.

A window is closed once no SDK can still report into it in the normal run
of things: ``LAG`` seconds after its end (an SDK sends every 2 seconds, the
intake writes every 2 seconds; the rest is room for a retried send). An
event that arrives later still counts in its window, but a judge that read
the window before does not see it: late data is lost to the judge, never
counted twice. ``closed_until(now)`` is the end of the last closed window.

Retention (``keep_windows``, a recurring job on the leader): 10-second
windows are rolled into hourly ones once they are ``FINE_DAYS`` old, hourly
ones dropped after ``HOURLY_DAYS``. See docs/metrics.md.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from unveil.core import Problem
from unveil.core.logbuckets import RELATIVE_ERROR
from unveil.core.timestamps import parse_instant
from unveil.release.histogram import Histogram
from unveil.release.judge import ArmBatch, Batch
from unveil.release.plan import Guard, GuardKind, Source
from unveil.service.errors import Invalid
from unveil.service.events import EXPOSURE
from unveil.service.prometheus import PrometheusSource, SourceError
from unveil.store.events import FINE, EventCounts, Window

__all__ = [
    "FINE_DAYS",
    "HOURLY_DAYS",
    "LAG",
    "MAX_RANGE",
    "GuardReader",
    "keep_windows",
    "read_range",
    "series",
    "histogram_of",
]

#: seconds after a window's end before it is read as closed
LAG = 30
#: 10-second windows are kept this long, then rolled into hourly ones
FINE_DAYS = 7
#: hourly windows are kept this long
HOURLY_DAYS = 90
#: the longest range ``GET .../metrics`` answers, in seconds
MAX_RANGE = 24 * 3600
#: quantiles the API reports
_QUANTILES = (0.5, 0.9, 0.99)


def _epoch(at: datetime, name: str) -> int:
    if at.tzinfo is None:
        raise Invalid((Problem(name, "must carry its time zone"),))
    seconds = at.timestamp()
    if seconds % FINE:
        raise Invalid((Problem(name, f"must be at the start of a {FINE}-second window"),))
    return int(seconds)


class GuardReader:
    """Both arms' aggregates of a plan's guards, over closed 10-second windows."""

    def __init__(
        self,
        counts: EventCounts,
        prometheus: PrometheusSource | None = None,
        clock: Callable[[], float] = time.time,
        lag: int = LAG,
    ) -> None:
        self._counts = counts
        self._prometheus = prometheus
        self._clock = clock
        self._lag = lag

    @property
    def sources(self) -> frozenset[Source]:
        """The metric sources guards may name on this server."""
        return frozenset({Source.SDK} | ({Source.PROMETHEUS} if self._prometheus else set()))

    def closed_until(self, now: datetime) -> datetime:
        """The end of the last 10-second window no SDK can still report into."""
        seconds = int(now.timestamp()) - self._lag
        return datetime.fromtimestamp(seconds - seconds % FINE, UTC)

    def batch(
        self,
        environment_id: int,
        flag: str,
        treatment: str,
        control: str,
        guards: Sequence[Guard],
        start: datetime,
        end: datetime,
    ) -> Batch:
        """The windows in [start, end) of both arms; ``end_s`` is ``end`` in epoch seconds.

        ``start`` and ``end`` must be window starts (multiples of 10 s) with
        a time zone, ``end`` not after ``closed_until`` of now (unless the
        range is empty: then both arms are empty, wherever it lies). Counts of rate
        guards and histograms of continuous guards are keyed by the guard's
        metric. Consecutive ranges add up to the range they cover.
        """
        since, until = _epoch(start, "start"), _epoch(end, "end")
        problems = []
        if until < since:
            problems.append(Problem("end", "is before start"))
        closed = self.closed_until(datetime.fromtimestamp(self._clock(), UTC))
        if end > closed and until > since:  # an empty range reads nothing, wherever it is
            problems.append(Problem("end", f"is after the last closed window ({closed})"))
        if problems:
            raise Invalid(tuple(problems))
        sdk = [g for g in guards if g.source is Source.SDK]
        names = {EXPOSURE, *(g.metric for g in sdk)}
        rows = self._counts.windows(environment_id, flag, names, since, until, (treatment, control))
        arms = []
        for variant in (treatment, control):
            mine = [w for w in rows if w.variant == variant]
            counts: dict[str, int] = {}
            values: dict[str, Histogram] = {}
            for guard in guards:
                if guard.source is Source.SDK:
                    of = [w for w in mine if w.metric == guard.metric]
                    if guard.kind is GuardKind.RATE:
                        counts[guard.metric] = sum(w.count for w in of)
                    else:
                        values[guard.metric] = histogram_of(of)
                else:
                    if self._prometheus is None:
                        raise SourceError(
                            f"guard {guard.name!r} reads Prometheus, and this server has no "
                            "Prometheus configured"
                        )
                    if guard.kind is GuardKind.RATE:
                        counts[guard.metric] = self._prometheus.count(guard, variant, start, end)
                    else:
                        values[guard.metric] = self._prometheus.histogram(
                            guard, variant, start, end
                        )
            exposures = sum(w.count for w in mine if w.metric == EXPOSURE)
            arms.append(ArmBatch(exposures, counts, values))
        return Batch(float(until), arms[0], arms[1])

    def series(
        self,
        environment_id: int,
        flag: str | None,
        metric: str | None,
        since: str | None,
        until: str | None,
    ) -> dict[str, Any]:
        """What ``GET .../metrics`` answers: a flag's metric per variant per window.

        ``since`` and ``until`` are RFC 3339 times or epoch seconds (default:
        the last hour up to now); the range may span at most ``MAX_RANGE``
        seconds. Every bad parameter is named (``Invalid``).
        """
        problems: list[Problem] = []
        for name, value in (("flag", flag), ("metric", metric)):
            if not value:
                problems.append(Problem(name, "is required"))
        first, last = read_range(since, until, self._clock(), 3600, MAX_RANGE, problems)
        assert flag is not None and metric is not None  # noqa: PT018
        rows = self._counts.windows(environment_id, flag, {EXPOSURE, metric}, first, last)
        return {
            "flag": flag,
            "metric": metric,
            "since": datetime.fromtimestamp(first, UTC).isoformat(),
            "until": datetime.fromtimestamp(last, UTC).isoformat(),
            "relative_error": RELATIVE_ERROR,
            "windows": series(rows),
        }


#: the latest instant a range may name: a day before the end of year 9999
_LAST_INSTANT = 253_402_214_400


def _instant(raw: str | None, name: str, problems: list[Problem], default: float) -> float:
    if raw is None or raw == "":
        return default
    number: object = raw
    with contextlib.suppress(ValueError):
        number = float(raw)
    found = parse_instant(number)
    if found is None:
        problems.append(Problem(name, "must be an RFC 3339 time or epoch seconds"))
        return default
    if not 0 <= found <= _LAST_INSTANT:  # windows around it must be times Python can write
        problems.append(Problem(name, "must be between 1970 and the year 9999"))
        return default
    return found


def read_range(
    since: str | None,
    until: str | None,
    now: float,
    default_span: int,
    max_span: int,
    problems: list[Problem] | None = None,
) -> tuple[int, int]:
    """A ``since``/``until`` query range as whole 10-second windows [first, last).

    RFC 3339 times or epoch seconds; ``until`` defaults to now and ``since``
    to ``default_span`` seconds before it; at most ``max_span`` seconds
    apart. ``Invalid`` names every bad parameter, with ``problems`` found
    before (the caller's own).
    """
    found = [] if problems is None else problems
    end = _instant(until, "until", found, now)
    begin = _instant(since, "since", found, end - default_span)
    if not found and begin >= end:
        found.append(Problem("since", "must be before until"))
    if not found and end - begin > max_span:
        span = f"{max_span // 86400} days" if max_span >= 2 * 86400 else f"{max_span // 3600} hours"
        found.append(Problem("until", f"the range may span at most {span}"))
    if found:
        raise Invalid(tuple(found))
    return int(begin) - int(begin) % FINE, -(-math.ceil(end) // FINE) * FINE


def histogram_of(windows: Sequence[Window]) -> Histogram:
    """The merged histogram of windows (of one metric and variant)."""
    merged = Histogram()
    for w in windows:
        merged = merged.merge(Histogram.from_counts(w.buckets, w.total))
    return merged


def series(windows: Sequence[Window]) -> list[dict[str, Any]]:
    """Per variant per window: exposures, and the metric's count, sum and distribution.

    What ``GET .../metrics`` answers. Quantiles are read from the histogram
    (within ``core.logbuckets.RELATIVE_ERROR``, 4.4%, of the truth inside the regular range).
    """
    by_key: dict[tuple[str, int, int], dict[str, Any]] = {}
    for w in windows:
        key = (w.variant, w.start, w.seconds)
        entry = by_key.setdefault(
            key,
            {
                "variant": w.variant,
                "start": datetime.fromtimestamp(w.start, UTC).isoformat(),
                "seconds": w.seconds,
                "exposures": 0,
                "count": 0,
                "sum": 0.0,
                "quantiles": {},
                "buckets": {},
            },
        )
        if w.metric == EXPOSURE:
            entry["exposures"] = w.count
            continue
        entry["count"], entry["sum"] = w.count, w.total
        if w.buckets:
            histogram = Histogram.from_counts(w.buckets, w.total)
            entry["buckets"] = {str(i): n for i, n in histogram.buckets}
            entry["quantiles"] = {f"p{round(q * 100)}": histogram.quantile(q) for q in _QUANTILES}
    return [by_key[k] for k in sorted(by_key, key=lambda k: (k[1], k[0]))]


def keep_windows(counts: EventCounts, now: float | None = None) -> tuple[int, int]:
    """The retention job: roll week-old 10-second windows into hours, drop 90-day-old hours.

    Safe to run again at any moment (a retried job, two leaders): a roll-up
    deletes what it rolls in the same transaction, so nothing counts twice.
    """
    moment = time.time() if now is None else now
    rolled = counts.roll_up(int(moment) - FINE_DAYS * 86400)
    dropped = counts.prune(int(moment) - HOURLY_DAYS * 86400)
    return rolled, dropped
