"""Guarded releases carried out: the service over a real database (SQLite and PostgreSQL).

The metrics the judge reads are fed by the test, window by window, through
the same reader interface the server's own windows and Prometheus serve,
and the release's clock is the test's: holds pass in a line of code. The
database, the flag writes, the audit log and the jobs are the real ones.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select

from tests.server_process import access_service
from unveil.release.errors import CommandRefused, InvalidPlan
from unveil.release.histogram import Histogram
from unveil.release.judge import ArmBatch, Batch
from unveil.release.judging import WINDOW, floor_window
from unveil.release.machine import Abort, Advance, Pause, Resume
from unveil.release.plan import Guard, Source
from unveil.service.errors import Conflict, Invalid, NotFound
from unveil.service.flags import Change, FlagService
from unveil.service.jobs import JobService
from unveil.service.prometheus import SourceError
from unveil.service.releases import RELEASE_TICK, ReleaseService
from unveil.store import tables as t
from unveil.store.unit import Store

P, E = "shop", "production"
FLAG = {"variants": {"on": True, "off": False}, "default": "off"}
T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


class Traffic:
    """Windows of exposures, errors and latencies that the test makes up as time passes."""

    def __init__(self, clock: Clock, error_rate: float = 0.01, ratio: float = 1.0) -> None:
        self.clock = clock
        self.error_rate = error_rate
        self.ratio = ratio  # the treatment's error rate is this many times control's
        self.per_window = 400
        self.share = 0.0  # the treatment's share of traffic, as the flag serves it
        self.windows: dict[datetime, tuple[ArmBatch, ArmBatch]] = {}
        self.random = random.Random(7)
        self._made_until = floor_window(clock())

    def run_until(self, at: datetime) -> None:
        while self._made_until + WINDOW <= at:
            self.windows[self._made_until] = self._window()
            self._made_until += WINDOW

    def _window(self) -> tuple[ArmBatch, ArmBatch]:
        n_t = round(self.per_window * self.share)
        n_c = self.per_window - n_t

        def arm(n: int, rate: float, slow: float) -> ArmBatch:
            errors = sum(self.random.random() < rate for _ in range(n))
            latency = Histogram.of(self.random.lognormvariate(3.0, 0.4) * slow for _ in range(n))
            return ArmBatch(n, {"errors": errors}, {"latency": latency})

        return (
            arm(n_t, self.error_rate * self.ratio, 1.0),
            arm(n_c, self.error_rate, 1.0),
        )

    # the MetricsReader interface

    sources = frozenset({Source.SDK})

    def closed_until(self, now: datetime) -> datetime:
        return floor_window(now)

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
        t_arm, c_arm = ArmBatch(0), ArmBatch(0)
        at = start
        while at < end:
            if at in self.windows:
                wt, wc = self.windows[at]
                t_arm, c_arm = _merge(t_arm, wt), _merge(c_arm, wc)
            at += WINDOW
        return Batch(0.0, t_arm, c_arm)


def _merge(a: ArmBatch, b: ArmBatch) -> ArmBatch:
    counts = {k: a.counts.get(k, 0) + b.counts.get(k, 0) for k in {*a.counts, *b.counts}}
    values = {
        k: a.values[k].merge(b.values[k])
        if k in a.values and k in b.values
        else a.values.get(k) or b.values[k]
        for k in {*a.values, *b.values}
    }
    return ArmBatch(a.exposures + b.exposures, counts, values)


def _plan(**options: Any) -> dict[str, Any]:
    return {
        "flag": "checkout",
        "control": "off",
        "treatment": "on",
        "steps": [
            {"percent": 1, "hold": "2m"},
            {"percent": 5, "hold": "2m"},
            {"percent": 50, "hold": "2m"},
            {"percent": 100},
        ],
        "guards": [
            {"name": "errors", "kind": "rate", "metric": "errors"},
            {"name": "latency", "kind": "continuous", "metric": "latency"},
        ],
        "options": {"verification": "2m", **options},
    }


class World:
    """A database with one flag, and a release service whose clock and traffic the test runs."""

    def __init__(self, engine: Engine, ratio: float = 1.0) -> None:
        self.engine = engine
        self.store = Store(engine)
        access_service(engine).ensure_environment(P, E)
        self.flags = FlagService(self.store)
        self.flags.put_item("flags", P, E, "checkout", FLAG, Change("alice"), None)
        self.clock = Clock(T0)
        self.traffic = Traffic(self.clock, ratio=ratio)
        self.jobs = JobService(self.store, "node-a")
        self.releases = self.service()

    def service(self) -> ReleaseService:
        svc = ReleaseService(self.store, self.flags, self.jobs, self.traffic, clock=self.clock)
        self.jobs.register(RELEASE_TICK, svc.handler())
        return svc

    def flag(self) -> dict[str, Any]:
        return self.flags.get_item("flags", P, E, "checkout").data

    def share(self) -> float:
        """The treatment's share the flag serves now, read from the flag itself."""
        served = self.flag()["default"]
        if isinstance(served, str):
            return 1.0 if served == "on" else 0.0
        return float(served["rollout"].get("on", 0)) / 100

    def run(self, seconds: int, release_id: str, every: int = 10) -> None:
        """Time passes; users are served as the flag says; the worker looks every ``every`` s."""
        for _ in range(seconds // every):
            self.traffic.share = self.share()
            self.clock.at += timedelta(seconds=every)
            self.traffic.run_until(self.clock.at)
            self.releases.tick(release_id)

    def audit(self, actor: str | None = None) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            query = select(t.audit).order_by(t.audit.c.id)
            if actor is not None:
                query = query.where(t.audit.c.actor == actor)
            return [dict(r._mapping) for r in conn.execute(query)]


def test_a_healthy_release_ramps_through_every_step_and_completes(engine: Engine) -> None:
    world = World(engine)
    release = world.releases.start(P, E, _plan(), "rita")
    assert release.id == "r1"
    assert release.state.phase.value == "running"
    assert world.share() == pytest.approx(0.01)
    world.run(60, "r1")
    assert world.share() == pytest.approx(0.01)  # the hold is 2 minutes
    seen = [world.share()]
    for _ in range(12):
        world.run(60, "r1")
        seen.append(world.share())
    final = world.releases.get(P, E, "r1")
    assert final.state.phase.value == "completed"
    assert final.state.verified
    assert not final.active
    assert world.flag()["default"] == "on"
    assert seen == sorted(seen)  # the share only ever grew
    assert {0.05, 0.5, 1.0} <= set(seen)
    flag_changes = [a for a in world.audit("release:r1") if a["action"] == "flag.update"]
    assert len(flag_changes) == 4  # 1%, 5%, 50%, 100%: every step once, none twice
    assert all(a["reason"] for a in flag_changes)
    decisions = [
        a["action"] for a in world.audit("release:r1") if a["action"].startswith("release.")
    ]
    assert decisions == [
        "release.started",
        "release.advanced",
        "release.advanced",
        "release.completed",
        "release.verified",
    ]
    assert world.releases.tick("r1") is False  # over: the worker stops looking


def test_whoever_the_release_gave_the_treatment_keeps_it_at_every_later_step(
    engine: Engine,
) -> None:
    """Sticky: the flag as the release writes it at each step, evaluated by the core the
    SDKs run, serves the treatment to a superset of those it served it to before."""
    from unveil.core import Ruleset

    world = World(engine)
    world.releases.start(P, E, _plan(), "rita")
    keys = [f"user-{i}" for i in range(20_000)]

    def treated() -> set[str]:
        rules = Ruleset.from_data({"version": 1, "flags": {"checkout": world.flag()}})
        return {k for k in keys if rules.evaluate("checkout", {"key": k}).variant == "on"}

    seen: list[tuple[float, set[str]]] = [(world.share(), treated())]
    while world.share() < 1.0:
        world.run(60, "r1")
        if world.share() != seen[-1][0]:
            seen.append((world.share(), treated()))
    assert [share for share, _ in seen] == pytest.approx([0.01, 0.05, 0.5, 1.0])
    for (_, before), (share, after) in itertools.pairwise(seen):
        assert before <= after
        assert len(after) == pytest.approx(share * len(keys), rel=0.2)


def test_treatment_with_three_times_the_errors_is_rolled_back_in_the_first_step(
    engine: Engine,
) -> None:
    world = World(engine, ratio=3.0)
    world.traffic.per_window = 4000
    world.releases.start(P, E, _plan(), "rita")
    world.run(110, "r1")
    release = world.releases.get(P, E, "r1")
    assert release.state.phase.value == "rolled_back"
    assert release.state.step == 0  # still the first step, 1%
    assert world.flag()["default"] == "off"  # control for everyone, at once
    rolled = [a for a in world.audit("release:r1") if a["action"] == "release.rolled_back"]
    assert len(rolled) == 1
    explanation = json.loads(rolled[0]["after"])
    assert explanation["verdict"] == "fail"
    assert "errors" in json.dumps(explanation["judge"])
    assert "rolled back" in rolled[0]["reason"]
    # the flag change itself says why, in the judge's words
    (change,) = [a for a in world.audit("release:r1") if a["action"] == "flag.update"][-1:]
    assert change["reason"].startswith("a regression at 1%: rolled back")
    assert explanation["judge"]["summary"].removeprefix("Roll back: ") in change["reason"]
    assert "errors rate is higher than control's" in change["reason"]
    with pytest.raises(CommandRefused, match="over"):
        world.releases.command(P, E, "r1", Resume("rita"))


def test_a_hand_edit_pauses_the_release_and_a_resume_takes_the_flag_back(engine: Engine) -> None:
    world = World(engine)
    world.releases.start(P, E, _plan(), "rita")
    world.run(30, "r1")
    current = world.flags.get_item("flags", P, E, "checkout")
    edited = {**current.data, "description": "hot fix"}
    world.flags.put_item(
        "flags", P, E, "checkout", edited, Change("bob", "hot fix"), current.version
    )
    world.run(10, "r1")
    release = world.releases.get(P, E, "r1")
    assert release.state.phase.value == "paused"
    assert release.state.pause_reason is not None
    assert release.state.pause_reason.value == "hand_edit"
    assert "bob" in release.state.history[-1].text
    # the worker leaves the flag alone while paused, however long
    world.run(600, "r1")
    assert world.flag()["description"] == "hot fix"
    assert world.releases.get(P, E, "r1").state.phase.value == "paused"
    resumed = world.releases.command(P, E, "r1", Resume("rita"))
    assert resumed.state.phase.value == "running"
    assert world.flag()["description"] == "hot fix"  # the release changes only the default serve
    assert world.share() == pytest.approx(0.01)


def test_commands_the_phase_forbids_are_refused_and_change_nothing(engine: Engine) -> None:
    world = World(engine)
    world.releases.start(P, E, _plan(), "rita")
    paused = world.releases.command(P, E, "r1", Pause("pat", "lunch"))
    with pytest.raises(CommandRefused, match="resume it first"):
        world.releases.command(P, E, "r1", Advance("rita"))
    assert world.releases.get(P, E, "r1").version == paused.version
    aborted = world.releases.command(P, E, "r1", Abort("pat", "not today"))
    assert aborted.state.phase.value == "aborted"
    assert world.flag()["default"] == "off"
    for command in (Resume("rita"), Advance("rita"), Pause("pat")):
        with pytest.raises(CommandRefused):
            world.releases.command(P, E, "r1", command)
    assert world.releases.get(P, E, "r1").version == aborted.version


def test_a_bad_plan_is_refused_with_every_problem_and_nothing_is_started(engine: Engine) -> None:
    world = World(engine)
    bad = _plan(window="09:00-09:00 UTC")
    bad["steps"] = [{"percent": 10, "hold": "1m"}, {"percent": 5, "hold": "1m"}, {"percent": 100}]
    bad["treatment"] = "maybe"
    bad["guards"][0]["source"] = "datadog"
    with pytest.raises(InvalidPlan) as refused:
        world.releases.start(P, E, bad, "rita")
    paths = {p.path for p in refused.value.problems}
    assert {"steps[1].percent", "guards[0].source", "options.window", "treatment"} <= paths
    assert world.releases.list(P, E) == []
    assert [a["action"] for a in world.audit()][-1] == "flag.create"  # nothing after it
    assert world.flag()["default"] == "off"


def test_a_source_the_server_lacks_is_named_with_the_plans_other_problems(
    engine: Engine,
) -> None:
    world = World(engine)  # its metrics have the SDK's source only
    bad = _plan()
    bad["steps"] = [{"percent": 10, "hold": "1m"}, {"percent": 5, "hold": "1m"}, {"percent": 100}]
    bad["guards"].append(
        {
            "name": "p99",
            "kind": "continuous",
            "metric": "latency",
            "source": "prometheus",
            "query": 'x{v="{variant}"}',
        }
    )
    with pytest.raises(InvalidPlan) as refused:
        world.releases.start(P, E, bad, "rita")
    paths = [p.path for p in refused.value.problems]
    assert paths == ["steps[1].percent", "guards[2].source"]
    assert world.releases.list(P, E) == []


def test_one_flag_has_one_release_at_a_time(engine: Engine) -> None:
    world = World(engine)
    world.releases.start(P, E, _plan(), "rita")
    with pytest.raises(Conflict, match="r1"):
        world.releases.start(P, E, _plan(), "rita")
    with pytest.raises(Invalid, match="environment"):
        world.releases.start(P, E, {**_plan(), "environment": "staging"}, "rita")
    with pytest.raises(Invalid, match="no flag"):
        world.releases.start(P, E, {**_plan(), "flag": "nope"}, "rita")
    with pytest.raises(NotFound):
        world.releases.get(P, E, "r99")


def test_a_restarted_release_keeps_the_old_history_and_starts_again(engine: Engine) -> None:
    world = World(engine)
    world.releases.start(P, E, _plan(), "rita")
    world.releases.command(P, E, "r1", Abort("pat", "wrong day"))
    again = world.releases.restart(P, E, "r1", "rita")
    assert again.id == "r2"
    assert again.state.previous == "r1"
    assert again.state.attempt == 2
    assert any(h.release == "r1" for h in again.state.history)
    assert again.state.phase.value == "running"
    assert world.share() == pytest.approx(0.01)


def test_a_new_leader_decides_exactly_as_the_old_one_would(engine: Engine) -> None:
    """The judge rebuilt from the stored windows gives the same decisions, at the same times."""

    def history(restart_at: int | None) -> list[tuple[str, str, int]]:
        world = World(engine, ratio=2.0)
        world.traffic.per_window = 3000
        release = world.releases.start(P, E, _plan(), "rita")
        for minute in range(12):
            if minute == restart_at:
                world.releases = world.service()  # a new process: nothing in memory
            world.run(60, release.id)
        state = world.releases.get(P, E, release.id).state
        return [(h.at.isoformat(), h.decision.value, h.share) for h in state.history]

    steady = history(None)
    with engine.begin() as conn:  # the next world starts from an empty database
        for table in (t.releases, t.jobs, t.outbox, t.audit, t.flags):
            conn.execute(table.delete())
    restarted = history(3)
    assert len(steady) > 3  # the release moved on after the restart too
    assert restarted == steady


def test_the_worker_ticks_releases_as_jobs(engine: Engine) -> None:
    world = World(engine)
    world.releases.start(
        P,
        E,
        {
            **_plan(),
            "steps": [{"percent": 10, "hold": "0s"}, {"percent": 100}],
            "options": {"verification": "0s"},
        },
        "rita",
    )
    with world.store.unit_of_work() as work:
        epoch = work.leadership.take("node-a", datetime.now(UTC))
        jobs = work.jobs.by_kind(RELEASE_TICK)
    assert [j.key for j in jobs] == ["release:r1"]
    with engine.begin() as conn:  # due now
        conn.execute(t.jobs.update().values(run_at=datetime.now(UTC) - timedelta(seconds=1)))
    world.traffic.share = 0.1
    world.clock.at += timedelta(minutes=1)
    world.traffic.run_until(world.clock.at)
    assert world.jobs.run_due(epoch) == 1
    release = world.releases.get(P, E, "r1")
    assert release.state.phase.value == "completed"
    assert not release.active
    assert world.flag()["default"] == "on"
    with world.store.reading() as r:
        assert [j.state for j in r.jobs.by_kind(RELEASE_TICK)] == ["done"]


class Away(Traffic):
    """Metrics that cannot be read (a Prometheus that is down, say)."""

    def batch(self, *_args: Any, **_kwargs: Any) -> Batch:
        raise SourceError("prometheus at 127.0.0.1:1 cannot be reached")


def test_metrics_that_cannot_be_read_make_a_release_wait_not_die(engine: Engine) -> None:
    world = World(engine)
    world.traffic = Away(world.clock)
    world.releases = world.service()
    world.releases.start(P, E, _plan(), "rita")
    with world.store.unit_of_work() as work:
        epoch = work.leadership.take("node-a", datetime.now(UTC))
    for _ in range(3):
        world.clock.at += timedelta(minutes=5)  # every hold is long over
        with engine.begin() as conn:
            conn.execute(t.jobs.update().values(run_at=datetime.now(UTC) - timedelta(seconds=1)))
        assert world.jobs.run_due(epoch) == 1  # the tick ran to its finish, no failure
    release = world.releases.get(P, E, "r1")
    assert release.active
    assert release.state.step == 0  # no data: it waits at 1%, it neither fails nor advances
    assert world.share() == pytest.approx(0.01)
    with world.store.reading() as r:
        (job,) = r.jobs.by_kind(RELEASE_TICK)
    assert job.state == "pending"


def test_an_active_release_whose_tick_job_failed_gets_it_back(engine: Engine) -> None:
    world = World(engine)
    world.releases.start(P, E, _plan(), "rita")
    with engine.begin() as conn:  # the job gave up after its retries
        conn.execute(t.jobs.update().values(state="failed", key=None))
    with world.store.unit_of_work() as work:
        world.releases.keep_ticking(work)
        world.releases.keep_ticking(work)  # twice: still one job
    with world.store.reading() as r:
        states = sorted(j.state for j in r.jobs.by_kind(RELEASE_TICK))
    assert states == ["failed", "pending"]
