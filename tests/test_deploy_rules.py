"""The rules of deploys that need no server: version order, what "released" means, checks.

The metric checks are judged here from windows shaped as ``GET .../metrics``
answers them, with the release judge itself.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from unveil.release.histogram import Histogram
from unveil.service.deploys import _older, is_released
from unveil.service.errors import Invalid
from unveil.service.verification import HttpCheck, MetricCheck, judge_metric, parse_checks


@pytest.mark.parametrize(
    ("version", "current", "order", "older"),
    [
        ("1.9.2", "1.10.0", [], True),  # semver, not text order
        ("1.10.0", "1.9.2", [], False),
        ("2.0.0-rc.1", "2.0.0", [], True),  # a pre-release comes before its release
        ("abc", "def", ["abc", "def"], True),  # not semver: first deployed here is older
        ("def", "abc", ["abc", "def"], False),
        ("new", "abc", ["abc"], False),  # never deployed here: newer
        ("abc", "abc", ["abc"], False),
        ("1.0.0", "main-41", ["1.0.0", "main-41"], True),  # only one parses: by order
    ],
)
def test_versions_compare_as_semver_when_both_parse_else_by_order(
    version: str, current: str, order: list[str], older: bool
) -> None:
    assert _older(version, current, order) is older


@pytest.mark.parametrize(
    ("flag", "released"),
    [
        ({"default": "off"}, False),
        ({"default": "on"}, True),
        ({"default": "on", "enabled": False}, False),
        ({"default": {"rollout": {"on": 0, "off": 100}}}, False),
        ({"default": {"rollout": {"on": 0.001, "off": 99.999}}}, True),
        ({"default": "off", "rules": [{"when": [], "serve": "on"}]}, True),
        ({"default": "off", "targets": {"on": ["user-1"]}}, True),
        ({"default": "off", "targets": {"on": []}}, False),
        ({"default": "dark", "off_variant": "dark"}, False),
        (None, False),
    ],
)
def test_a_flag_is_released_when_it_serves_anyone_other_than_its_off_variant(
    flag: Any, released: bool
) -> None:
    assert is_released(flag) is released


def test_checks_are_read_with_their_defaults() -> None:
    http, metric = parse_checks(
        {
            "checks": [
                {"http": "https://x.test/h", "json": {"field": "a.b", "equals": True}},
                {"metric": "latency_ms", "kind": "latency", "flag": "f", "minutes": 2},
            ]
        }
    )
    assert http == HttpCheck("http-1", "https://x.test/h", json_field="a.b", json_equals=True)
    assert metric == MetricCheck("latency_ms-2", "latency_ms", "latency", "f", 2.0)


def test_every_problem_of_a_checks_list_is_named_with_its_place() -> None:
    with pytest.raises(Invalid) as refused:
        parse_checks(
            [
                {"http": "file:///etc/passwd", "status": 99, "retry_for": "forever"},
                {"metric": "errors", "kind": "avg", "flag": "f", "minutes": 0},
                {"metric": "errors", "source": "prometheus", "kind": "latency"},
                {"name": "x", "http": "http://a.test", "nope": 1},
                {"something": "else"},
            ]
        )
    paths = [p.path for p in refused.value.problems]
    assert paths == [
        "checks[0].http",
        "checks[0].status",
        "checks[0].retry_for",
        "checks[1].kind",
        "checks[1].minutes",
        "checks[2].kind",
        "checks[2].events",
        "checks[2].total",
        "checks[3].nope",
        "checks[4].something",
        "checks[4]",
    ]
    with pytest.raises(Invalid, match="checks: must be a non-empty list"):
        parse_checks({"checks": []})


DEPLOYED = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)


def _window(start: datetime, exposures: int, values: list[float]) -> dict[str, Any]:
    hist = Histogram.of(values)
    return {
        "variant": "on",
        "start": start.isoformat(),
        "seconds": 10,
        "exposures": exposures,
        "count": hist.count,
        "sum": hist.total,
        "buckets": {str(i): n for i, n in hist.buckets},
    }


def _latency_windows(before_ms: float, after_ms: float) -> list[dict[str, Any]]:
    out = []
    for k in range(6):
        spread = [before_ms * (1 + (i % 10) / 20) for i in range(200)]
        out.append(_window(DEPLOYED - timedelta(seconds=60 - 10 * k), 200, spread))
        spread = [after_ms * (1 + (i % 10) / 20) for i in range(200)]
        out.append(_window(DEPLOYED + timedelta(seconds=10 * k), 200, spread))
    return out


def test_a_latency_check_fails_when_requests_get_twice_as_slow_and_passes_when_not() -> None:
    check = MetricCheck("latency", "latency_ms", "latency", "f", minutes=1)
    slower = judge_metric(check, DEPLOYED, _latency_windows(10.0, 20.0))
    assert slower["passed"] is False
    assert slower["problem"].startswith("regression")
    assert slower["after"]["p50"] > 1.8 * slower["before"]["p50"]
    same = judge_metric(check, DEPLOYED, _latency_windows(10.0, 10.0))
    assert same["passed"] is True, same["problem"]


def test_windows_holding_the_deploy_belong_to_neither_side_and_no_data_is_no_pass() -> None:
    check = MetricCheck("errors", "errors", "rate", "f", minutes=1)
    moment = DEPLOYED + timedelta(seconds=4)  # inside the window that starts at DEPLOYED
    mixed = [_window(DEPLOYED, 1000, [1.0] * 500)]
    judged = judge_metric(check, moment, mixed)
    assert (judged["before"]["exposures"], judged["after"]["exposures"]) == (0, 0)
    assert judged["passed"] is False
    assert judged["problem"] == "no traffic after the deploy to judge"


def test_bad_references_are_named_one_by_one() -> None:
    from unveil.service.deploys import _reference_problems

    assert _reference_problems({"a": ["x.py:1"], "b": []}) == []
    found = _reference_problems({"a": ["x.py:1", "bad\x1b[31m"], "b": "x.py:2", "": ["y:1"]})
    assert [p.path for p in found] == ["references.a[1]", "references.b", "references."]
    assert _reference_problems(["a"])[0].path == "references"
    many = {f"f{i}": ["p:1"] * 11 for i in range(10_000)}
    assert [p.message for p in _reference_problems(many)] == ["at most 100000 locations in all"]
