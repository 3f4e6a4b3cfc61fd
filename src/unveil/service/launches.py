"""Launches: a named business release of several flag changes, started and stopped together.

A launch holds flag changes (turn a flag on or off, write a flag whole, or
run a guarded release from a plan or a release template), in one or
several environments of a project, with release notes written for people,
an owner and a planned time. Its life:

    planned -> (waiting_for_approval) -> in_progress -> done
                                                \\-> rolled_back (stopped)

- **Made**: every change is checked by carrying the whole start out in a
  savepoint that is rolled back, so a launch that could not start now is
  refused with every problem, naming the change (``changes[2].flag``).
- **Started** (by a person, or by its job at the planned time: a job keyed
  by the launch, whose effect is written in one transaction with its fenced
  finish, so exactly once): all of its changes in one transaction, each
  environment's changes through its own use cases (validated, versioned,
  pushed to SDKs), audited with actor ``launch:<id>``, then
  ``launch.started`` in each environment, carrying the notes (webhooks).
  Where an environment requires approval, starting opens a change request
  there (``launch.start``) for each such environment and waits; the last
  approval starts it, whole.
- **Done** once every change has taken full effect: at once for flag
  changes, when its release completes for a guarded release
  (``launch.done``). A release of the launch that is rolled back stops the
  whole launch.
- **Stopped** (its kill switch, ``launch.stopped``): every flag it changed
  goes back to what it was just before the start, and its releases are
  aborted (control for everyone). Stopping is never held up by approval.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from unveil.core import Problem, UnveilError
from unveil.release.machine import Abort
from unveil.service.changes import ChangeService
from unveil.service.errors import Conflict, Invalid, NotFound
from unveil.service.flags import Change, FlagService
from unveil.service.jobs import Again, Handler, JobService
from unveil.service.releases import ReleaseService
from unveil.service.scope import require_environment, require_project, when_problem
from unveil.service.templates import TemplateService
from unveil.service.text import text_problem
from unveil.store.jobs import Job
from unveil.store.launches import DONE, IN_PROGRESS, PLANNED, ROLLED_BACK, WAITING, LaunchRow
from unveil.store.unit import Reading, Store, UnitOfWork

__all__ = ["LAUNCH_START", "LAUNCH_WATCH", "Launch", "LaunchService", "launch_actor"]

LAUNCH_START = "launch.start"
LAUNCH_WATCH = "launch.watch"
#: the most flag changes one launch may hold
MAX_CHANGES = 100
#: how many finished launches the calendar shows
RECENT = 20
_CHANGE_FIELDS = frozenset({"environment", "flag", "enabled", "data", "release"})
_RELEASE_FIELDS = frozenset({"template", "plan", "control", "treatment"})
_Clock = Callable[[], datetime]


def launch_actor(launch_id: str) -> str:
    """Who the audit log says made a launch's flag changes."""
    return f"launch:{launch_id}"


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


@dataclass(frozen=True, slots=True)
class Launch:
    """A launch as the API shows it."""

    row: LaunchRow
    project: str

    def as_data(self) -> dict[str, Any]:
        r = self.row
        return {
            "id": r.id,
            "project": self.project,
            "name": r.name,
            "notes": r.notes,
            "owner": r.owner,
            "planned_at": _iso(r.planned_at),
            "state": r.state,
            "changes": r.changes,
            "environments": _environments(r.changes),
            "flags": sorted({c["flag"] for c in r.changes}),
            "effects": r.effects,
            "approvals": r.approvals,
            "outcome": r.outcome,
            "version": r.version,
            "created_by": r.created_by,
            "created_at": _iso(r.created_at),
            "updated_at": _iso(r.updated_at),
            "started_at": _iso(r.started_at),
            "finished_at": _iso(r.finished_at),
        }


def _environments(changes: builtins.list[dict[str, Any]]) -> builtins.list[str]:
    seen: dict[str, None] = {}
    for change in changes:
        seen.setdefault(change["environment"], None)
    return list(seen)


def _change_problems(raw: object, i: int) -> builtins.list[Problem]:
    at = f"changes[{i}]"
    if not isinstance(raw, Mapping):
        return [Problem(at, "must be an object with environment, flag and what to do")]
    problems = [
        Problem(f"{at}.{k}", "is not a field of a launch's change")
        for k in raw
        if k not in _CHANGE_FIELDS
    ]
    for name in ("environment", "flag"):
        problem = text_problem(raw.get(name), f"{at}.{name}", 200)
        if problem is not None:
            problems.append(problem)
    what = [k for k in ("enabled", "data", "release") if k in raw]
    if len(what) != 1:
        problems.append(Problem(at, "needs exactly one of enabled, data or release"))
        return problems
    if "enabled" in raw and not isinstance(raw["enabled"], bool):
        problems.append(Problem(f"{at}.enabled", "must be true or false"))
    if "data" in raw and not isinstance(raw["data"], Mapping):
        problems.append(Problem(f"{at}.data", "must be a flag in flags-file form"))
    if "release" in raw:
        release = raw["release"]
        if not isinstance(release, Mapping):
            problems.append(Problem(f"{at}.release", "must name a template or hold a plan"))
        else:
            problems += [
                Problem(f"{at}.release.{k}", "is not a field of a launch's release")
                for k in release
                if k not in _RELEASE_FIELDS
            ]
            if ("template" in release) == ("plan" in release):
                problems.append(Problem(f"{at}.release", "needs exactly one of template or plan"))
            for name in ("template", "control", "treatment"):
                if name in release:
                    problem = text_problem(release[name], f"{at}.release.{name}", 200)
                    if problem is not None:
                        problems.append(problem)
            if "plan" in release and not isinstance(release["plan"], Mapping):
                problems.append(Problem(f"{at}.release.plan", "must be a release plan"))
    return problems


class LaunchService:
    """Plan, start, stop and list launches."""

    def __init__(
        self,
        store: Store,
        flags: FlagService,
        releases: ReleaseService,
        templates: TemplateService,
        jobs: JobService,
        changes: ChangeService,
        watch_every: timedelta = timedelta(seconds=5),
        clock: _Clock = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.flags = flags
        self.releases = releases
        self.templates = templates
        self.jobs = jobs
        self.changes = changes
        self.watch_every = watch_every
        self._clock = clock
        changes.register(LAUNCH_START, self._approved, hold=self._hold_for_approval)

    # -- making ------------------------------------------------------------------------

    def create(
        self,
        project: str,
        name: object,
        notes: object,
        owner: object,
        planned_at: datetime | None,
        changes: object,
        actor: str,
    ) -> Launch:
        """A new planned launch; refused with every problem if it could not start now."""
        problems = [
            p
            for p in (
                text_problem(name, "name", 200),
                text_problem(notes, "notes", 20_000, multiline=True),
                None if owner is None else text_problem(owner, "owner", 200),
            )
            if p is not None
        ]
        now = self._clock()
        if planned_at is not None:
            if planned_at.tzinfo is None:
                problems.append(Problem("planned_at", "needs its offset from UTC (…+01:00, Z)"))
            else:
                ahead = when_problem(planned_at, now, "planned_at", planned_at.isoformat())
                if ahead is not None:
                    problems.append(ahead)
                # stored and scheduled in UTC: SQLite keeps no offset, and would read
                # 09:00+01:00 back as 09:00 UTC, an hour late
                planned_at = planned_at.astimezone(UTC)
        if not isinstance(changes, list) or not changes:
            problems.append(Problem("changes", "must list at least one flag change"))
        elif len(changes) > MAX_CHANGES:
            problems.append(Problem("changes", f"may hold at most {MAX_CHANGES} changes"))
        else:
            seen: dict[tuple[Any, Any], int] = {}
            for i, raw in enumerate(changes):
                mine = _change_problems(raw, i)
                problems += mine
                if isinstance(raw, Mapping) and not mine:  # text, so it can be compared
                    where = (raw.get("environment"), raw.get("flag"))
                    if where in seen:
                        problems.append(
                            Problem(
                                f"changes[{i}]", f"changes the same flag as changes[{seen[where]}]"
                            )
                        )
                    seen.setdefault(where, i)
        if problems:
            raise Invalid(tuple(problems))
        assert isinstance(changes, list)  # no problems: a list of mappings
        asked = [dict(c) for c in changes]
        with self.store.unit_of_work() as work:
            project_id = require_project(work, project)
            self._environment_problems(work, project, asked)
            row = work.launches.add(
                project_id=project_id,
                name=str(name),
                notes=str(notes),
                owner=str(owner or actor),
                planned_at=planned_at,
                changes=asked,
                actor=actor,
                now=now,
            )
            with work.savepoint(keep=False):  # it must start now, against what is there
                self._go(work, project, row, actor)
            if planned_at is not None:
                payload = {"launch": row.id, "project": project}
                work.jobs.add(LAUNCH_START, payload, planned_at, now, key=f"launch:{row.id}")
            self._announce(work, project, row, "planned", actor, None)
            return Launch(row, project)

    @staticmethod
    def _environment_problems(
        work: Reading, project: str, changes: builtins.list[dict[str, Any]]
    ) -> None:
        problems = [
            Problem(
                f"changes[{i}].environment",
                f"no environment '{c['environment']}' in project '{project}'",
            )
            for i, c in enumerate(changes)
            if work.environments.id_of(project, c["environment"]) is None
        ]
        if problems:
            raise Invalid(tuple(problems))

    # -- reading -----------------------------------------------------------------------

    def get(self, project: str, launch_id: str) -> Launch:
        with self.store.reading() as r:
            return Launch(self._row(r, project, launch_id), project)

    def calendar(self, project: str) -> dict[str, builtins.list[dict[str, Any]]]:
        """Upcoming (soonest first), in progress, and recent (latest first) launches."""
        with self.store.reading() as r:
            rows = r.launches.of_project(require_project(r, project))
        far = datetime.max.replace(tzinfo=UTC)

        def planned(row: LaunchRow) -> datetime:
            at = row.planned_at
            return far if at is None else (at if at.tzinfo else at.replace(tzinfo=UTC))

        def finished(row: LaunchRow) -> datetime:
            at = row.finished_at or row.updated_at
            return at if at.tzinfo else at.replace(tzinfo=UTC)

        upcoming = sorted((x for x in rows if x.state in (PLANNED, WAITING)), key=planned)
        running = [x for x in rows if x.state == IN_PROGRESS]
        recent = sorted(
            (x for x in rows if x.state in (DONE, ROLLED_BACK)), key=finished, reverse=True
        )
        return {
            "upcoming": [Launch(x, project).as_data() for x in upcoming],
            "in_progress": [Launch(x, project).as_data() for x in running],
            "recent": [Launch(x, project).as_data() for x in recent[:RECENT]],
        }

    # -- starting ----------------------------------------------------------------------

    def start(
        self, project: str, launch_id: str, actor: str, within: UnitOfWork | None = None
    ) -> Launch:
        """Start it now: all of its changes together, or, where approval is required, ask."""
        with self.store.unit_of_work(within) as work:
            row = self._hold(work, project, launch_id)
            if row.state != PLANNED:
                raise Conflict(f"launch {row.id} is {row.state.replace('_', ' ')}: it cannot start")
            needing = [
                env
                for env in _environments(row.changes)
                if work.settings.requires_approval(require_environment(work, project, env))
            ]
            if needing:
                return Launch(self._ask(work, project, row, needing, actor), project)
            return Launch(self._go(work, project, row, actor), project)

    def _ask(
        self,
        work: UnitOfWork,
        project: str,
        row: LaunchRow,
        needing: builtins.list[str],
        actor: str,
    ) -> LaunchRow:
        """Open a change request in each environment that requires approval; wait for them."""
        with work.savepoint(keep=False):  # it must start now: checked, then undone
            self._go(work, project, row, actor)
        approvals: dict[str, Any] = {}
        for env in needing:
            mine = [c for c in row.changes if c["environment"] == env]
            opened = self.changes.open_request(
                work,
                project,
                env,
                LAUNCH_START,
                row.id,
                {"launch": row.id},
                {"before": None, "after": {"launch": row.id, "name": row.name, "changes": mine}},
                None,
                actor,
                f"start launch '{row.name}'",
            )
            approvals[env] = {"change_request": opened.row.id, "approval": None}
        row = self._moved(work, row, state=WAITING, approvals=approvals)
        self._announce(work, project, row, "waiting", actor, None)
        return row

    def _approved(
        self,
        work: UnitOfWork,
        project: str,
        env: str,
        launch_id: str,
        _payload: Mapping[str, Any],
        change: Change,
    ) -> Any:
        """A ``launch.start`` request was approved: the last approval starts the launch."""
        row = self._hold(work, project, launch_id)
        if row.state != WAITING:
            raise Conflict(f"launch {row.id} is {row.state.replace('_', ' ')}, not waiting")
        approvals = {k: dict(v) for k, v in row.approvals.items()}
        approvals[env]["approval"] = change.reason or "approved"  # says who approved it
        row = self._moved(work, row, approvals=approvals)
        if all(a.get("approval") for a in approvals.values()):
            row = self._go(work, project, row, change.actor)
        return {"launch": row.id, "state": row.state}

    def _hold_for_approval(self, work: UnitOfWork, project: str, launch_id: str) -> None:
        """Before an approval holds its own environment: the launch's environments, in
        id order, as starting and stopping hold them (else approving while stopping
        deadlocks, each holding one environment the other needs)."""
        found = work.launches.get(launch_id)
        if found is not None and found.project_id == require_project(work, project):
            self._hold_environments(work, project, found)

    def _go(self, work: UnitOfWork, project: str, row: LaunchRow, actor: str) -> LaunchRow:
        """Carry every change out, environment after environment, in ``work``."""
        effects: builtins.list[dict[str, Any]] = []
        by = Change(launch_actor(row.id), f"launch '{row.name}' ({row.id}) started by {actor}")
        self._hold_environments(work, project, row)
        for i, change in enumerate(row.changes):
            try:
                effects.append(self._carry_out(work, project, row, change, by))
            except UnveilError as exc:
                raise _named(exc, f"changes[{i}]") from None
        done = not any(e["kind"] == "release" for e in effects)
        now = self._clock()
        row = self._moved(
            work,
            row,
            state=DONE if done else IN_PROGRESS,
            effects=effects,
            started_at=now,
            finished_at=now if done else None,
            outcome="started" if not done else "started; every change has taken effect",
        )
        self._announce(work, project, row, "started", actor, None)
        if done:
            self._announce(work, project, row, "done", actor, None)
        else:
            payload = {"launch": row.id, "project": project}
            work.jobs.add(
                LAUNCH_WATCH, payload, now + self.watch_every, now, key=f"launch-watch:{row.id}"
            )
        return row

    def _carry_out(
        self, work: UnitOfWork, project: str, row: LaunchRow, change: Mapping[str, Any], by: Change
    ) -> dict[str, Any]:
        env, key = change["environment"], change["flag"]
        environment_id = require_environment(work, project, env)
        current = work.flags.get(environment_id, key)
        before = None if current is None else current.data
        effect: dict[str, Any] = {"environment": env, "flag": key, "before": before}
        if "release" in change:
            asked = change["release"]
            if "template" in asked:
                plan = self.templates.plan_for(
                    work,
                    project,
                    asked["template"],
                    key,
                    env,
                    asked.get("control"),
                    asked.get("treatment"),
                )
            else:
                plan = {**asked["plan"], "flag": key}
            try:
                started = self.releases.start(project, env, plan, by.actor, within=work)
            except UnveilError as exc:  # its paths are the plan's: say where in the change
                raise _repathed(exc, lambda path: _in_release(path, "template" in asked)) from None
            return {**effect, "kind": "release", "release": started.id}
        if current is None and "enabled" in change:
            raise NotFound(f"no flag '{key}' in {env}")
        data = (
            dict(change["data"])
            if "data" in change
            else {**(before or {}), "enabled": change["enabled"]}
        )
        try:
            self.flags.put_item(
                "flags",
                project,
                env,
                key,
                data,
                by,
                None if current is None else current.version,
                create_only=current is None,
                within=work,
            )
        except UnveilError as exc:  # its paths are a flags file's: say which field of the change
            raise _repathed(exc, lambda path: _in_change(path, key)) from None
        return {**effect, "kind": "flag"}

    # -- stopping ----------------------------------------------------------------------

    def stop(
        self,
        project: str,
        launch_id: str,
        actor: str,
        reason: str | None = None,
        within: UnitOfWork | None = None,
    ) -> Launch:
        """The kill switch: every flag of the launch back as it was; its releases aborted."""
        with self.store.unit_of_work(within) as work:
            row = self._hold(work, project, launch_id)
            if row.state == ROLLED_BACK:
                raise Conflict(f"launch {row.id} is stopped already")
            why = f"launch '{row.name}' ({row.id}) stopped by {actor}" + (
                f": {reason}" if reason else ""
            )
            by = Change(launch_actor(row.id), why)
            for effect in reversed(row.effects):
                self._turn_back(work, project, effect, by)
            now = self._clock()
            outcome = "stopped: every flag turned back" + (f" ({reason})" if reason else "")
            if row.state in (PLANNED, WAITING):
                outcome = "stopped before it started: nothing to turn back"
            row = self._moved(work, row, state=ROLLED_BACK, finished_at=now, outcome=outcome)
            self._announce(work, project, row, "stopped", actor, reason)
            return Launch(row, project)

    def _turn_back(
        self, work: UnitOfWork, project: str, effect: Mapping[str, Any], by: Change
    ) -> None:
        env, key = effect["environment"], effect["flag"]
        if effect["kind"] == "release":
            found = work.releases.get(effect["release"])
            if found is not None and found.active:
                self.releases.command(
                    project, env, effect["release"], Abort(by.actor, by.reason or ""), within=work
                )
                return
        environment_id = require_environment(work, project, env)
        current = work.flags.get(environment_id, key)
        before = effect["before"]
        if current is None:
            if before is not None:
                self.flags.put_item(
                    "flags", project, env, key, before, by, None, create_only=True, within=work
                )
            return
        if before is None:
            self.flags.delete_item("flags", project, env, key, by, current.version, within=work)
        elif current.data != before:
            self.flags.put_item(
                "flags", project, env, key, before, by, current.version, within=work
            )

    # -- the jobs ------------------------------------------------------------------------

    def start_handler(self) -> Handler:
        """The job of ``launch.start``: the launch starts at its planned time, once."""

        def handle(job: Job, work: UnitOfWork) -> None:
            launch_id, keys = str(job.payload["launch"]), str(job.payload["project"])
            row = work.launches.get(launch_id)
            if row is None or row.state != PLANNED:
                return  # stopped (or started by hand) meanwhile
            try:
                with work.savepoint():
                    self.start(keys, launch_id, row.owner, within=work)
            except UnveilError as exc:  # it cannot start any more: say so, keep it planned
                self._failed(work, keys, launch_id, exc)

        return handle

    def watch_handler(self) -> Handler:
        """The job of ``launch.watch``: done when its releases complete, stopped if one fails."""

        def handle(job: Job, work: UnitOfWork) -> Again | None:
            launch_id, project = str(job.payload["launch"]), str(job.payload["project"])
            row = work.launches.get(launch_id)
            if row is None or row.state != IN_PROGRESS:
                return None
            phases = []
            for effect in row.effects:
                if effect["kind"] == "release":
                    found = work.releases.get(effect["release"])
                    phases.append(None if found is None else found.phase)
            if any(p in ("rolled_back", "aborted") for p in phases):
                self.stop(
                    project,
                    launch_id,
                    launch_actor(launch_id),
                    "a release of it was rolled back",
                    within=work,
                )
                return None
            if all(p == "completed" for p in phases):
                now = self._clock()
                row = self._moved(
                    work, row, state=DONE, finished_at=now, outcome="every release completed"
                )
                self._announce(work, project, row, "done", launch_actor(launch_id), None)
                return None
            return Again(datetime.now(UTC) + self.watch_every)

        return handle

    # -- helpers -------------------------------------------------------------------------

    def _failed(self, work: UnitOfWork, project: str, launch_id: str, exc: UnveilError) -> None:
        row = self._hold(work, project, launch_id)
        if row.state != PLANNED:  # stopped or started meanwhile (read unheld): not a failure
            return
        row = self._moved(work, row, outcome=f"could not start at its time: {exc}")
        self._announce(work, project, row, "failed", launch_actor(launch_id), str(exc))

    def _moved(self, work: UnitOfWork, row: LaunchRow, **values: Any) -> LaunchRow:
        if not work.launches.move(row, self._clock(), **values):
            raise Conflict(f"launch {row.id} changed meanwhile; read it again")
        found = work.launches.get(row.id)
        assert found is not None
        return found

    def _hold(self, work: UnitOfWork, project: str, launch_id: str) -> LaunchRow:
        """The launch, read with its environments' rows held and then its own.

        Environments first, in the order of their ids, as every flag write
        holds its environment first: a launch and the writes to its
        environments wait for each other instead of deadlocking.
        """
        self._hold_environments(work, project, self._row(work, project, launch_id))
        return self._row(work, project, launch_id, lock=True)

    @staticmethod
    def _hold_environments(work: UnitOfWork, project: str, row: LaunchRow) -> None:
        envs = _environments(row.changes)
        ids = {env: require_environment(work, project, env) for env in envs}
        for env in sorted(envs, key=lambda e: ids[e]):
            require_environment(work, project, env, lock=True)

    @staticmethod
    def _row(reading: Reading, project: str, launch_id: str, lock: bool = False) -> LaunchRow:
        project_id = require_project(reading, project)
        found = reading.launches.get(launch_id, lock=lock)
        if found is None or found.project_id != project_id:
            raise NotFound(f"no launch '{launch_id}' in project '{project}'")
        return found

    def _announce(
        self,
        work: UnitOfWork,
        project: str,
        row: LaunchRow,
        what: str,
        actor: str,
        reason: str | None,
    ) -> None:
        """``launch.<what>`` in each environment of the launch, with its notes (for webhooks)."""
        for env in _environments(row.changes):
            environment_id = require_environment(work, project, env)
            work.record(
                actor=actor,
                action=f"launch.{what}",
                target=row.id,
                reason=reason or row.name,
                after={
                    "launch": row.id,
                    "name": row.name,
                    "notes": row.notes,
                    "owner": row.owner,
                    "state": row.state,
                    "planned_at": _iso(row.planned_at),
                    "flags": sorted({c["flag"] for c in row.changes if c["environment"] == env}),
                    "environments": _environments(row.changes),
                },
                environment_id=environment_id,
                versioned=False,
            )


def _repathed(exc: UnveilError, path: Callable[[str], str]) -> UnveilError:
    """The refusal with its problems' paths moved by ``path`` (other refusals as they are)."""
    problems = getattr(exc, "problems", None)
    if not problems:
        return exc
    return Invalid(tuple(Problem(path(p.path) if p.path else "", p.message) for p in problems))


def _in_release(path: str, templated: bool) -> str:
    """A release plan's path as the field of a launch's change that holds it: the flag
    is the change's own; the rest is in its plan (or its template, and beside it)."""
    if path == "flag" or path.startswith("flag."):
        return path
    if templated:
        return "environment" if path == "environment" else "release." + path
    return "release.plan." + path


def _in_change(path: str, key: str) -> str:
    """A flags file's path of the flag ``key`` as the field of a launch's change:
    its data (``flags.k.default`` -> ``data.default``), else its key (``flag``)."""
    mine = f"flags.{key}"
    if path == mine:
        return "data"
    if path.startswith(mine + "."):
        return "data." + path.removeprefix(mine + ".")
    return "flag" if path.startswith("flags") else path


def _named(exc: UnveilError, where: str) -> UnveilError:
    """The refusal of one change, its problems' paths under the change that made it."""
    problems = getattr(exc, "problems", None)
    if isinstance(exc, Invalid) or problems:
        named = tuple(
            Problem(f"{where}.{p.path}" if p.path else where, p.message) for p in problems or ()
        )
        return Invalid(named)
    return type(exc)(f"{where}: {exc}") if isinstance(exc, Conflict | NotFound) else exc
