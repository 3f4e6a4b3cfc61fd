"""A second metric source: a Prometheus server's HTTP API, queried once per variant.

A ``source: prometheus`` guard names a PromQL query with ``{variant}`` where
the variant's name goes, inside double quotes (``variant="{variant}"``); the
name is escaped for a PromQL string there. The contract, the same for every
range (so that the judge gets the same data however the worker cuts it):

- a **rate** guard's query answers a cumulative count: one sample (an
  instant vector of one series, or a scalar) that only grows, such as
  ``sum(app_errors_total{variant="{variant}"})``. The events of [start, end)
  are its value at ``end`` minus its value at ``start`` (none there: 0; a
  decrease, a counter reset: the value at ``end``). Exposures come from
  unveil's own counts.
- a **continuous** guard's query answers cumulative histogram buckets: one
  series per ``le`` label, such as
  ``sum by (le) (app_latency_ms_bucket{variant="{variant}"})``. The
  difference between ``end`` and ``start`` per ``le`` gives the values in
  each Prometheus bucket; each bucket's values are put in unveil's bucket of
  the Prometheus bucket's geometric middle (the first bucket: its upper
  bound; +Inf: the last finite bound), and the sum is estimated from those
  points. So the distribution is only as fine as the Prometheus buckets:
  the quantiles it gives are off by up to half a Prometheus bucket's width
  (in log), on top of unveil's own 4.4%.

Anything else (several series for a rate, a series without ``le``, a
string, an error from Prometheus) is refused with ``SourceError`` naming
the guard and what came back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx

from unveil.core import UnveilError
from unveil.core.logbuckets import bucket_of
from unveil.release.histogram import Histogram
from unveil.release.plan import VARIANT_PLACEHOLDER, Guard, GuardKind

__all__ = ["PrometheusSource", "SourceError", "promql_string"]


class SourceError(UnveilError):
    """A metric source that cannot answer a guard, or answers what the guard cannot use."""


def promql_string(text: str) -> str:
    """``text`` escaped for the inside of a double-quoted PromQL string."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class PrometheusSource:
    """Reads guards' numbers from one Prometheus server (``url``: its base address)."""

    def __init__(self, url: str, timeout: float = 10.0, transport: Any = None) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.Client(timeout=timeout, transport=transport)

    def close(self) -> None:
        self._client.close()

    def query(self, guard: Guard, variant: str) -> str:
        """The guard's query for a variant, the name escaped; refused if unquoted."""
        text = guard.query or ""
        if f'"{VARIANT_PLACEHOLDER}"' not in text or text.count(VARIANT_PLACEHOLDER) != text.count(
            f'"{VARIANT_PLACEHOLDER}"'
        ):
            raise SourceError(
                f"guard {guard.name!r}: the query must hold {VARIANT_PLACEHOLDER} inside double "
                f'quotes, like variant="{VARIANT_PLACEHOLDER}"'
            )
        return guard.query_for(promql_string(variant))

    def count(self, guard: Guard, variant: str, start: datetime, end: datetime) -> int:
        """A rate guard's events of one variant in [start, end)."""
        query = self.query(guard, variant)
        before = self._single(guard, self._instant(guard, query, start))
        after = self._single(guard, self._instant(guard, query, end))
        grown = after - before if after >= before else after  # a reset: counted from zero
        return round(grown)

    def histogram(self, guard: Guard, variant: str, start: datetime, end: datetime) -> Histogram:
        """A continuous guard's values of one variant in [start, end), as unveil's histogram."""
        query = self.query(guard, variant)
        before = self._buckets(guard, self._instant(guard, query, start))
        after = self._buckets(guard, self._instant(guard, query, end))
        bounds = sorted(after)
        counts: dict[int, int] = {}
        total = 0.0
        below = 0.0  # cumulative count at the previous bound
        previous = 0.0
        reset = any(after[le] < before.get(le, 0.0) for le in bounds)
        for le in bounds:
            cumulative = after[le] - (0.0 if reset else before.get(le, 0.0))
            n = round(cumulative - below)
            below = max(below, cumulative)
            if n > 0:
                if math.isinf(le):
                    point = previous
                elif previous <= 0.0:
                    point = le
                else:
                    point = math.sqrt(previous * le)
                index = bucket_of(point)
                counts[index] = counts.get(index, 0) + n
                total += n * point
            if not math.isinf(le):
                previous = le
        return Histogram.from_counts(counts, total)

    # -- talking to Prometheus ---------------------------------------------------------------

    def _instant(self, guard: Guard, query: str, at: datetime) -> Any:
        try:
            answer = self._client.get(
                f"{self.url}/api/v1/query", params={"query": query, "time": f"{at.timestamp():.3f}"}
            )
        except httpx.HTTPError as exc:
            raise SourceError(f"guard {guard.name!r}: Prometheus at {self.url}: {exc}") from exc
        try:
            body = answer.json()
        except ValueError:
            body = None
        if not isinstance(body, Mapping) or body.get("status") != "success":
            said = body.get("error") if isinstance(body, Mapping) else answer.text[:200]
            raise SourceError(
                f"guard {guard.name!r}: Prometheus answered {answer.status_code} "
                f"to {query!r}: {said}"
            )
        return body.get("data")

    @staticmethod
    def _value(guard: Guard, pair: object) -> float:
        if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], str):
            try:
                return float(pair[1])
            except ValueError:
                pass
        raise SourceError(f"guard {guard.name!r}: {pair!r} is not a Prometheus sample")

    def _single(self, guard: Guard, data: Any) -> float:
        kind = data.get("resultType") if isinstance(data, Mapping) else None
        result = data.get("result") if isinstance(data, Mapping) else None
        if kind == "scalar":
            value = self._value(guard, result)
        elif kind == "vector" and isinstance(result, list) and len(result) <= 1:
            if not result:
                return 0.0  # no series yet: nothing counted
            value = self._value(guard, result[0].get("value"))
        else:
            got = f"{len(result)} series" if isinstance(result, list) else f"a {kind}"
            raise SourceError(
                f"guard {guard.name!r} ({GuardKind.RATE.value}): the query must answer one "
                f"cumulative count (one series or a scalar), not {got}"
            )
        if not math.isfinite(value) or value < 0:
            raise SourceError(f"guard {guard.name!r}: {value} is not a count")
        return value

    def _buckets(self, guard: Guard, data: Any) -> dict[float, float]:
        result = data.get("result") if isinstance(data, Mapping) else None
        if not isinstance(data, Mapping) or data.get("resultType") != "vector":
            raise SourceError(
                f"guard {guard.name!r} ({GuardKind.CONTINUOUS.value}): the query must answer "
                "histogram buckets (a vector of series with an 'le' label)"
            )
        assert isinstance(result, list)
        buckets: dict[float, float] = {}
        for series in result:
            labels = series.get("metric", {}) if isinstance(series, Mapping) else {}
            le = labels.get("le") if isinstance(labels, Mapping) else None
            try:
                bound = float(le) if isinstance(le, str) else math.nan
            except ValueError:
                bound = math.nan
            if math.isnan(bound) or bound in buckets:
                raise SourceError(
                    f"guard {guard.name!r} ({GuardKind.CONTINUOUS.value}): the query must "
                    f"answer one series per 'le' label (sum by (le) (...)), got {labels!r}"
                )
            buckets[bound] = self._value(guard, series.get("value"))
        return buckets
