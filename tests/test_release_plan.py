"""Release plans: read from plain data, refused whole with every problem named."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from ruamel.yaml import YAML

from tests.release_strategies import PLANS
from unveil.core.errors import Problem, UnveilError
from unveil.release.errors import InvalidPlan
from unveil.release.plan import (
    Direction,
    Guard,
    GuardKind,
    OnInsufficientData,
    OnRegression,
    Options,
    Plan,
    Source,
    Step,
    check_against,
    parse_plan,
    plan_to_data,
)
from unveil.release.window import parse_window

DURATION = "a duration is text like '90s', '30m', '1h30m' or '2d', or whole seconds, not "
DOC = Path(__file__).parent.parent / "docs" / "release-plans.md"


def minimal(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "flag": "new-checkout",
        "environment": "production",
        "control": "off",
        "treatment": "on",
        "steps": [{"percent": 1, "hold": "30m"}, {"percent": 100}],
    }
    data.update(changes)
    return data


def problems(data: object, variants: list[str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(InvalidPlan) as caught:
        parse_plan(data, variants)
    return [(p.path, p.message) for p in caught.value.problems]


def test_a_minimal_plan_takes_the_defaults() -> None:
    plan = parse_plan(minimal())
    assert plan == Plan(
        "new-checkout",
        "production",
        "off",
        "on",
        (Step(1000, timedelta(minutes=30)), Step(100_000)),
    )
    assert plan.options == Options(
        window=None,
        min_exposures=0,
        insufficient_data=OnInsufficientData.WAIT,
        verification=timedelta(hours=1),
        on_regression=OnRegression.ROLLBACK,
        require_approval=False,
    )


def test_every_field_is_read() -> None:
    plan = parse_plan(
        minimal(
            steps=[
                {"percent": 0.5, "hold": "1h30m"},
                {"percent": 12.125, "hold": 90},
                {"percent": 100, "hold": "0s"},
            ],
            guards=[
                {"name": "errors", "kind": "rate", "metric": "errors", "margin": 0.05},
                {
                    "name": "p99",
                    "kind": "continuous",
                    "metric": "latency",
                    "source": "prometheus",
                    "query": 'rate(x{variant="{variant}",job="api"}[1m])',
                    "direction": "lower_is_worse",
                    "margin": 0,
                },
            ],
            options={
                "window": "Mon-Fri 09:00-16:00 Europe/Amsterdam",
                "min_exposures": 500,
                "insufficient_data": "advance",
                "verification": "2d",
                "on_regression": "hold",
                "require_approval": True,
            },
        )
    )
    assert plan.steps == (
        Step(500, timedelta(hours=1, minutes=30)),
        Step(12_125, timedelta(seconds=90)),
        Step(100_000),
    )
    assert plan.steps[1].percent == 12.125
    assert plan.steps[2].percent == 100
    assert plan.guards == (
        Guard("errors", GuardKind.RATE, "errors", Direction.HIGHER_IS_WORSE, 0.05, Source.SDK),
        Guard(
            "p99",
            GuardKind.CONTINUOUS,
            "latency",
            Direction.LOWER_IS_WORSE,
            0.0,
            Source.PROMETHEUS,
            'rate(x{variant="{variant}",job="api"}[1m])',
        ),
    )
    assert plan.options == Options(
        parse_window("Mon-Fri 09:00-16:00 Europe/Amsterdam"),
        500,
        OnInsufficientData.ADVANCE,
        timedelta(days=2),
        OnRegression.HOLD,
        True,
    )


def test_a_prometheus_query_names_the_variant_and_keeps_promql_braces() -> None:
    guard = parse_plan(
        minimal(
            guards=[
                {
                    "name": "p99",
                    "kind": "continuous",
                    "metric": "latency",
                    "source": "prometheus",
                    "query": (
                        'sum(rate(e{variant="{variant}"}[5m]))'
                        ' / sum(rate(r{variant="{variant}"}[5m]))'
                    ),
                }
            ]
        )
    ).guards[0]
    assert (
        guard.query_for("on") == 'sum(rate(e{variant="on"}[5m])) / sum(rate(r{variant="on"}[5m]))'
    )


def test_an_sdk_guard_has_no_query() -> None:
    guard = Guard("errors", GuardKind.RATE, "errors")
    with pytest.raises(ValueError, match="no query"):
        guard.query_for("on")


def test_a_bad_plan_is_refused_with_every_problem_and_its_path() -> None:
    found = problems(
        {
            "flag": "new checkout",
            "control": "on",
            "treatment": "on",
            "steps": [
                {"percent": 10, "hold": "1h"},
                {"percent": 5, "hold": "-1h"},
                {"percent": 2.0005, "hold": -30},
                {"percent": 120, "hold": "1h"},
                {"percent": 0, "hold": "1h"},
                {"hold": "1h"},
                {"percent": 50, "hold": "1h", "wait": 3},
                {"percent": 90},
                "later",
                {"percent": 99, "hold": "2h"},
            ],
            "guards": [
                {"name": "errors", "kind": "ratio", "metric": "errors", "source": "datadog"},
                {"name": "lat", "kind": "continuous", "metric": "latency", "direction": "up"},
                {"name": "lat", "kind": "rate", "metric": "x", "margin": 1},
                {"name": "p99", "kind": "continuous", "metric": "l", "source": "prometheus"},
                {
                    "name": "p95",
                    "kind": "continuous",
                    "metric": "l",
                    "source": "prometheus",
                    "query": "up",
                },
                {"name": "e2", "kind": "rate", "metric": "e", "query": "x{variant}"},
                {"name": "e3", "kind": "rate", "metric": "e", "margin": -0.1},
                {"kind": "rate"},
                7,
            ],
            "options": {
                "window": "Sat-Sun 10:00-10:00 Europe/Amsterdam",
                "min_exposures": -5,
                "insufficient_data": "fail",
                "verification": "-1h",
                "on_regression": "ignore",
                "require_approval": "yes",
                "speed": "fast",
            },
            "owner": "me",
        }
    )
    assert found == [
        ("owner", "unknown field 'owner'"),
        ("flag", "the flag's key 'new checkout' must be 1-200 printable characters without spaces"),
        ("environment", "is required"),
        ("treatment", "must differ from control (both are 'on')"),
        (
            "steps[1].hold",
            DURATION + "'-1h'",
        ),
        ("steps[2].percent", "2.0005 has more than three decimals"),
        ("steps[2].hold", "must not be negative, not -30"),
        ("steps[3].percent", "a percent must be a number above 0 and at most 100, not 120"),
        ("steps[4].percent", "a percent must be a number above 0 and at most 100, not 0"),
        ("steps[5].percent", "is required"),
        ("steps[6].wait", "unknown field 'wait'"),
        ("steps[7].hold", "is required"),
        ("steps[8]", "must be a mapping, not a string"),
        (
            "steps[9].hold",
            "the last step (100%) holds no time: "
            "options.verification says how long it is still watched",
        ),
        ("steps[9].percent", "the last step must be 100, not 99"),
        ("steps[1].percent", "5 is not more than 10, an earlier step: steps must increase"),
        ("guards[0].kind", "unknown guard kind 'ratio' (one of: rate, continuous)"),
        ("guards[0].source", "unknown metric source 'datadog' (one of: sdk, prometheus)"),
        ("guards[1].direction", "unknown direction 'up' (one of: higher_is_worse, lower_is_worse)"),
        (
            "guards[2].margin",
            "a margin is a fraction from 0 up to (not including) 1, like 0.05 for 5%, not 1",
        ),
        ("guards[3].query", "is required"),
        ("guards[4].query", "must hold {variant} where the variant's name goes"),
        ("guards[5].query", "only a guard whose source is prometheus has a query"),
        (
            "guards[6].margin",
            "a margin is a fraction from 0 up to (not including) 1, like 0.05 for 5%, not -0.1",
        ),
        ("guards[7].name", "is required"),
        ("guards[7].metric", "is required"),
        ("guards[8]", "must be a mapping, not a number"),
        ("options.speed", "unknown field 'speed'"),
        ("options.window", "'10:00-10:00' never opens: it ends when it begins"),
        ("options.min_exposures", "must be a whole number from 0 to 1000000000000, not -5"),
        ("options.insufficient_data", "unknown choice 'fail' (one of: wait, advance)"),
        (
            "options.verification",
            DURATION + "'-1h'",
        ),
        ("options.on_regression", "unknown choice 'ignore' (one of: rollback, hold)"),
        ("options.require_approval", "must be true or false, not a string"),
    ]


def test_the_refusal_is_an_unveil_error_and_names_the_count() -> None:
    with pytest.raises(UnveilError) as caught:
        parse_plan(minimal(steps=[]))
    assert str(caught.value) == (
        "the release plan has 1 problem\n"
        "  steps: a plan needs at least one step (the last one is 100)"
    )


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"steps": {"percent": 100}}, [("steps", "must be a list, not a mapping")]),
        ({"steps": [{}]}, [("steps[0].percent", "is required")]),
        (
            {"steps": [{"percent": True}]},
            [("steps[0].percent", "a percent must be a number above 0 and at most 100, not True")],
        ),
        (
            {"steps": [{"percent": float("nan")}]},
            [("steps[0].percent", "a percent must be a number above 0 and at most 100, not nan")],
        ),
        (
            {"steps": [{"percent": 0.0001, "hold": "1m"}, {"percent": 100}]},
            [("steps[0].percent", "0.0001 has more than three decimals")],
        ),
        (
            {"steps": [{"percent": 1, "hold": "1.5h"}, {"percent": 100}]},
            [
                (
                    "steps[0].hold",
                    DURATION + "'1.5h'",
                )
            ],
        ),
        (
            {"steps": [{"percent": 1, "hold": ""}, {"percent": 100}]},
            [
                (
                    "steps[0].hold",
                    DURATION + "''",
                )
            ],
        ),
        (
            {"steps": [{"percent": 1, "hold": True}, {"percent": 100}]},
            [
                (
                    "steps[0].hold",
                    DURATION + "True",
                )
            ],
        ),
        (
            {"steps": [{"percent": 1, "hold": "366d"}, {"percent": 100}]},
            [("steps[0].hold", "must be at most 365 days, not '366d'")],
        ),
        (
            {"steps": [{"percent": 1 + i / 10, "hold": "1m"} for i in range(101)]},
            [("steps", "at most 100 steps, not 101")],
        ),
        (
            {"guards": [{"name": f"g{i}", "kind": "rate", "metric": "e"} for i in range(51)]},
            [("guards", "at most 50 guards, not 51")],
        ),
        (
            {
                "guards": [
                    {"name": "e", "kind": "rate", "metric": "e"},
                    {"name": "e", "kind": "rate", "metric": "f"},
                ]
            },
            [("guards[1].name", "'e' is the name of guards[0] too")],
        ),
        (
            {
                "guards": [
                    {
                        "name": "e",
                        "kind": "rate",
                        "metric": "e",
                        "source": "prometheus",
                        "query": "x\n{variant}",
                    }
                ]
            },
            [("guards[0].query", "must not hold control characters")],
        ),
        (
            {
                "guards": [
                    {"name": "e", "kind": "rate", "metric": "e", "source": "prometheus", "query": 5}
                ]
            },
            [("guards[0].query", "must be a non-empty string of at most 4000 characters")],
        ),
        ({"options": {"window": 9}}, [("options.window", "must be text, not a number")]),
        ({"options": {"window": None}}, []),
        ({"options": []}, [("options", "must be a mapping, not a list")]),
        ({"options": {1: 2}}, [("options", "field names must be strings, not a number 1")]),
        (
            {"control": "", "treatment": None},
            [
                (
                    "control",
                    "a variant's name '' must be 1-200 printable characters without spaces",
                ),
                (
                    "treatment",
                    "a variant's name None must be 1-200 printable characters without spaces",
                ),
            ],
        ),
    ],
)
def test_each_problem_is_named(changes: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    if not expected:
        parse_plan(minimal(**changes))
        return
    assert problems(minimal(**changes)) == expected


def test_a_plan_must_be_a_mapping() -> None:
    assert problems(["flag"]) == [("", "a plan must be a mapping, not a list")]


def test_the_flag_must_have_both_variants() -> None:
    plan = parse_plan(minimal())
    check_against(plan, {"on", "off"})
    with pytest.raises(InvalidPlan) as caught:
        check_against(plan, ["enabled", "disabled"])
    assert caught.value.problems == (
        Problem("control", "the flag has no variant 'off' (it has: disabled, enabled)"),
        Problem("treatment", "the flag has no variant 'on' (it has: disabled, enabled)"),
    )


def test_variant_problems_come_with_all_the_others() -> None:
    assert problems(minimal(environment=""), variants=["off", "blue"]) == [
        (
            "environment",
            "the environment's key '' must be 1-200 printable characters without spaces",
        ),
        ("treatment", "the flag has no variant 'on' (it has: blue, off)"),
    ]


def test_a_source_the_server_lacks_comes_with_all_the_other_problems() -> None:
    """A Prometheus guard on a server without Prometheus is a problem of the plan like any
    other: named in the same refusal as a bad step, not only once the rest is fixed."""
    prometheus = {
        "name": "p99",
        "kind": "continuous",
        "metric": "latency",
        "source": "prometheus",
        "query": 'x{v="{variant}"}',
    }
    sdk = {"name": "errors", "kind": "rate", "metric": "errors"}
    steps = [{"percent": 10, "hold": "1m"}, {"percent": 5, "hold": "1m"}, {"percent": 100}]
    assert problems_with_sources(
        minimal(steps=steps, guards=[sdk, prometheus]), sources=[Source.SDK]
    ) == [
        ("steps[1].percent", "5 is not more than 10, an earlier step: steps must increase"),
        ("guards[1].source", "this server has no prometheus metrics source"),
    ]
    assert parse_plan(minimal(guards=[sdk, prometheus]), sources=list(Source)).guards[1].query


def problems_with_sources(data: object, sources: list[Source]) -> list[tuple[str, str]]:
    with pytest.raises(InvalidPlan) as caught:
        parse_plan(data, sources=sources)
    return [(p.path, p.message) for p in caught.value.problems]


def test_plans_are_written_with_every_field() -> None:
    assert plan_to_data(parse_plan(minimal())) == {
        "flag": "new-checkout",
        "environment": "production",
        "control": "off",
        "treatment": "on",
        "steps": [{"percent": 1, "hold": "30m"}, {"percent": 100}],
        "guards": [],
        "options": {
            "min_exposures": 0,
            "insufficient_data": "wait",
            "verification": "1h",
            "on_regression": "rollback",
            "require_approval": False,
        },
    }


@given(PLANS)
def test_a_plan_reads_back_equal_through_json(plan: Plan) -> None:
    assert parse_plan(json.loads(json.dumps(plan_to_data(plan)))) == plan


def _doc_yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_the_documented_example_is_a_valid_plan() -> None:
    blocks = _doc_yaml_blocks()
    assert blocks, "docs/release-plans.md shows a plan in YAML"
    data = YAML(typ="safe", pure=True).load(blocks[0])
    plan = parse_plan(data, variants=["on", "off"])
    # YAML 1.2: `off` and `on` are the variants' names, not booleans
    assert (plan.control, plan.treatment) == ("off", "on")
    assert plan.guards
    assert plan.options.window is not None


def test_the_doc_names_every_field() -> None:
    text = DOC.read_text(encoding="utf-8")
    data = plan_to_data(parse_plan(YAML(typ="safe", pure=True).load(_doc_yaml_blocks()[0])))
    fields = set(data) | set(data["options"]) | {"percent", "hold"}
    fields |= {"name", "kind", "metric", "source", "query", "direction", "margin"}
    for name in fields:
        assert f"`{name}`" in text, name
