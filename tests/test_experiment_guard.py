"""A release guarded by a dark-launch experiment's mismatch rate (issue 14).

The plan's part is pure (release/plan.py); the service's over a real database
of both kinds: the experiment's counts are written to the real event store,
window by window as the test's clock passes, and read back by the same
``ExperimentReports`` the server uses.
"""

from __future__ import annotations

import json
import random
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.test_releases import E, P, World
from unveil.core import InvalidDocument
from unveil.release.errors import InvalidPlan
from unveil.release.judging import WINDOW
from unveil.release.plan import ExperimentGuard, parse_plan, plan_to_data
from unveil.service.events import CANDIDATE, outcome_metric
from unveil.service.experiments import ExperimentReports
from unveil.service.releases import RELEASE_TICK, ReleaseService
from unveil.store.events import EventCounts


def _plan(*guards: dict[str, Any]) -> dict[str, Any]:
    return {
        "flag": "checkout",
        "environment": E,
        "control": "off",
        "treatment": "on",
        "steps": [{"percent": 5, "hold": "1m"}, {"percent": 50, "hold": "1m"}, {"percent": 100}],
        "guards": list(guards),
        "options": {"verification": "1m"},
    }


GUARD = {"experiment": "search-v2", "max_mismatch_rate": 0.01, "min_runs": 500}


def test_an_experiment_guard_is_read_and_written_back() -> None:
    plan = parse_plan(_plan({"name": "errors", "kind": "rate", "metric": "errors"}, GUARD))
    assert plan.experiments == (ExperimentGuard("search-v2", "search-v2", 0.01, 500),)
    assert [g.name for g in plan.guards] == ["errors"]
    assert parse_plan(plan_to_data(plan)) == plan
    named = parse_plan(
        _plan({"name": "search", "experiment": "search-v2", "max_mismatch_rate": 0.02})
    )
    assert named.experiments == (ExperimentGuard("search", "search-v2", 0.02, 100),)


@pytest.mark.parametrize(
    ("guard", "paths"),
    [
        ({"experiment": "s", "max_mismatch_rate": 0}, ["guards[0].max_mismatch_rate"]),
        ({"experiment": "s", "max_mismatch_rate": 1.5}, ["guards[0].max_mismatch_rate"]),
        ({"experiment": "s", "max_mismatch_rate": True}, ["guards[0].max_mismatch_rate"]),
        ({"experiment": "s"}, ["guards[0].max_mismatch_rate"]),
        (
            {"experiment": "s", "max_mismatch_rate": 0.01, "min_runs": 0},
            ["guards[0].min_runs"],
        ),
        ({"experiment": "has space", "max_mismatch_rate": 0.01}, ["guards[0].experiment"]),
        (
            {"experiment": "s", "max_mismatch_rate": 0.01, "kind": "rate"},
            ["guards[0].kind"],
        ),
    ],
)
def test_a_bad_experiment_guard_is_refused_naming_the_field(
    guard: dict[str, Any], paths: list[str]
) -> None:
    with pytest.raises(InvalidDocument) as refused:
        parse_plan(_plan(guard))
    assert [p.path for p in refused.value.problems] == paths


def test_guard_names_are_unique_across_both_kinds() -> None:
    with pytest.raises(InvalidPlan) as refused:
        parse_plan(
            _plan(
                {"name": "search-v2", "kind": "rate", "metric": "errors"},
                {"experiment": "search-v2", "max_mismatch_rate": 0.01},
            )
        )
    assert [p.path for p in refused.value.problems] == ["guards[1].name"]


class ExperimentWorld(World):
    """The release world, with an experiment running beside the release."""

    def __init__(self, engine: Engine, mismatch_rate: float) -> None:
        self.counts = EventCounts(engine)
        self.mismatch_rate = mismatch_rate
        self.rng = random.Random(14)
        super().__init__(engine)

    def service(self) -> ReleaseService:
        svc = ReleaseService(
            self.store,
            self.flags,
            self.jobs,
            self.traffic,
            clock=self.clock,
            experiments=ExperimentReports(self.counts),
        )
        self.jobs.register(RELEASE_TICK, svc.handler())
        return svc

    def run(self, seconds: int, release_id: str, every: int = 10) -> None:
        """As World.run, and each 10-second window 200 runs of the experiment are stored."""
        for _ in range(seconds // every):
            start = int(self.clock.at.timestamp())
            mismatches = sum(self.rng.random() < self.mismatch_rate for _ in range(200))
            env = 1
            self.counts.add(
                [
                    (
                        (env, start, "search-v2", CANDIDATE, outcome_metric("match")),
                        200 - mismatches,
                        0.0,
                    ),
                    (
                        (env, start, "search-v2", CANDIDATE, outcome_metric("mismatch")),
                        mismatches,
                        0.0,
                    ),
                ]
            )
            self.traffic.share = self.share()
            self.clock.at += WINDOW
            self.traffic.run_until(self.clock.at)
            self.releases.tick(release_id)


def test_a_release_rolls_back_when_its_experiment_mismatches_too_often(engine: Engine) -> None:
    world = ExperimentWorld(engine, mismatch_rate=0.04)
    try:
        world.releases.start(P, E, _plan(GUARD), "rita")
        world.run(20, "r1")  # 400 runs of 4%: clear, but fewer than the plan's 500
        assert world.releases.get(P, E, "r1").state.phase.value == "running"
        world.run(120, "r1")
        release = world.releases.get(P, E, "r1")
        assert release.state.phase.value == "rolled_back"
        assert world.flag()["default"] == "off"
        [rolled] = [a for a in world.audit("release:r1") if a["action"] == "release.rolled_back"]
        checks = json.loads(rolled["after"])["judge"]["experiments"]
        assert checks[0]["experiment"] == "search-v2"
        assert checks[0]["exceeded"] is True
        assert checks[0]["runs"] >= 500
        assert checks[0]["lower_bound"] > 0.01
        assert "search-v2" in json.loads(rolled["after"])["judge"]["summary"]
    finally:
        world.counts.close()


def test_an_experiment_within_its_maximum_lets_the_release_complete(engine: Engine) -> None:
    world = ExperimentWorld(engine, mismatch_rate=0.002)
    try:
        world.releases.start(P, E, _plan(GUARD), "rita")
        world.run(int(timedelta(minutes=4).total_seconds()), "r1")
        release = world.releases.get(P, E, "r1")
        assert release.state.phase.value == "completed"
        assert release.state.verified
        assert world.flag()["default"] == "on"
    finally:
        world.counts.close()


def test_a_plan_with_an_experiment_guard_needs_a_server_that_keeps_experiments(
    engine: Engine,
) -> None:
    world = World(engine)  # a service built without experiments
    with pytest.raises(InvalidPlan) as refused:
        world.releases.start(P, E, _plan(GUARD), "rita")
    assert [p.path for p in refused.value.problems] == ["guards"]
