"""Post-deploy verification: smoke checks over HTTP and metric checks judged like releases.

``unveil deploy verify`` runs these in the CI pipeline, not in the server:
the server never makes requests to URLs people give it. Each check gives
its evidence (what was asked, what came back, the judge's explanation), the
verification passes only if every check passed, and the result is stored
on the deploy through the API.

- An HTTP check asks a URL until it answers as expected (the status, and
  optionally a text in the body or a JSON field's value) or its retry
  period is over; each attempt has its own timeout.
- A metric check compares the service's traffic in the minutes after the
  deploy (treatment) with the same length of time before it (control),
  window by window, with the judge of guarded releases
  (``unveil.release.judge``): a rate (errors per exposure) or a continuous
  value (latency). Its numbers come from the server's metrics API (what the
  SDK reports, summed over the variants of the flag named) or from two
  Prometheus queries (events and total) evaluated over each period.

Checks are given as plain data (a YAML or JSON file, or built from command
options): see docs/deploys.md. ``parse_checks`` refuses a bad list whole,
naming every problem and its path. This module does no database work and
imports no server machinery: a CI job runs it through the CLI.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx

from unveil.core import Problem
from unveil.release import judge
from unveil.release.histogram import Histogram
from unveil.release.reading import Reader, join
from unveil.service.errors import Invalid

__all__ = [
    "Check",
    "HttpCheck",
    "MetricCheck",
    "judge_metric",
    "parse_checks",
    "run_checks",
    "run_http",
    "url_problem",
]

WINDOW = 10  # seconds: the server's metric windows
MAX_CHECKS = 100
MAX_BODY_SHOWN = 500
#: the most of an answer's body an HTTP check reads (what ``contains`` and ``json`` judge)
MAX_BODY_READ = 1 << 20
_HTTP_FIELDS = frozenset(
    {"name", "http", "status", "contains", "json", "timeout", "retry_for", "interval"}
)
_METRIC_FIELDS = frozenset(
    {
        "name",
        "metric",
        "kind",
        "flag",
        "minutes",
        "margin",
        "min_exposures",
        "source",
        "events",
        "total",
    }
)
_MISSING = object()


@dataclass(frozen=True, slots=True)
class HttpCheck:
    """Ask ``url`` until it answers ``status`` (and the text or JSON field), or give up."""

    name: str
    url: str
    status: int = 200
    contains: str | None = None
    json_field: str | None = None
    json_equals: Any = None
    timeout: float = 5.0
    retry_for: float = 0.0
    interval: float = 2.0


@dataclass(frozen=True, slots=True)
class MetricCheck:
    """The metric after the deploy against before it, judged as a release's guard is."""

    name: str
    metric: str
    kind: str = "rate"  # rate | latency
    flag: str | None = None  # the flag whose exposures are the traffic (source sdk)
    minutes: float = 5.0
    margin: float = 0.0
    min_exposures: int = 100
    source: str = "sdk"  # sdk | prometheus
    events: str | None = None  # prometheus: the query of events (errors) in a period
    total: str | None = None  # prometheus: the query of all requests in a period


Check = HttpCheck | MetricCheck


def url_problem(url: object, path: str) -> Problem | None:
    """What is wrong with a check's URL: it must be http:// or https:// with a host."""
    if not isinstance(url, str) or not url or len(url) > 2000:
        return Problem(path, "must be an http:// or https:// URL of at most 2000 characters")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return Problem(path, f"is not a URL: {exc}")
    if parts.scheme not in ("http", "https"):
        return Problem(path, f"must be an http:// or https:// URL, not {url[:100]!r}")
    if not parts.hostname:
        return Problem(path, "needs a host")
    return None


def _seconds(r: Reader, value: object, path: str, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, float) and math.isfinite(value) and value >= 0:
        return value
    found = r.duration(value, path)
    return default if found is None else found.total_seconds()


def _http(r: Reader, body: Mapping[str, Any], path: str, name: str) -> HttpCheck | None:
    problem = url_problem(body.get("http"), join(path, "http"))
    if problem is not None:
        r.problems.append(problem)
    status = r.whole(body.get("status", 200), join(path, "status"), 100, 599)
    contains = None
    if body.get("contains") is not None:
        contains = r.text(body["contains"], join(path, "contains"), 1000)
    json_field, json_equals = None, None
    if body.get("json") is not None:
        spec = r.mapping(body["json"], join(path, "json"), frozenset({"field", "equals"}))
        json_field = r.text(spec.get("field"), join(path, "json.field"), 200)
        if "equals" not in spec:
            r.fail(join(path, "json.equals"), "is required (the value the field must have)")
        json_equals = spec.get("equals")
    timeout = _seconds(r, body.get("timeout"), join(path, "timeout"), 5.0)
    retry_for = _seconds(r, body.get("retry_for"), join(path, "retry_for"), 0.0)
    interval = _seconds(r, body.get("interval"), join(path, "interval"), 2.0)
    if timeout <= 0:
        r.fail(join(path, "timeout"), "must be more than 0 seconds")
    if retry_for > 3600:
        r.fail(join(path, "retry_for"), "may be at most an hour")
    if problem is not None or status is None:
        return None
    return HttpCheck(
        name,
        str(body["http"]),
        status,
        contains,
        json_field,
        json_equals,
        timeout,
        retry_for,
        max(interval, 0.05),
    )


def _number(r: Reader, value: object, path: str, low: float, high: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        r.fail(path, f"must be a number from {low} to {high}, not {value!r}")
        return None
    return float(value)


def _metric(r: Reader, body: Mapping[str, Any], path: str, name: str) -> MetricCheck | None:
    metric = r.text(body.get("metric"), join(path, "metric"))
    kind = r.choice(body.get("kind", "rate"), join(path, "kind"), "kind", ("rate", "latency"))
    source = r.choice(
        body.get("source", "sdk"), join(path, "source"), "source", ("sdk", "prometheus")
    )
    minutes = _number(r, body.get("minutes", 5), join(path, "minutes"), 0.5, 1440)
    margin = _number(r, body.get("margin", 0.0), join(path, "margin"), 0.0, 9.99)
    least = r.whole(body.get("min_exposures", 100), join(path, "min_exposures"), 0, 10**12)
    flag = events = total = None
    if source == "sdk":
        flag = r.text(body.get("flag"), join(path, "flag"))
        for extra in ("events", "total"):
            if extra in body:
                r.fail(join(path, extra), "is for source: prometheus")
    elif source == "prometheus":
        if kind != "rate":
            r.fail(join(path, "kind"), "a Prometheus check compares rates (events per total)")
        events = r.text(body.get("events"), join(path, "events"), 4000)
        total = r.text(body.get("total"), join(path, "total"), 4000)
    if None in (metric, kind, source, minutes, margin, least):
        return None
    return MetricCheck(
        name,
        str(metric),
        str(kind),
        flag,
        float(minutes or 0),
        float(margin or 0),
        int(least or 0),
        str(source),
        events,
        total,
    )


def parse_checks(data: object) -> list[Check]:
    """The checks of a verification from plain data (``{"checks": [...]}`` or the list)."""
    r = Reader()
    raw = data.get("checks") if isinstance(data, Mapping) else data
    if isinstance(data, Mapping):
        r.mapping(data, "", frozenset({"checks"}))
    if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
        raise Invalid((Problem("checks", "must be a non-empty list of checks"),))
    if len(raw) > MAX_CHECKS:
        raise Invalid((Problem("checks", f"at most {MAX_CHECKS} checks"),))
    checks: list[Check] = []
    names: set[str] = set()
    for i, item in enumerate(raw):
        path = f"checks[{i}]"
        is_http = isinstance(item, Mapping) and "http" in item
        body = r.mapping(item, path, _HTTP_FIELDS if is_http else _METRIC_FIELDS)
        if not body:
            continue
        if not is_http and "metric" not in body:
            r.fail(path, "a check needs 'http' (a URL) or 'metric'")
            continue
        default = f"http-{i + 1}" if is_http else f"{body.get('metric')}-{i + 1}"
        name = r.text(body.get("name", default), join(path, "name")) or default
        if name in names:
            r.fail(join(path, "name"), f"{name!r} names another check too")
        names.add(name)
        found = _http(r, body, path, name) if is_http else _metric(r, body, path, name)
        if found is not None:
            checks.append(found)
    if r.problems:
        raise Invalid(tuple(r.problems))
    return checks


# -- HTTP checks -----------------------------------------------------------------------------


def _field(body: Any, dotted: str) -> Any:
    """A JSON field by its dotted path (``status``, ``checks.db``, ``items.0.id``)."""
    value = body
    for part in dotted.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return _MISSING
    return value


class _TooSlow(Exception):
    """An answer still arriving when the attempt's time was over."""


def _read(
    check: HttpCheck, client: httpx.Client, clock: Callable[[], float]
) -> tuple[int, str, bool]:
    """Ask once: the status, the body as text (at most ``MAX_BODY_READ`` bytes of it),
    and whether that is all of it. ``check.timeout`` bounds the whole attempt, not
    only each wait for a byte: an answer that trickles for ever is ``_TooSlow``."""
    deadline = clock() + check.timeout
    with client.stream("GET", check.url, timeout=check.timeout) as response:
        chunks: list[bytes] = []
        size = 0
        complete = True
        for chunk in response.iter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_BODY_READ:
                complete = False
                break
            if clock() > deadline:
                raise _TooSlow
        content = b"".join(chunks)[:MAX_BODY_READ]
        text = content.decode(response.encoding or "utf-8", errors="replace")
        return response.status_code, text, complete


def _judge_answer(check: HttpCheck, status: int, text: str, complete: bool) -> str | None:
    """What is wrong with an answer, or None when it is what the check expects."""
    if status != check.status:
        return f"answered {status}, expected {check.status}"
    if (check.contains is not None or check.json_field is not None) and not complete:
        return f"the body is larger than the first {MAX_BODY_READ} bytes a check reads"
    if check.contains is not None and check.contains not in text:
        return f"the body does not contain {check.contains!r}"
    if check.json_field is not None:
        try:
            body = json.loads(text)
        except ValueError:
            return "the body is not JSON"
        found = _field(body, check.json_field)
        if found is _MISSING:
            return f"the JSON has no field {check.json_field!r}"
        if found != check.json_equals:
            return f"{check.json_field} is {found!r}, expected {check.json_equals!r}"
    return None


def run_http(
    check: HttpCheck,
    client: httpx.Client,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Ask until the answer is as expected or the retry period is over; the evidence."""
    started = clock()
    attempts = 0
    evidence: dict[str, Any] = {"name": check.name, "kind": "http", "url": check.url}
    evidence["expected"] = {"status": check.status}
    if check.contains is not None:
        evidence["expected"]["contains"] = check.contains
    if check.json_field is not None:
        evidence["expected"]["json"] = {"field": check.json_field, "equals": check.json_equals}
    while True:
        attempts += 1
        asked = clock()
        problem: str | None
        body: str | None
        status: int | None
        try:
            answered, text, complete = _read(check, client, clock)
        except httpx.HTTPError as exc:
            problem, status, body = f"no answer: {type(exc).__name__}: {exc}", None, None
        except _TooSlow:
            problem, status, body = f"no whole answer within {check.timeout:g}s", None, None
        else:
            problem, status = _judge_answer(check, answered, text, complete), answered
            body = text[:MAX_BODY_SHOWN]
        evidence |= {
            "attempts": attempts,
            "status": status,
            "body": body,
            "elapsed_ms": round((clock() - asked) * 1000, 1),
        }
        if problem is None:
            return {**evidence, "passed": True, "problem": None}
        if clock() - started + check.interval > check.retry_for:
            return {
                **evidence,
                "passed": False,
                "problem": problem,
                "tried_for_s": round(clock() - started, 1),
            }
        sleep(check.interval)


# -- metric checks ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Period:
    """One arm of a metric check: per 10-second window, exposures and the metric."""

    windows: tuple[judge.ArmBatch, ...]

    @property
    def exposures(self) -> int:
        return sum(w.exposures for w in self.windows)


def _arm(windows: Sequence[Mapping[str, Any]], metric: str, starts: Sequence[int]) -> Period:
    """Per window start, the variants' exposures, counts and histograms summed."""
    exposures: dict[int, int] = dict.fromkeys(starts, 0)
    counts: dict[int, int] = dict.fromkeys(starts, 0)
    hists: dict[int, Histogram] = {s: Histogram.of(()) for s in starts}
    for w in windows:
        start = int(datetime.fromisoformat(str(w["start"])).timestamp())
        if start not in exposures:
            continue
        exposures[start] += int(w.get("exposures") or 0)
        counts[start] += int(w.get("count") or 0)
        buckets = {int(k): int(v) for k, v in (w.get("buckets") or {}).items()}
        if buckets:
            hist = Histogram.from_counts(buckets, float(w.get("sum") or 0.0))
            hists[start] = hists[start].merge(hist)
    return Period(
        tuple(judge.ArmBatch(exposures[s], {metric: counts[s]}, {metric: hists[s]}) for s in starts)
    )


def _config(check: MetricCheck) -> judge.JudgeConfig:
    guard: judge.Guard
    if check.kind == "rate":
        guard = judge.RateGuard(check.name, check.metric, margin=check.margin)
    else:
        guard = judge.ContinuousGuard(check.name, check.metric, margin=max(check.margin, 0.05))
    return judge.JudgeConfig(
        (guard,), min_exposures=check.min_exposures, horizon_s=check.minutes * 60
    )


def _decided(
    check: MetricCheck, state: judge.JudgeState, evidence: dict[str, Any]
) -> dict[str, Any]:
    explained = judge.explain(state)
    evidence["judge"] = explained
    if state.decision is judge.Decision.FAIL:
        return {**evidence, "passed": False, "problem": f"regression: {state.reason}"}
    if not state.exposures_t or not state.exposures_c:
        gone = "after" if not state.exposures_t else "before"
        return {**evidence, "passed": False, "problem": f"no traffic {gone} the deploy to judge"}
    if state.exposures_t < check.min_exposures:
        return {
            **evidence,
            "passed": False,
            "problem": f"too little traffic after the deploy ({state.exposures_t} exposures, "
            f"{check.min_exposures} needed)",
        }
    return {**evidence, "passed": True, "problem": None}


def judge_metric(
    check: MetricCheck, deploy_at: datetime, windows: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Judge the windows after the deploy against as many before it; the evidence.

    Windows that hold the deploy's moment belong to neither side. Window k
    after the deploy is paired with window k before it, one judge batch each.
    """
    span = int(check.minutes * 60) // WINDOW * WINDOW or WINDOW
    moment = deploy_at.timestamp()
    first_after = math.ceil(moment / WINDOW) * WINDOW
    last_before = math.floor(moment / WINDOW) * WINDOW
    after_starts = list(range(first_after, first_after + span, WINDOW))
    before_starts = list(range(last_before - span, last_before, WINDOW))
    after = _arm(windows, check.metric, after_starts)
    before = _arm(windows, check.metric, before_starts)
    state = judge.start(_config(check))
    for k, (t, c) in enumerate(zip(after.windows, before.windows, strict=True)):
        state = judge.observe(state, judge.Batch(float((k + 1) * WINDOW), t, c))
    evidence = _metric_evidence(check, before, after, before_starts, after_starts)
    return _decided(check, state, evidence)


def _metric_evidence(
    check: MetricCheck,
    before: Period,
    after: Period,
    before_starts: Sequence[int],
    after_starts: Sequence[int],
) -> dict[str, Any]:
    def side(period: Period, starts: Sequence[int]) -> dict[str, Any]:
        events = sum(w.counts.get(check.metric, 0) for w in period.windows)
        out: dict[str, Any] = {
            "from": datetime.fromtimestamp(starts[0], UTC).isoformat(),
            "until": datetime.fromtimestamp(starts[-1] + WINDOW, UTC).isoformat(),
            "exposures": period.exposures,
            "events": events,
        }
        if check.kind == "rate":
            out["rate"] = round(events / period.exposures, 6) if period.exposures else None
        else:
            merged = Histogram.of(())
            for w in period.windows:
                merged = merged.merge(w.values.get(check.metric, Histogram.of(())))
            out["p50"] = merged.quantile(0.5) if merged.count else None
            out["p99"] = merged.quantile(0.99) if merged.count else None
        return out

    return {
        "name": check.name,
        "kind": f"metric:{check.kind}",
        "source": check.source,
        "flag": check.flag,
        "metric": check.metric,
        "minutes": check.minutes,
        "before": side(before, before_starts),
        "after": side(after, after_starts),
    }


def judge_prometheus(
    check: MetricCheck,
    before: tuple[float, float],
    after: tuple[float, float],
    deploy_at: datetime,
) -> dict[str, Any]:
    """Judge Prometheus' (events, total) over the period after the deploy against before."""
    state = judge.start(_config(check))
    t = judge.ArmBatch(int(after[1]), {check.metric: int(after[0])})
    c = judge.ArmBatch(int(before[1]), {check.metric: int(before[0])})
    state = judge.observe(state, judge.Batch(check.minutes * 60, t, c))
    span = timedelta(minutes=check.minutes)
    evidence: dict[str, Any] = {
        "name": check.name,
        "kind": "metric:rate",
        "source": "prometheus",
        "metric": check.metric,
        "events_query": check.events,
        "total_query": check.total,
        "minutes": check.minutes,
        "before": {
            "from": (deploy_at - span).isoformat(),
            "until": deploy_at.isoformat(),
            "events": before[0],
            "exposures": before[1],
            "rate": round(before[0] / before[1], 6) if before[1] else None,
        },
        "after": {
            "from": deploy_at.isoformat(),
            "until": (deploy_at + span).isoformat(),
            "events": after[0],
            "exposures": after[1],
            "rate": round(after[0] / after[1], 6) if after[1] else None,
        },
    }
    return _decided(check, state, evidence)


#: reads the server's metrics API: (flag, metric, since, until) -> its ``windows``
SeriesReader = Callable[[str, str, datetime, datetime], Sequence[Mapping[str, Any]]]
#: evaluates a Prometheus query at an instant: (query, at) -> a number
PromReader = Callable[[str, datetime], float]


def run_checks(
    checks: Sequence[Check],
    deploy_at: datetime,
    http: httpx.Client,
    series: SeriesReader,
    prometheus: PromReader | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[str, list[dict[str, Any]]]:
    """Run every check (HTTP first); "passed" only if each passed, and every evidence."""
    evidence = [run_http(c, http, sleep) for c in checks if isinstance(c, HttpCheck)]
    for check in checks:
        if not isinstance(check, MetricCheck):
            continue
        span = timedelta(minutes=check.minutes)
        if check.source == "sdk":
            assert check.flag is not None
            windows = series(check.flag, check.metric, deploy_at - span, deploy_at + span)
            evidence.append(judge_metric(check, deploy_at, windows))
        elif prometheus is None:
            evidence.append(
                {
                    "name": check.name,
                    "kind": "metric:rate",
                    "source": "prometheus",
                    "passed": False,
                    "problem": "no Prometheus URL given (--prometheus or UNVEIL_PROMETHEUS_URL)",
                }
            )
        else:
            assert check.events is not None
            assert check.total is not None
            before = (prometheus(check.events, deploy_at), prometheus(check.total, deploy_at))
            end = deploy_at + span
            after = (prometheus(check.events, end), prometheus(check.total, end))
            evidence.append(judge_prometheus(check, before, after, deploy_at))
    result = "passed" if all(e["passed"] for e in evidence) else "failed"
    return result, evidence
