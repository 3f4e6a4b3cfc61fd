"""A release guarded by a dark-launch experiment's mismatch rate (issue 14).

The plan's part is pure (release/plan.py); the service's over a real database
of both kinds: the experiment's counts are written to the real event store,
window by window as the test's clock passes, and read back by the same
``ExperimentReports`` the server uses.
"""

from __future__ import annotations

import json
import random
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.server_process import database, sdk_key, start_server, stop, wait_for
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


ENV = "/api/v1/projects/shop/environments/production"


def test_a_release_on_a_real_server_rolls_back_on_its_experiment(tmp_path: Path) -> None:
    """The wire events of an experiment mismatching in 5% of its runs, sent as an SDK
    sends them, stop a release whose plan allows 1%; a bad guard is refused by name."""
    with database("sqlite", tmp_path) as url:
        server = start_server(
            url, None, True, "--release-tick", "1", "--worker-interval", "0.2", "--metrics-lag", "4"
        )
        try:
            flag = {"variants": {"on": True, "off": False}, "default": "off"}
            plan = {
                "flag": "checkout",
                "control": "off",
                "treatment": "on",
                "steps": [{"percent": 10, "hold": "10m"}, {"percent": 100}],
                "guards": [{"experiment": "search-v2", "max_mismatch_rate": 0.01, "min_runs": 300}],
            }
            with server.client() as api:
                assert api.put(f"{ENV}/flags/checkout", json=flag).status_code == 201
                bad = {**plan, "guards": [{"experiment": "search-v2", "max_mismatch_rate": 2}]}
                refused = api.post(f"{ENV}/releases", json={"plan": bad})
                assert refused.status_code == 422, refused.text
                assert [p["path"] for p in refused.json()["problems"]] == [
                    "guards[0].max_mismatch_rate"
                ]
                started = api.post(f"{ENV}/releases", json={"plan": plan})
                assert started.status_code == 201, started.text
            release_id = started.json()["id"]
            key = sdk_key(url)
            rng = random.Random(5)

            def rolled_back() -> bool:
                mismatches = sum(rng.random() < 0.05 for _ in range(100))
                event = {
                    "kind": "experiment",
                    "experiment": "search-v2",
                    "at": time.time(),
                    "outcomes": {"match": 100 - mismatches, "mismatch": mismatches},
                }
                with server.client(key) as sdk:
                    assert sdk.post("/sdk/v1/events", json={"events": [event]}).status_code == 202
                with server.client() as api:
                    return bool(
                        api.get(f"{ENV}/releases/{release_id}").json()["phase"] == "rolled_back"
                    )

            assert wait_for(rolled_back, 120)
            with server.client() as api:
                assert api.get(f"{ENV}/flags/checkout").json()["data"]["default"] == "off"
                audit = api.get(f"{ENV}/audit", params={"actor": f"release:{release_id}"}).json()
            [entry] = [e for e in audit["entries"] if e["action"] == "release.rolled_back"]
            [check] = json.loads(entry["after"])["judge"]["experiments"]
            assert check["exceeded"] is True
            assert check["runs"] >= 300
            assert check["lower_bound"] > 0.01
        finally:
            stop(server)
