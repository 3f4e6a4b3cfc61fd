"""Dark-launch experiments on the server (issue 14): intake, list and report.

Against real server processes on both databases: the wire events of
EXPERIMENT_WIRE.md go in through ``POST /sdk/v1/events``; what comes out of
``GET .../experiments`` is read back as an operator would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from tests.event_flood import EVENTS, flood
from tests.server_process import (
    ADMIN_TOKEN,
    Server,
    database,
    sdk_key,
    start_server,
    stop,
    wait_for,
)
from unveil.cli.main import main
from unveil.core.logbuckets import bucket_of

EXPERIMENTS = "/api/v1/projects/shop/environments/production/experiments"
#: a window start two minutes ago, and a moment inside it
WINDOW = (int(time.time()) - 120) // 10 * 10
AT = WINDOW + 2
RANGE = {"since": WINDOW - 60, "until": WINDOW + 120}


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the tests that are refused or need one database only."""
    with database("sqlite", tmp_path_factory.mktemp("experiments")) as url:
        running = start_server(url)
        try:
            yield running
        finally:
            stop(running)


def aggregate(name: str, at: float = AT, **overrides: Any) -> dict[str, Any]:
    """One window's aggregate of an experiment, as the SDK sends it."""
    event: dict[str, Any] = {
        "kind": "experiment",
        "experiment": name,
        "at": at,
        "outcomes": {"match": 960, "mismatch": 30, "ignored": 4, "error": 3, "timeout": 1},
        "errors": {"KeyError": 2, "ValueError": 1},
        "control_ms": {"count": 998, "sum": 998 * 20.0, "buckets": {str(bucket_of(20.0)): 998}},
        "candidate_ms": {
            "count": 997,
            "sum": 997 * 30.0,
            "buckets": {str(bucket_of(30.0)): 997},
        },
    }
    event.update(overrides)
    return event


def mismatch(name: str, i: int, at: float = AT) -> dict[str, Any]:
    return {
        "kind": "mismatch",
        "experiment": name,
        "at": at,
        "context": f"user-{i}",
        "control": {"hits": [1, 2, i]},
        "candidate": {"hits": [1, i]},
    }


def _send(server: Server, events: list[dict[str, Any]], key: str | None = None) -> httpx.Response:
    with server.client(key or sdk_key(server.database_url)) as sdk:
        return sdk.post(EVENTS, json={"events": events})


def _report(server: Server, name: str, **params: Any) -> httpx.Response:
    with server.client() as api:
        return api.get(f"{EXPERIMENTS}/{name}", params={**RANGE, **params})


def _reported(server: Server, name: str, runs: int, examples: int = 0) -> dict[str, Any]:
    """The report once the intake has written what it took (it writes every 2 s)."""
    found: dict[str, Any] = {}

    def ready() -> bool:
        answer = _report(server, name)
        if answer.status_code != 200:
            return False
        found.update(answer.json())
        return bool(found["runs"] == runs and len(found["examples"]) >= examples)

    assert wait_for(ready, 30), found
    return found


def test_an_experiment_is_counted_and_reported_with_its_examples(server: Server) -> None:
    key = sdk_key(server.database_url)
    sent = _send(
        server,
        [aggregate("search-v2"), aggregate("search-v2", at=AT + 10), mismatch("search-v2", 7)],
        key,
    )
    assert sent.status_code == 202, sent.text
    report = _reported(server, "search-v2", runs=2 * 998, examples=1)
    assert report["outcomes"] == {
        "match": 1920,
        "mismatch": 60,
        "ignored": 8,
        "error": 6,
        "timeout": 2,
        "skipped": 0,
    }
    rate = report["mismatch_rate"]
    assert rate["value"] == pytest.approx(60 / 1980, abs=1e-6)
    assert rate["low"] < 60 / 1980 < rate["high"]
    assert rate["confidence"] == 0.95
    assert report["errors"] == [
        {"type": "KeyError", "count": 4, "share": round(4 / 1996, 6)},
        {"type": "ValueError", "count": 2, "share": round(2 / 1996, 6)},
    ]
    latency = report["latency"]
    assert latency["control"]["count"] == 1996
    assert latency["candidate"]["count"] == 1994
    assert latency["control"]["p50"]["value"] == pytest.approx(20.0, rel=0.05)
    difference = latency["difference"]["p50"]
    assert difference["low"] <= 10.0 <= difference["high"]
    assert difference["value"] == pytest.approx(10.0, rel=0.15)
    [example] = report["examples"]
    assert example["context"] == "user-7"
    assert example["control"] == {"hits": [1, 2, 7]}
    assert example["candidate"] == {"hits": [1, 7]}
    points = report["series"]["points"]
    assert report["series"]["step_seconds"] == 10
    assert [p["outcomes"]["mismatch"] for p in points] == [30, 30]
    assert points[0]["control"]["p50"] == pytest.approx(20.0, rel=0.05)

    with server.client() as api:
        listed = api.get(EXPERIMENTS).json()["experiments"]
    [entry] = listed
    assert entry["name"] == "search-v2"
    assert entry["runs"] == 1996
    assert entry["mismatch_rate"]["value"] == pytest.approx(60 / 1980, abs=1e-6)
    assert entry["last_seen"].startswith(time.strftime("%Y-%m-%d", time.gmtime(WINDOW)))


def test_a_batch_with_bad_experiment_events_is_refused_whole_naming_each_field(
    sqlite_server: Server,
) -> None:
    good = aggregate("kept-out")
    bad = [
        good,
        aggregate("x", outcomes={"match": 1, "maybe": 2}),
        aggregate("x", outcomes={"match": -1}, errors={}),
        aggregate("x", errors={"KeyError": 1}),
        aggregate("x", control_ms={"count": 3, "sum": 1.0, "buckets": {"5": 2}}),
        aggregate("x", candidate_ms=12.5),
        aggregate("", outcomes={"match": 0}, errors={}),
        {**mismatch("x", 1), "control": "a" * 5000},
        {k: v for k, v in mismatch("x", 1).items() if k != "candidate"},
        {"kind": "metric", "metric": "$experiment.match", "value": 1},
    ]
    answer = _send(sqlite_server, bad)
    assert answer.status_code == 422, answer.text
    assert [p["path"] for p in answer.json()["problems"]] == [
        "events[1].outcomes.maybe",
        "events[2].outcomes.match",
        "events[3].errors",
        "events[4].control_ms.count",
        "events[5].candidate_ms",
        "events[6].experiment",
        "events[6].outcomes",
        "events[7].control",
        "events[8].candidate",
        "events[9].metric",
    ]
    # nothing of it was kept: a good batch sent after it is the only thing counted
    assert _send(sqlite_server, [aggregate("kept-out", at=AT + 20)]).status_code == 202
    report = _reported(sqlite_server, "kept-out", runs=998)
    assert report["outcomes"]["match"] == 960


def test_only_the_latest_fifty_examples_are_kept(server: Server) -> None:
    key = sdk_key(server.database_url)
    for batch in range(3):  # three batches: the bound holds across writes, not only in one
        events = [
            mismatch("pricing", batch * 25 + i, at=AT + batch * 10 + i / 10) for i in range(25)
        ]
        assert _send(server, [aggregate("pricing"), *events], key).status_code == 202
        _reported(server, "pricing", runs=998 * (batch + 1), examples=min(50, 25 * (batch + 1)))
    examples = _reported(server, "pricing", runs=3 * 998, examples=50)["examples"]
    assert len(examples) == 50
    assert [e["context"] for e in examples] == [f"user-{i}" for i in range(74, 24, -1)]


def test_report_parameters_are_checked_and_named(sqlite_server: Server) -> None:
    _send(sqlite_server, [aggregate("checked")])
    _reported(sqlite_server, "checked", runs=998)
    cases = [
        ({"since": "yesterday"}, ["since"]),
        ({"since": WINDOW + 60, "until": WINDOW}, ["since"]),
        ({"since": WINDOW - 8 * 86400, "until": WINDOW}, ["until"]),
        ({"since": "x", "until": "y"}, ["until", "since"]),
    ]
    for params, paths in cases:
        answer = _report(sqlite_server, "checked", **params)
        assert answer.status_code == 422, (params, answer.text)
        assert [p["path"] for p in answer.json()["problems"]] == paths, params
    assert _report(sqlite_server, "never-ran").status_code == 404
    too_long = _report(sqlite_server, "x" * 201)  # refused before the route, by name
    assert too_long.status_code == 422
    assert [p["path"] for p in too_long.json()["problems"]] == ["name"]
    # an experiment with no runs in the range is a report of zeros, not an error
    empty = _report(sqlite_server, "checked", since=WINDOW - 7200, until=WINDOW - 3600)
    assert empty.status_code == 200
    assert empty.json()["runs"] == 0
    assert empty.json()["mismatch_rate"]["value"] is None


def test_experiments_are_read_by_viewers_only(sqlite_server: Server) -> None:
    with sqlite_server.client() as api:
        made = api.post(
            "/api/v1/tokens", json={"name": "experiment viewer", "kind": "admin", "role": "viewer"}
        )
        assert made.status_code == 201, made.text
    viewer = made.json()["secret"]
    with sqlite_server.client(viewer) as api:
        assert api.get(EXPERIMENTS).status_code == 200
    assert httpx.get(f"{sqlite_server.url}{EXPERIMENTS}").status_code == 401
    with sqlite_server.client(sdk_key(sqlite_server.database_url)) as sdk:
        assert sdk.get(EXPERIMENTS).status_code in {401, 403}


def _cli(server: Server, *args: str) -> Result:
    env = {
        "UNVEIL_URL": server.url,
        "UNVEIL_TOKEN": ADMIN_TOKEN,
        "UNVEIL_PROJECT": "shop",
        "UNVEIL_CONFIG": "/nonexistent",
        "COLUMNS": "200",
    }
    return CliRunner().invoke(main, list(args), env=env)


def test_the_cli_lists_experiments_and_shows_a_report(sqlite_server: Server) -> None:
    _send(sqlite_server, [aggregate("cli-shown"), mismatch("cli-shown", 3)])
    _reported(sqlite_server, "cli-shown", runs=998, examples=1)
    listed = _cli(sqlite_server, "experiment", "list", "-e", "production")
    assert listed.exit_code == 0, listed.output
    assert "cli-shown" in listed.output
    assert "3.03% (" in listed.output  # 30 of 990 compared runs
    since, until = str(RANGE["since"]), str(RANGE["until"])
    shown = _cli(
        sqlite_server,
        "experiment",
        "show",
        "cli-shown",
        "-e",
        "production",
        "--since",
        since,
        "--until",
        until,
    )
    assert shown.exit_code == 0, shown.output
    for text in ("runs: 998", "mismatch: 30", "mismatch rate (95%): 3.03%", "KeyError", "user-3"):
        assert text in shown.output, text
    assert "+10." in shown.output or "+9." in shown.output  # the p50 difference, ms
    as_json = _cli(
        sqlite_server,
        "experiment",
        "show",
        "cli-shown",
        "-e",
        "production",
        "--json",
        "--since",
        since,
        "--until",
        until,
    )
    assert json.loads(as_json.output)["outcomes"]["mismatch"] == 30
    missing = _cli(sqlite_server, "experiment", "show", "nope", "-e", "production")
    assert missing.exit_code != 0
    assert "no experiment 'nope'" in missing.output


def _experiment_batch(sender: int, number: int) -> bytes:
    """Aggregates and 4 KB of examples of many experiments: a busy fleet of dark launches."""
    now = time.time()
    events: list[dict[str, Any]] = []
    for i in range(100):
        name = f"x{sender}-{(number * 100 + i) % 300}"
        events.append(aggregate(name, at=now))
        events.append({**mismatch(name, i, at=now), "control": "c" * 2000, "candidate": "d" * 2000})
    return json.dumps({"events": events}).encode()


def test_a_flag_write_answers_quickly_during_a_flood_of_experiment_events(server: Server) -> None:
    """Examples and experiment windows are telemetry: a kill switch never waits for them."""
    slowest = 0.0
    with (
        server.client() as api,
        flood(server, sdk_key(server.database_url), 4, _experiment_batch) as seen,
    ):
        for i in range(8):
            started = time.monotonic()
            written = api.put(
                f"/api/v1/projects/shop/environments/production/flags/kill-{i}",
                json={"default": "off"},
                timeout=30,
            )
            slowest = max(slowest, time.monotonic() - started)
            assert written.status_code == 201
    assert seen.statuses[202] > 0, dict(seen.statuses)
    assert seen.statuses[500] == 0
    assert slowest < 2.0, f"a flag write waited {slowest:.1f} s behind experiment events"


def test_sums_too_large_to_add_up_are_refused_so_a_report_never_fails(
    sqlite_server: Server,
) -> None:
    """Two finite sums of 1.7e308 add up to infinity: the report read them and answered 500."""
    huge = {"count": 1, "sum": 1.7e308, "buckets": {"5": 1}}
    answer = _send(sqlite_server, [aggregate("huge-sums", control_ms=huge)] * 2)
    assert answer.status_code == 422, answer.text
    assert [p["path"] for p in answer.json()["problems"]] == [
        "events[0].control_ms.sum",
        "events[1].control_ms.sum",
    ]
    metric = _send(sqlite_server, [{"kind": "metric", "metric": "m", "value": -1.7e308}])
    assert metric.status_code == 422, metric.text
    assert metric.json()["problems"][0]["path"] == "events[0].value"
    # the largest accepted sums still add up to a finite total, and the report reads them
    largest = {"count": 1, "sum": 1e200, "buckets": {"5": 1}}
    sent = _send(sqlite_server, [aggregate("huge-sums", control_ms=largest)] * 2)
    assert sent.status_code == 202, sent.text
    report = _reported(sqlite_server, "huge-sums", runs=2 * 998)
    assert report["latency"]["control"]["count"] == 2
