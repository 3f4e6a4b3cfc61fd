"""Guarded releases: plans started, commanded and ticked, each move one unit of work.

The decisions are the pure state machine's (``unveil.release.machine``) and
the judge's (``unveil.release.judge``); this module only carries them out.
Every move of a release, whether a person's command or the worker's tick,
is one transaction that:

1. holds the environment's row (so flag writes and release moves to one
   environment go one at a time) and reads the release and its flag;
2. notices a hand edit: the flag is at another version than the one the
   release last wrote or accepted, so the release pauses instead of
   fighting the person who edited it;
3. asks the machine for the next state and the actions, and carries them
   out: a new share is an ordinary flag change through ``FlagService``
   (validated, versioned, audited with actor ``release:<id>`` and the
   decision as its reason, announced to SDKs); each decision is an audit
   entry of its own with the judge's explanation (and so an outbox row);
4. stores the new state by compare-and-set on the release's version.

The worker's ticks are jobs (kind ``release.tick``, one per release, keyed
by it): their finish is fenced with the leadership epoch in the same
transaction, so no decision is taken twice even by two leaders at once, and
a restarted server or a new leader continues from the stored state (holds
are measured from the stored start of the step).

The judge's state is kept in memory between ticks, keyed by the end of the
last window it saw; the stored ``judged_until`` says which that is. When
they differ (a restart, a new leader, a tick whose transaction did not
commit) the judge is rebuilt by feeding it the same windows again, which
gives the same state: its decisions do not depend on when it is asked.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx

from unveil.core import UnveilError
from unveil.core.errors import Problem
from unveil.release import judge
from unveil.release.errors import InvalidPlan
from unveil.release.experiment import exceeds
from unveil.release.judge import Batch, JudgeState
from unveil.release.judging import WINDOW, floor_window, judge_config, windows
from unveil.release.machine import (
    Abort,
    Action,
    Advance,
    Approve,
    Command,
    Event,
    FlagEdited,
    RecordDecision,
    Resume,
    SetRollout,
    Start,
    Tick,
    new_release,
    restart,
    step,
)
from unveil.release.plan import (
    FULL_SHARE,
    Guard,
    Plan,
    Source,
    parse_plan,
    percent,
    plan_to_data,
)
from unveil.release.state import Decision, Phase, ReleaseState, state_from_data, state_to_data
from unveil.release.verdict import Observation, Verdict, VerdictKind
from unveil.service.errors import Conflict, Forbidden, Invalid, NotFound
from unveil.service.flags import Change, FlagService
from unveil.service.jobs import Again, Handler, JobService
from unveil.service.scope import require_environment, when_problem
from unveil.store.jobs import Job
from unveil.store.releases import ReleaseRow
from unveil.store.unit import Store, UnitOfWork

__all__ = [
    "RELEASE_TICK",
    "ExperimentRuns",
    "MetricsReader",
    "Release",
    "ReleaseService",
    "release_actor",
]

log = logging.getLogger("unveil.service.releases")

RELEASE_TICK = "release.tick"
#: the decisions (with their explanations) that showing a release gives, the latest
SHOWN_DECISIONS = 100
#: windows fed to the judge in one tick at most (an hour): a long outage is caught up in steps
_MAX_WINDOWS_PER_TICK = 360
_Clock = Callable[[], datetime]
#: a release's decisions as showing it gives them: {at, decision, text, explanation}
Decisions = list[dict[str, Any]]


def release_actor(release_id: str) -> str:
    """Who the audit log says made a release's changes."""
    return f"release:{release_id}"


class MetricsReader(Protocol):
    """Where the judge's aggregates come from (the server's windows, Prometheus)."""

    @property
    def sources(self) -> frozenset[Source]:
        """The metric sources guards may name here."""
        ...

    def closed_until(self, now: datetime) -> datetime:
        """The end of the last window no SDK can still report into."""
        ...

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
        """Both arms' aggregates over the windows in [start, end); ``end_s`` is unset (0)."""
        ...


class ExperimentRuns(Protocol):
    """Where an experiment guard's counts come from (service/experiments.py)."""

    def runs(self, environment_id: int, experiment: str, start: int, end: int) -> tuple[int, int]:
        """Matches and mismatches in the windows starting in [start, end) (epoch seconds)."""
        ...


@dataclass(frozen=True, slots=True)
class Release:
    """A release as the API shows it."""

    id: str
    project: str
    env: str
    flag: str
    state: ReleaseState
    version: int
    active: bool
    judged_until: datetime | None
    updated_at: datetime

    def as_data(self, history: bool = True) -> dict[str, Any]:
        data = state_to_data(self.state)
        if not history:
            data.pop("history", None)
        state = self.state
        hold_ends = state.hold_ends_at
        verification_ends = state.verification_ends_at
        return {
            "id": self.id,
            "project": self.project,
            "environment": self.env,
            "flag": self.flag,
            "phase": state.phase.value,
            "active": self.active,
            "step": state.step,
            "steps": len(state.plan.steps),
            "percent": percent(state.share),
            "hold_ends_at": None if hold_ends is None else hold_ends.isoformat(),
            "verification_ends_at": (
                None if verification_ends is None else verification_ends.isoformat()
            ),
            "judged_until": None if self.judged_until is None else _utc(self.judged_until),
            "version": self.version,
            "updated_at": _utc(self.updated_at),
            "state": data,
        }


def _utc(value: datetime) -> str:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _drives_flag(state: ReleaseState) -> bool:
    """Whether the release sets the flag now (a hand edit then pauses it)."""
    return state.phase is Phase.RUNNING or (state.phase is Phase.COMPLETED and not state.verified)


def _judge_start(state: ReleaseState) -> datetime | None:
    """When this release (not one it was restarted from) first set a share."""
    for entry in state.history:
        if entry.release == state.id and entry.decision is Decision.STARTED:
            return floor_window(entry.at)
    return None


def _check_start_at(start_at: datetime | None, now: datetime) -> None:
    problem = (
        None if start_at is None else when_problem(start_at, now, "start_at", start_at.isoformat())
    )
    if problem is not None:
        raise Invalid((problem,))


def _unverified_deploy(work: UnitOfWork, environment_id: int, env: str, plan: Plan) -> str | None:
    """Why the plan's required deploy verification is missing, or None (or none required).

    A release that requires it starts only when the latest deploy of that
    service in this environment passed ``unveil deploy verify``.
    """
    name = plan.options.requires_verified_deploy
    if name is None:
        return None
    keys = work.environments.keys_of(environment_id)
    project_id = None if keys is None else work.projects.id_of(keys[0])
    service = None if project_id is None else work.deploys.service(project_id, name)
    if service is None:
        return f"no service '{name}' in this project"
    latest = work.deploys.latest(environment_id, service.id)
    if latest is None:
        return f"service '{name}' has no deploy in '{env}'"
    if latest.verified == "passed":
        return None
    state = "failed its verification" if latest.verified == "failed" else "was not verified"
    return (
        f"the latest deploy of '{name}' in '{env}' ({latest.id}, version {latest.version}) "
        f"{state}: verify it first (unveil deploy verify)"
    )


def _refuse_unverified(work: UnitOfWork, environment_id: int, env: str, plan: Plan) -> None:
    """Refuse (422) to start now a release whose required deploy has not passed verification."""
    unverified = _unverified_deploy(work, environment_id, env, plan)
    if unverified:
        raise Invalid((Problem("options.requires_verified_deploy", unverified),))


def _unfit_flag(data: Mapping[str, Any], plan: Plan) -> str | None:
    """Why the flag cannot be released as the plan says, or None.

    A release moves users between control and treatment only, by the flag's
    default serve, so that default may serve nothing else: another variant's
    users would be moved too, and a treatment that already has more than the
    first step would lose users. A flag that is off serves nobody: its
    release would judge nothing.
    """
    if data.get("enabled", True) is False:
        return f"flag '{plan.flag}' is off (its kill switch): turn it on before releasing it"
    served = data.get("default")
    if isinstance(served, str):
        shares = {served: 100.0}
    elif isinstance(served, Mapping) and isinstance(served.get("rollout"), Mapping):
        shares = {k: float(v) for k, v in served["rollout"].items() if float(v) > 0}
    else:
        return (
            f"flag '{plan.flag}' serves its default by weights: give it to "
            f"'{plan.control}' (or a percentage rollout of control and treatment) first"
        )
    others = sorted(set(shares) - {plan.control, plan.treatment})
    if others:
        return (
            f"flag '{plan.flag}' also serves {', '.join(repr(o) for o in others)} by default: "
            f"a release moves users between '{plan.control}' and '{plan.treatment}' only; "
            f"give the default to '{plan.control}' first"
        )
    first = percent(plan.steps[0].share)
    if shares.get(plan.treatment, 0.0) > first:
        return (
            f"flag '{plan.flag}' already serves '{plan.treatment}' to "
            f"{shares[plan.treatment]:g}%, more than the first step's {first}%: "
            "users would lose it; start the plan at or above that share"
        )
    return None


def _served(data: Mapping[str, Any], action: SetRollout) -> dict[str, Any]:
    """The flag with its default serve at the release's share; rules and targets untouched.

    Variants own consecutive ranges of buckets in the flag's own order, so a
    growing share keeps everyone it had: stickiness needs nothing here.
    """
    flag = dict(data)
    if action.share <= 0:
        flag["default"] = action.control
    elif action.share >= FULL_SHARE:
        flag["default"] = action.treatment
    else:
        before = data.get("default")
        serve: dict[str, Any] = {
            "rollout": {
                action.control: percent(FULL_SHARE - action.share),
                action.treatment: percent(action.share),
            }
        }
        if isinstance(before, Mapping):  # keep who is bucketed by what
            serve.update({k: before[k] for k in ("by", "salt") if k in before})
        flag["default"] = serve
    return flag


class ReleaseService:
    """Start, read, command and tick guarded releases."""

    def __init__(
        self,
        store: Store,
        flags: FlagService,
        jobs: JobService,
        metrics: MetricsReader,
        tick_every: timedelta = timedelta(seconds=5),
        clock: _Clock = lambda: datetime.now(UTC),
        experiments: ExperimentRuns | None = None,
    ) -> None:
        self.store = store
        self.experiments = experiments
        self.flags = flags
        self.jobs = jobs
        self.metrics = metrics
        self.tick_every = tick_every
        self._clock = clock
        self._judges: dict[str, tuple[datetime, JudgeState]] = {}
        self._judges_lock = threading.Lock()

    def handler(self) -> Handler:
        """The job handler of ``release.tick``."""

        def handle(job: Job, work: UnitOfWork) -> Again | None:
            more = self.tick(str(job.payload["release"]), within=work)
            # jobs run on the wall clock; the release's own clock decides holds
            return Again(datetime.now(UTC) + self.tick_every) if more else None

        return handle

    # -- reading -----------------------------------------------------------------------

    def list(
        self, project: str, env: str, flag: str | None = None, active: bool | None = None
    ) -> list[Release]:
        with self.store.reading() as r:
            environment_id = require_environment(r, project, env)
            rows = r.releases.in_environment(environment_id, flag, active)
        return [self._view(project, env, row) for row in rows]

    def get(self, project: str, env: str, release_id: str) -> Release:
        with self.store.reading() as r:
            environment_id = require_environment(r, project, env)
            row = self._row(r.releases.get(release_id), environment_id, release_id)
        return self._view(project, env, row)

    def show(self, project: str, env: str, release_id: str) -> tuple[Release, Decisions]:
        """The release and its latest decisions (at most SHOWN_DECISIONS), oldest first,
        each with its text and its explanation (the judge's, where it took part) as the
        audit log holds them."""
        with self.store.reading() as r:
            environment_id = require_environment(r, project, env)
            row = self._row(r.releases.get(release_id), environment_id, release_id)
            entries = r.audit.read(environment_id, target=row.flag, actor=release_actor(row.id))
        decisions = [
            {
                "at": e["at"],
                "decision": str(e["action"]).removeprefix("release."),
                "text": e["reason"],
                "explanation": json.loads(e["after"]) if e["after"] else {},
            }
            for e in entries
            if str(e["action"]).startswith("release.")
        ]
        return self._view(project, env, row), decisions[-SHOWN_DECISIONS:]

    # -- starting ----------------------------------------------------------------------

    def start(
        self,
        project: str,
        env: str,
        plan_data: object,
        actor: str,
        start_at: datetime | None = None,
        within: UnitOfWork | None = None,
    ) -> Release:
        """A new release of a plan for this environment; started at once if it is due."""
        if isinstance(plan_data, Mapping) and "environment" not in plan_data:
            plan_data = {**plan_data, "environment": env}
        _check_start_at(start_at, self._clock())
        with self.store.unit_of_work(within) as work:
            environment_id = require_environment(work, project, env, lock=True)
            plan = self._checked_plan(work, environment_id, env, plan_data)
            now = self._clock()
            if start_at is None or start_at <= now:  # later: its first step waits for it
                _refuse_unverified(work, environment_id, env, plan)
            release_id = work.releases.next_id()
            state = new_release(plan, release_id, now, start_at=start_at)
            return self._create(work, project, env, environment_id, state, actor, now)

    def restart(
        self,
        project: str,
        env: str,
        release_id: str,
        actor: str,
        start_at: datetime | None = None,
        within: UnitOfWork | None = None,
    ) -> Release:
        """A new release of a rolled-back or aborted one's plan, with its history."""
        _check_start_at(start_at, self._clock())
        with self.store.unit_of_work(within) as work:
            environment_id = require_environment(work, project, env, lock=True)
            old_row = self._row(work.releases.get(release_id), environment_id, release_id)
            old = state_from_data(old_row.state)
            self._checked_plan(work, environment_id, env, plan_to_data(old.plan))
            now = self._clock()
            if start_at is None or start_at <= now:
                _refuse_unverified(work, environment_id, env, old.plan)
            state = restart(old, work.releases.next_id(), now, start_at=start_at)
            return self._create(work, project, env, environment_id, state, actor, now)

    def _checked_plan(
        self, work: UnitOfWork, environment_id: int, env: str, plan_data: object
    ) -> Plan:
        """The plan, refused whole when it or the flag it names is not fit to release."""
        key = plan_data.get("flag") if isinstance(plan_data, Mapping) else None
        flag = work.flags.get(environment_id, key) if isinstance(key, str) else None
        variants = None
        if flag is not None:
            named = flag.data.get("variants")
            variants = list(named) if isinstance(named, Mapping) else ["on", "off"]
        # every problem at once (a source this server lacks among them), or InvalidPlan
        plan = parse_plan(plan_data, variants=variants, sources=self.metrics.sources)
        if plan.experiments and self.experiments is None:
            raise InvalidPlan([Problem("guards", "this server keeps no experiments to guard with")])
        if plan.environment != env:
            message = f"the plan is for environment '{plan.environment}', not '{env}'"
            raise Invalid((Problem("environment", message),))
        if flag is None:
            raise Invalid((Problem("flag", f"no flag '{plan.flag}' in this environment"),))
        unfit = _unfit_flag(flag.data, plan)
        if unfit:
            raise Invalid((Problem("flag", unfit),))
        active = work.releases.active_of(environment_id, plan.flag)
        if active is not None:
            raise Conflict(
                f"flag '{plan.flag}' is already being released by {active.id}; "
                "abort it first or wait for it to end"
            )
        return plan

    def _create(
        self,
        work: UnitOfWork,
        project: str,
        env: str,
        environment_id: int,
        state: ReleaseState,
        actor: str,
        now: datetime,
    ) -> Release:
        flag = work.flags.get(environment_id, state.plan.flag)
        row = work.releases.add(
            state.id,
            environment_id,
            state.plan.flag,
            state.phase.value,
            not state.over,
            state_to_data(state),
            None if flag is None else flag.version,
            now,
        )
        work.record(
            actor=actor,
            action="release.create",
            target=f"{state.plan.flag}",
            reason=state.history[-1].text,
            after={"release": state.id, "plan": plan_to_data(state.plan)},
            environment_id=environment_id,
            versioned=False,
        )
        held = None
        if state.phase is Phase.SCHEDULED:
            held = _unverified_deploy(work, environment_id, env, state.plan)
        row = self._advance(work, project, env, environment_id, row, state, Tick(held), now)
        self._keep_ticking(work, row, project, env)
        return self._view(project, env, row)

    def _keep_ticking(self, work: UnitOfWork, row: ReleaseRow, project: str, env: str) -> None:
        """The release's tick job, unless it has one (the job's key makes it one at most)."""
        now = datetime.now(UTC)
        payload = {"release": row.id, "project": project, "env": env}
        work.jobs.add(RELEASE_TICK, payload, now + self.tick_every, now, key=f"release:{row.id}")

    def keep_ticking(self, work: UnitOfWork) -> None:
        """Give every active release its tick job again (recurring: a job that failed for
        good, after its retries, must not leave a release without anyone looking at it)."""
        for row in work.releases.all_active():
            project, env = self._keys(work, row.environment_id)
            self._keep_ticking(work, row, project, env)

    # -- commands ----------------------------------------------------------------------

    def command(
        self,
        project: str,
        env: str,
        release_id: str,
        command: Command,
        within: UnitOfWork | None = None,
    ) -> Release:
        """A person's command; ``CommandRefused`` (nothing changes) when the phase forbids it."""
        with self.store.unit_of_work(within) as work:
            environment_id = require_environment(work, project, env, lock=True)
            row = self._row(work.releases.get(release_id, lock=True), environment_id, release_id)
            now = self._clock()
            state = state_from_data(row.state)
            self._check_command(work, environment_id, row, state, command)
            row, state = self._notice_hand_edit(work, project, env, environment_id, row, state, now)
            row = self._advance(work, project, env, environment_id, row, state, command, now)
            return self._view(project, env, row)

    @staticmethod
    def _check_command(
        work: UnitOfWork,
        environment_id: int,
        row: ReleaseRow,
        state: ReleaseState,
        command: Command,
    ) -> None:
        """What no phase allows: approving one's own release, moving one whose flag is off."""
        if isinstance(command, Approve):
            started_by = work.audit.actor_of(environment_id, "release.create", row.flag, row.id)
            if started_by is not None and started_by == command.by:
                raise Forbidden("you started this release: someone else must approve it")
        due = state.start_at is None or state.start_at <= datetime.now(UTC)
        starts = isinstance(command, Start) and state.phase is Phase.SCHEDULED
        if starts or (isinstance(command, Approve) and due):
            env = (work.environments.keys_of(environment_id) or ("", ""))[1]
            _refuse_unverified(work, environment_id, env, state.plan)
        if isinstance(command, Resume | Advance):
            flag = work.flags.get(environment_id, state.plan.flag)
            if flag is not None and flag.data.get("enabled", True) is False:
                raise Conflict(
                    f"flag '{state.plan.flag}' is off (its kill switch): turn it on before "
                    "the release moves it again"
                )

    # -- the worker's tick -------------------------------------------------------------

    def tick(self, release_id: str, within: UnitOfWork | None = None) -> bool:
        """One look at one release; whether it should be looked at again."""
        with self.store.unit_of_work(within) as work:
            return self._tick(work, release_id)

    def _tick(self, work: UnitOfWork, release_id: str) -> bool:
        row = work.releases.get(release_id)
        if row is None or not row.active:
            return False
        work.environments.lock(row.environment_id)
        row = work.releases.get(release_id, lock=True)
        if row is None or not row.active:
            return False
        project, env = self._keys(work, row.environment_id)
        now = self._clock()
        state = state_from_data(row.state)
        event: Event = Tick()
        if state.phase is Phase.SCHEDULED:  # its first step waits for a verified deploy
            event = Tick(_unverified_deploy(work, row.environment_id, env, state.plan))
        judged_until = row.judged_until
        if _drives_flag(state):  # read everything before writing anything
            try:
                event, judged_until = self._observe(row, state, now)
            except (UnveilError, httpx.HTTPError) as exc:  # metrics away: wait, never fail
                log.warning("release %s: no look at its metrics this time: %s", row.id, exc)
        row, state = self._notice_hand_edit(work, project, env, row.environment_id, row, state, now)
        row = self._advance(
            work, project, env, row.environment_id, row, state, event, now, judged_until
        )
        return row.active

    @staticmethod
    def _keys(work: UnitOfWork, environment_id: int) -> tuple[str, str]:
        keys = work.environments.keys_of(environment_id)
        if keys is None:
            raise NotFound(f"no environment {environment_id}")
        return keys

    def _observe(
        self, row: ReleaseRow, state: ReleaseState, now: datetime
    ) -> tuple[Observation, datetime | None]:
        """The judge's look at the windows closed since the last one, and the step's exposures."""
        plan = state.plan
        begin = _judge_start(state)
        if begin is None:
            return Observation(Verdict(VerdictKind.NO_DATA), 0), _aware(row.judged_until)
        closed = floor_window(self.metrics.closed_until(now))
        until = _aware(row.judged_until) or begin
        if until >= closed:  # no window of this release has closed yet
            return Observation(Verdict(VerdictKind.NO_DATA), 0), _aware(row.judged_until)
        config = judge_config(plan)
        judged = self._judged(row, state, begin, until, config)
        for at in windows(until, closed, _MAX_WINDOWS_PER_TICK):
            if judged is not None:
                batch = self._window(row, state, plan.guards, at)
                judged = judge.observe(judged, _at_end(batch, begin, at))
            until = at + WINDOW
        if judged is not None:
            with self._judges_lock:
                self._judges[row.id] = (until, judged)
        # the window the step began in counts: exposures come once a minute per user,
        # in the first window of each, and leaving it out can cost the step a minute
        step_from = floor_window(state.step_started_at or begin)
        exposures = 0
        if step_from < until:
            exposures = self._arms(row, plan, step_from, until).treatment.exposures
        if judged is not None:
            verdict = judge.verdict(judged)
        else:
            total = self._arms(row, plan, begin, until)
            some = total.treatment.exposures > 0 and total.control.exposures > 0
            verdict = Verdict(VerdictKind.CONTINUE if some else VerdictKind.NO_DATA)
        if plan.experiments:
            verdict = self._experiment_verdict(row, plan, begin, until, verdict)
        return Observation(verdict, exposures), until

    def _experiment_verdict(
        self, row: ReleaseRow, plan: Plan, begin: datetime, until: datetime, verdict: Verdict
    ) -> Verdict:
        """The judge's verdict, turned into FAIL when an experiment guard's rate is shown
        to be above its maximum (on the experiment's runs since the release began)."""
        if self.experiments is None:
            raise InvalidPlan([Problem("guards", "this server keeps no experiments")])
        checks: list[dict[str, object]] = []
        failed: list[str] = []
        start, end = int(begin.timestamp()), int(until.timestamp())
        for guard in plan.experiments:
            matches, mismatches = self.experiments.runs(
                row.environment_id, guard.experiment, start, end
            )
            check = exceeds(
                mismatches, matches + mismatches, guard.max_mismatch_rate, guard.min_runs
            )
            checks.append({"guard": guard.name, "experiment": guard.experiment, **check.as_data()})
            if check.exceeded:
                failed.append(
                    f"experiment {guard.experiment!r} mismatches in "
                    f"{mismatches / (matches + mismatches):.2%} of {matches + mismatches} runs, "
                    f"above its maximum of {guard.max_mismatch_rate:.2%} "
                    f"(at least {check.lower:.2%} at {1 - check.alpha:.0%} confidence)"
                )
        explanation = {**verdict.explanation, "experiments": checks}
        if failed:
            explanation["summary"] = "; ".join(failed)
            return Verdict(VerdictKind.FAIL, explanation)
        return Verdict(verdict.kind, explanation)

    def _arms(self, row: ReleaseRow, plan: Plan, start: datetime, end: datetime) -> Batch:
        """Both arms' exposures over [start, end), with no guard's metrics."""
        return self.metrics.batch(
            row.environment_id, plan.flag, plan.treatment, plan.control, (), start, end
        )

    def _judged(
        self,
        row: ReleaseRow,
        state: ReleaseState,
        begin: datetime,
        until: datetime,
        config: judge.JudgeConfig | None,
    ) -> JudgeState | None:
        """The judge as it was after the windows up to ``until``, rebuilt when not at hand."""
        if config is None:
            return None
        with self._judges_lock:
            kept = self._judges.get(row.id)
        if kept is not None and kept[0] == until:
            return kept[1]
        judged = judge.start(config)
        for at in windows(begin, until):
            batch = self._window(row, state, state.plan.guards, at)
            judged = judge.observe(judged, _at_end(batch, begin, at))
        return judged

    def _window(
        self, row: ReleaseRow, state: ReleaseState, guards: Sequence[Guard], at: datetime
    ) -> Batch:
        plan = state.plan
        return self.metrics.batch(
            row.environment_id, plan.flag, plan.treatment, plan.control, guards, at, at + WINDOW
        )

    # -- carrying out ------------------------------------------------------------------

    def _notice_hand_edit(
        self,
        work: UnitOfWork,
        project: str,
        env: str,
        environment_id: int,
        row: ReleaseRow,
        state: ReleaseState,
        now: datetime,
    ) -> tuple[ReleaseRow, ReleaseState]:
        """Pause a release whose flag someone else changed; accept the change otherwise."""
        flag = work.flags.get(environment_id, state.plan.flag)
        version = None if flag is None else flag.version
        if version == row.flag_version:
            return row, state
        event: Event
        if flag is None and not state.over:
            last = work.audit.last_change_of(environment_id, state.plan.flag)
            actor, why = last if last is not None else ("someone", None)
            reason = f"the flag was deleted by {actor}" + (f": {why}" if why else "")
            event = Abort(release_actor(state.id), reason, keep_share=True)
        elif _drives_flag(state):
            last = work.audit.last_change_of(environment_id, state.plan.flag)
            actor, why = last if last is not None else ("", None)
            event = FlagEdited(actor, why or "")
        else:  # not driving the flag now: the edit is the flag's new starting point
            moved = work.releases.move(
                row,
                phase=row.phase,
                active=row.active,
                state=row.state,
                flag_version=version,
                judged_until=row.judged_until,
                now=now,
            )
            if not moved:
                raise Conflict(f"release {row.id} changed meanwhile; try again")
            return self._reread(work, row.id), state
        row = self._advance(work, project, env, environment_id, row, state, event, now)
        return row, state_from_data(row.state)

    def _advance(
        self,
        work: UnitOfWork,
        project: str,
        env: str,
        environment_id: int,
        row: ReleaseRow,
        state: ReleaseState,
        event: Event,
        now: datetime,
        judged_until: datetime | None = None,
    ) -> ReleaseRow:
        """Run the machine on ``event``, carry out its actions, store the new state."""
        new, actions = step(state, now, event)
        flag_version = self._carry_out(work, project, env, environment_id, row, new, actions)
        moved = work.releases.move(
            row,
            phase=new.phase.value,
            active=not new.over,
            state=state_to_data(new),
            flag_version=flag_version,
            judged_until=judged_until if judged_until is not None else row.judged_until,
            now=now,
        )
        if not moved:
            raise Conflict(f"release {row.id} changed meanwhile; try again")
        return self._reread(work, row.id)

    @staticmethod
    def _reread(work: UnitOfWork, release_id: str) -> ReleaseRow:
        found = work.releases.get(release_id)
        if found is None:
            raise NotFound(f"no release '{release_id}'")
        return found

    def _carry_out(
        self,
        work: UnitOfWork,
        project: str,
        env: str,
        environment_id: int,
        row: ReleaseRow,
        state: ReleaseState,
        actions: Sequence[Action],
    ) -> int | None:
        """The machine's actions as a flag change and audit entries; the flag's version after."""
        actor = release_actor(state.id)
        flag_key = state.plan.flag
        current = work.flags.get(environment_id, flag_key)
        flag_version = None if current is None else current.version
        decisions = [a for a in actions if isinstance(a, RecordDecision)]
        reason = "; ".join(d.text for d in decisions) or None
        for action in actions:
            if isinstance(action, SetRollout) and current is not None:
                record = self.flags.put_item(
                    "flags",
                    project,
                    env,
                    flag_key,
                    _served(current.data, action),
                    Change(actor, reason),
                    current.version,
                    within=work,
                )
                flag_version = record.version
            elif isinstance(action, RecordDecision):
                work.record(
                    actor=actor,
                    action=f"release.{action.decision.value}",
                    target=flag_key,
                    reason=action.text,
                    after=dict(action.explanation),
                    environment_id=environment_id,
                    versioned=False,
                )
            # Notify needs nothing more: each decision's audit entry has its outbox row,
            # which is what webhooks and the dashboard are told from.
        return flag_version

    # -- helpers -----------------------------------------------------------------------

    @staticmethod
    def _row(row: ReleaseRow | None, environment_id: int, release_id: str) -> ReleaseRow:
        if row is None or row.environment_id != environment_id:
            raise NotFound(f"no release '{release_id}' in this environment")
        return row

    def _view(self, project: str, env: str, row: ReleaseRow) -> Release:
        return Release(
            row.id,
            project,
            env,
            row.flag,
            state_from_data(row.state),
            row.version,
            row.active,
            _aware(row.judged_until),
            row.updated_at,
        )


def _at_end(batch: Batch, begin: datetime, at: datetime) -> Batch:
    """The batch stamped with its window's end, in seconds since the judging began."""
    end_s = (at + WINDOW - begin).total_seconds()
    return Batch(end_s, batch.treatment, batch.control)
