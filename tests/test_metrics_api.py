"""GET .../metrics and the SDK's timing helpers, against real server processes.

What the SDK reports (exposures, timed blocks, errors, summaries of many
values) comes back per variant per 10-second window with its histogram.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.event_flood import EVENTS
from tests.server_process import Server, database, sdk_key, start_server, stop, wait_for
from unveil.core.logbuckets import bucket_of
from unveil.sdk import Client

METRICS = "/api/v1/projects/shop/environments/production/metrics"
FLAGS = "/api/v1/projects/shop/environments/production/flags"
#: a window start a minute ago, and a moment inside that window
WINDOW = (int(time.time()) - 60) // 10 * 10
AT = WINDOW + 3


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the tests that only ask and are refused."""
    with database("sqlite", tmp_path_factory.mktemp("metrics")) as url:
        running = start_server(url)
        try:
            yield running
        finally:
            stop(running)


def _metrics(server: Server, **params: Any) -> httpx.Response:
    with server.client() as api:
        return api.get(METRICS, params=params)


def _windows(server: Server, metric: str) -> list[dict[str, Any]]:
    answer = _metrics(server, flag="checkout", metric=metric, since=WINDOW - 10, until=AT + 60)
    assert answer.status_code == 200, answer.text
    return list(answer.json()["windows"])


def _latency(variant: str, value: float) -> dict[str, Any]:
    return {
        "kind": "metric",
        "metric": "latency_ms",
        "value": value,
        "variants": {"checkout": variant},
        "at": AT,
    }


def test_the_metrics_of_a_flag_come_back_per_variant_and_window(server: Server) -> None:
    key = sdk_key(server.database_url)
    summary = {  # what an SDK sends for many values: count, sum, buckets
        "kind": "metric",
        "metric": "latency_ms",
        "count": 3,
        "sum": 300.0,
        "buckets": {str(bucket_of(100.0)): 3},
        "variants": {"checkout": "on"},
        "at": AT,
    }
    events = [
        *({"kind": "exposure", "flag": "checkout", "variant": v, "at": AT} for v in ("on", "off")),
        _latency("on", 20.0),
        _latency("off", 10.0),
        _latency("off", 12.0),
        summary,
    ]
    with server.client(key) as sdk:
        assert sdk.post(EVENTS, json={"events": events}).status_code == 202
    assert wait_for(lambda: len(_windows(server, "latency_ms")) == 2)
    on, off = sorted(_windows(server, "latency_ms"), key=lambda w: w["variant"] != "on")
    assert (on["variant"], on["seconds"], on["exposures"]) == ("on", 10, 1)
    assert on["start"].startswith(time.strftime("%Y-%m-%dT%H:%M", time.gmtime(WINDOW)))
    assert (on["count"], on["sum"]) == (4, 320.0)
    assert on["buckets"] == {str(bucket_of(20.0)): 1, str(bucket_of(100.0)): 3}
    assert on["quantiles"]["p99"] == pytest.approx(100.0, rel=0.1)
    assert (off["count"], off["sum"], off["exposures"]) == (2, 22.0, 1)


BOTH = ["until", "since"]


@pytest.mark.parametrize(
    ("params", "paths"),
    [
        ({}, ["flag", "metric"]),
        ({"flag": "checkout", "metric": "m", "since": "yesterday"}, ["since"]),
        ({"flag": "checkout", "metric": "m", "since": 2000, "until": 1000}, ["since"]),
        ({"flag": "checkout", "metric": "m", "since": 0, "until": 90000}, ["until"]),
        ({"flag": "checkout", "metric": "m\x01"}, ["metric"]),
        (
            {"flag": "c", "metric": "m", "since": -99999999999, "until": -99999999000},
            ["until", "since"],
        ),
        (
            {"flag": "c", "metric": "m", "since": 253402300000, "until": 253402310000},
            ["until", "since"],
        ),
        (
            {
                "flag": "c",
                "metric": "m",
                "since": "9999-12-31T23:00:00Z",
                "until": "9999-12-31T23:59:59Z",
            },
            BOTH,
        ),
    ],
)
def test_bad_parameters_are_refused_with_422_naming_them(
    sqlite_server: Server, params: dict[str, Any], paths: list[str]
) -> None:
    answer = _metrics(sqlite_server, **params)
    assert answer.status_code == 422, answer.text
    assert [p["path"] for p in answer.json()["problems"]] == paths


def test_metrics_need_a_token_and_a_known_environment(sqlite_server: Server) -> None:
    assert httpx.get(f"{sqlite_server.url}{METRICS}?flag=f&metric=m").status_code == 401
    with sqlite_server.client() as api:
        missing = api.get(METRICS.replace("production", "nowhere"), params={"flag": "f"})
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"buckets": {"999": 1}, "count": 1}, "events[0].buckets.999"),
        ({"buckets": {"5": 0}, "count": 0}, "events[0].buckets.5"),
        ({"count": 7}, "events[0].count"),
        ({"sum": "many"}, "events[0].sum"),
        ({"value": 3.0}, "events[0].value"),
        ({"buckets": []}, "events[0].buckets"),
    ],
)
def test_a_bad_summary_is_refused_whole(
    sqlite_server: Server, change: dict[str, Any], path: str
) -> None:
    event = {"kind": "metric", "metric": "m", "count": 2, "sum": 2.0, "buckets": {"5": 2}}
    with sqlite_server.client(sdk_key(sqlite_server.database_url)) as sdk:
        answer = sdk.post(EVENTS, json={"events": [{**event, **change}]})
    assert answer.status_code == 422, answer.text
    assert [p["path"] for p in answer.json()["problems"]] == [path]


def test_the_sdk_times_blocks_and_calls_and_counts_errors(tmp_path: Path) -> None:
    with database("sqlite", tmp_path) as url:
        server = start_server(url)
        try:
            with server.client() as api:
                assert api.put(f"{FLAGS}/checkout", json={"default": "on"}).status_code == 201
            client = Client(server.url, sdk_key(url), cache_dir=tmp_path / "cache")
            assert client.wait_until_ready(15)
            user = {"key": "user-1"}
            assert client.enabled("checkout", user) is True  # exposed: metrics go to "on"

            @client.timed("latency_ms", lambda who, fail: who)
            def serve(who: dict[str, str], fail: bool) -> str:
                if fail:
                    raise ValueError("broken")
                return who["key"]

            with client.timer("latency_ms", user) as timer:
                total = sum(range(10_000))
            assert total == 49_995_000
            assert timer.elapsed_ms is not None and timer.elapsed_ms >= 0  # noqa: PT018
            assert serve(user, False) == "user-1"
            with pytest.raises(ValueError, match="broken"):
                serve(user, True)  # timed all the same, and one error counted
            client.count_error(user)
            client.close()  # sends what is waiting

            def by_metric(metric: str) -> dict[str, Any]:
                since = int(time.time()) - 120
                answer = _metrics(server, flag="checkout", metric=metric, since=since)
                rows = answer.json()["windows"]
                return {
                    "count": sum(w["count"] for w in rows if w["variant"] == "on"),
                    "exposures": sum(w["exposures"] for w in rows if w["variant"] == "on"),
                }

            assert wait_for(lambda: by_metric("latency_ms")["count"] == 3)
            assert by_metric("errors") == {"count": 2, "exposures": 1}
        finally:
            stop(server)


def test_a_timed_coroutine_is_timed_when_it_ends_and_its_errors_counted() -> None:
    """The decorator on an async function (no server: what it hands to track)."""
    import asyncio

    from unveil.sdk.timing import timed

    tracked: list[tuple[str, object, float]] = []

    @timed(lambda m, c, v: tracked.append((m, c, v)), "latency_ms", lambda who, fail: who)
    async def serve(who: str, fail: bool) -> str:
        await asyncio.sleep(0.02)
        if fail:
            raise ValueError("broken")
        return who

    assert asyncio.run(serve("user-1", False)) == "user-1"
    with pytest.raises(ValueError, match="broken"):
        asyncio.run(serve("user-2", True))
    assert [(m, c) for m, c, _ in tracked] == [
        ("latency_ms", "user-1"),
        ("latency_ms", "user-2"),
        ("errors", "user-2"),
    ]
    assert all(v >= 20.0 for m, _, v in tracked if m == "latency_ms")  # the awaited time
    assert tracked[-1][2] == 1.0
