"""Scheduled changes: a flag, segment or document change, or a release start, made later.

A schedule is checked when it is made: the change is carried out against
the environment as it is then, inside a savepoint that is rolled back, so
it is refused at once (with every problem) if it could not be applied
now. What it is written against is kept beside what it writes.

When its time comes the worker applies it in the schedule's own job, in
one transaction with the job's fenced finish, so it is applied exactly
once even across a restart or a change of leader. If the flag changed in
between, the schedule's change is merged field by field: fields that
only the schedule changes are applied, fields that only someone else
changed are kept, and a field both changed differently is a conflict:
then nothing of it is applied, and the failure is recorded and announced
(``schedule.failed``), like success is (``schedule.applied``). A schedule
with an end (``until``) gets its undo at that time: the fields it set go
back to what they were just before it applied, by the same rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from unveil.core import UnveilError
from unveil.core.errors import Problem
from unveil.core.timestamps import instants_at_wall
from unveil.release.window import time_zone
from unveil.service.errors import Conflict, Invalid, NotFound
from unveil.service.flags import Change, FlagService
from unveil.service.jobs import Handler
from unveil.service.promotions import PROMOTION, PromotionRequest, PromotionService
from unveil.service.releases import ReleaseService
from unveil.service.scope import (
    check_state,
    environment_items,
    require_environment,
    when_problem,
)
from unveil.store import tables as t
from unveil.store.items import Part
from unveil.store.jobs import Job
from unveil.store.schedules import APPLIED, CANCELLED, FAILED, PENDING, STATES, ScheduleRow
from unveil.store.unit import Store, UnitOfWork

__all__ = ["ACTIONS", "SCHEDULE_RUN", "Schedule", "ScheduleService", "ScheduleRequest"]

SCHEDULE_RUN = "schedule.run"
#: what can be scheduled, and the part of the environment each one changes
ACTIONS: dict[str, Part | None] = {
    "flag.put": "flags",
    "flag.delete": "flags",
    "segment.put": "segments",
    "segment.delete": "segments",
    "document.apply": None,
    "release.start": None,
    PROMOTION: None,
}
_Clock = Callable[[], datetime]


def _one_release_start(work: UnitOfWork, environment_id: int, flag: str) -> None:
    """Refuse a second pending release start of one flag: when its time came, the later
    one would only fail (a flag runs one release at a time), so say so now."""
    for row in work.schedules.in_environment(environment_id, "pending"):
        if row.action == "release.start" and row.target == flag:
            raise Invalid(
                (
                    Problem(
                        "plan.flag",
                        f"flag '{flag}' has a release start scheduled already ({row.id}, at "
                        f"{t.utc_text(row.run_at)}): cancel it first, or schedule this one "
                        "after that release ends",
                    ),
                )
            )


def schedule_actor(schedule_id: str) -> str:
    """Who the audit log says made a schedule's change."""
    return f"schedule:{schedule_id}"


@dataclass(frozen=True, slots=True)
class ScheduleRequest:
    """What a person asks to happen later, as the API and the CLI hand it over."""

    action: str
    at: str
    key: str | None = None
    data: Mapping[str, Any] | None = None
    document: Mapping[str, Any] | None = None
    plan: Mapping[str, Any] | None = None
    promotion: Mapping[str, Any] | None = None
    until: str | None = None
    time_zone: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Schedule:
    """A schedule as the API shows it."""

    row: ScheduleRow
    project: str
    env: str

    def as_data(self) -> dict[str, Any]:
        r = self.row
        change = {k: v for k, v in r.change.items() if k != "base"}
        return {
            "id": r.id,
            "project": self.project,
            "environment": self.env,
            "action": r.action,
            "target": r.target,
            "at": _iso(r.run_at),
            "until": None if r.until is None else _iso(r.until),
            "time_zone": r.time_zone,
            "state": r.state,
            "undoes": r.undoes,
            "actor": r.actor,
            "reason": r.reason,
            "outcome": r.outcome,
            "change": change,
            "created_at": _iso(r.created_at),
        }


def _iso(value: datetime) -> str:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def _instant(text: str, zone: ZoneInfo | None, field: str, problems: list[Problem]) -> datetime:
    """An instant from RFC 3339 text, or from a wall-clock time in ``zone``."""
    try:
        when = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        problems.append(Problem(field, f"{text!r} is not a time like 2026-12-04T18:00"))
        return datetime.min.replace(tzinfo=UTC)
    if when.tzinfo is not None:
        return when.astimezone(UTC)
    if zone is None:
        problems.append(
            Problem(field, "needs its offset (2026-12-04T18:00+01:00) or a time_zone beside it")
        )
        return datetime.min.replace(tzinfo=UTC)
    found = instants_at_wall(when, zone)
    if not found:
        problems.append(Problem(field, f"{text} does not happen in {zone.key}: the clocks skip it"))
        return datetime.min.replace(tzinfo=UTC)
    if len(found) > 1:
        problems.append(
            Problem(field, f"{text} happens twice in {zone.key}: give the offset to say which")
        )
    return found[0]


def _merge(
    base: Mapping[str, Any] | None,
    wanted: Mapping[str, Any] | None,
    current: Mapping[str, Any] | None,
    what: str,
) -> Mapping[str, Any] | None:
    """The schedule's change applied to what is there now, or Conflict naming what clashes."""
    if current == base:
        return wanted
    if current == wanted:
        return current
    if base is None or wanted is None or current is None:
        gone = "created" if base is None else "deleted"
        raise Conflict(f"{what} was {gone} by someone else after the change was scheduled")
    changed = {f for f in {*base, *wanted} if base.get(f) != wanted.get(f)}
    clashes = sorted(
        f for f in changed if current.get(f) != base.get(f) and current.get(f) != wanted.get(f)
    )
    if clashes:
        raise Conflict(
            f"{what} changed since the change was scheduled, in what it changes too: "
            + ", ".join(clashes)
        )
    merged = {f: v for f, v in current.items() if f not in changed or f in wanted}
    merged.update({f: wanted[f] for f in changed if f in wanted})
    return merged


class ScheduleService:
    """Make, list, cancel and run scheduled changes."""

    def __init__(
        self,
        store: Store,
        flags: FlagService,
        releases: ReleaseService,
        clock: _Clock = lambda: datetime.now(UTC),
        promotions: PromotionService | None = None,
    ) -> None:
        self.store = store
        self.flags = flags
        self.releases = releases
        self.promotions = promotions or PromotionService(store, flags)
        self._clock = clock

    # -- making ------------------------------------------------------------------------

    def create(
        self,
        project: str,
        env: str,
        request: ScheduleRequest,
        actor: str,
        within: UnitOfWork | None = None,
    ) -> Schedule:
        """A new schedule, refused with every problem if it could not be applied now."""
        now = self._clock()
        run_at, until, zone = self._times(request, now)
        target, wanted = self._what(request)
        with self.store.unit_of_work(within) as work:
            environment_id = require_environment(work, project, env, lock=True)
            if request.action == "release.start":
                _one_release_start(work, environment_id, target)
            base = self._current(work, environment_id, request.action, target)
            if request.action.endswith(".delete") and base is None:
                raise NotFound(f"no {request.action.split('.')[0]} '{target}' to delete")
            # carried out now and rolled back: it must apply to the environment as it is
            with work.savepoint(keep=False):
                written = self._write(
                    work,
                    project,
                    env,
                    request.action,
                    target,
                    base,
                    wanted,
                    Change(actor, request.reason),
                )
            change = {"base": base, **written}
            if request.action in ("release.start", PROMOTION):  # made again when it runs
                change = {"base": None, **wanted}
            row = work.schedules.add(
                environment_id=environment_id,
                action=request.action,
                target=target,
                change=change,
                run_at=run_at,
                until=until,
                time_zone=zone,
                actor=actor,
                reason=request.reason,
                now=now,
            )
            self._alarm(work, row)
            work.record(
                actor=actor,
                action="schedule.created",
                target=target or env,
                reason=request.reason,
                after=Schedule(row, project, env).as_data(),
                environment_id=environment_id,
                versioned=False,
            )
            return Schedule(row, project, env)

    def _times(
        self, request: ScheduleRequest, now: datetime
    ) -> tuple[datetime, datetime | None, str | None]:
        problems: list[Problem] = []
        zone = None
        if request.time_zone is not None:
            zone = time_zone(request.time_zone)
            if zone is None:
                shown = request.time_zone[:100]
                problems.append(
                    Problem(
                        "time_zone",
                        f"unknown time zone {shown!r} (an IANA name like Europe/Amsterdam)",
                    )
                )
        run_at = _instant(request.at, zone, "at", problems)
        until = None if request.until is None else _instant(request.until, zone, "until", problems)
        if not problems:
            ahead = when_problem(run_at, now, "at", request.at)
            if ahead is not None:
                problems.append(ahead)
            if until is not None and until <= run_at:
                problems.append(Problem("until", "must be after at"))
            if until is not None and request.action in (
                "release.start",
                PROMOTION,
                "flag.delete",
                "segment.delete",
            ):
                problems.append(
                    Problem("until", f"a scheduled {request.action} has no undo: leave until out")
                )
        if problems:
            raise Invalid(tuple(problems))
        return run_at, until, request.time_zone

    @staticmethod
    def _what(request: ScheduleRequest) -> tuple[str, dict[str, Any]]:
        """The target key and what the change writes, or every problem with the request."""
        problems: list[Problem] = []
        action = request.action
        if action not in ACTIONS:
            known = ", ".join(ACTIONS)
            raise Invalid((Problem("action", f"unknown action {action!r} (one of: {known})"),))
        needs = {
            "flag.put": ("key", "data"),
            "segment.put": ("key", "data"),
            "flag.delete": ("key",),
            "segment.delete": ("key",),
            "document.apply": ("document",),
            "release.start": ("plan",),
            PROMOTION: ("promotion",),
        }[action]
        given = {
            "key": request.key,
            "data": request.data,
            "document": request.document,
            "plan": request.plan,
            "promotion": request.promotion,
        }
        for name, value in given.items():
            if name in needs and value is None:
                problems.append(Problem(name, f"is required for {action}"))
            elif name not in needs and value is not None:
                problems.append(Problem(name, f"is not part of {action}"))
        if problems:
            raise Invalid(tuple(problems))
        if action == "release.start":
            plan = dict(request.plan or {})
            flag = plan.get("flag")
            return (flag if isinstance(flag, str) else ""), {"plan": plan}
        if action == "document.apply":
            return "", {"document": dict(request.document or {})}
        if action == PROMOTION:  # the source as it is when it runs is what is copied
            asked = PromotionRequest.from_data(request.promotion, "promotion.")
            return "", {"promotion": asked.as_data()}
        wanted = None if request.data is None else dict(request.data)
        return str(request.key), {"data": wanted}

    # -- reading -----------------------------------------------------------------------

    def list(self, project: str, env: str, state: str | None = None) -> list[Schedule]:
        check_state(state, STATES)
        with self.store.reading() as r:
            environment_id = require_environment(r, project, env)
            rows = r.schedules.in_environment(environment_id, state)
        return [Schedule(row, project, env) for row in rows]

    def get(self, project: str, env: str, schedule_id: str) -> Schedule:
        with self.store.reading() as r:
            environment_id = require_environment(r, project, env)
            row = _mine(r.schedules.get(schedule_id), environment_id, schedule_id)
        return Schedule(row, project, env)

    # -- cancelling --------------------------------------------------------------------

    def cancel(
        self, project: str, env: str, schedule_id: str, actor: str, reason: str | None = None
    ) -> Schedule:
        """Cancel a schedule that has not run; a schedule that ran cannot be (409)."""
        with self.store.unit_of_work() as work:
            environment_id = require_environment(work, project, env, lock=True)
            row = _mine(work.schedules.get(schedule_id, lock=True), environment_id, schedule_id)
            if row.state != PENDING:
                raise Conflict(f"schedule {row.id} is {row.state} already: it cannot be cancelled")
            now = self._clock()
            if not work.schedules.settle(row, CANCELLED, f"cancelled by {actor}", now):
                raise Conflict(f"schedule {row.id} changed meanwhile; read it again")
            work.record(
                actor=actor,
                action="schedule.cancelled",
                target=row.target or env,
                reason=reason,
                after={"schedule": row.id},
                environment_id=environment_id,
                versioned=False,
            )
            found = work.schedules.get(row.id)
            assert found is not None
            return Schedule(found, project, env)

    # -- running -----------------------------------------------------------------------

    def handler(self) -> Handler:
        """The job handler of ``schedule.run``."""

        def handle(job: Job, work: UnitOfWork) -> None:
            self._run(work, str(job.payload["schedule"]))

        return handle

    def _alarm(self, work: UnitOfWork, row: ScheduleRow) -> None:
        now = datetime.now(UTC)
        payload = {"schedule": row.id}
        work.jobs.add(SCHEDULE_RUN, payload, row.run_at, now, key=f"schedule:{row.id}")

    def _run(self, work: UnitOfWork, schedule_id: str) -> None:
        row = work.schedules.get(schedule_id)
        if row is None or row.state != PENDING:
            return  # cancelled (or run) meanwhile: nothing to do
        work.environments.lock(row.environment_id)
        row = work.schedules.get(schedule_id, lock=True)
        if row is None or row.state != PENDING:
            return
        keys = work.environments.keys_of(row.environment_id)
        if keys is None:
            return
        project, env = keys
        now = self._clock()
        before = self._current(work, row.environment_id, row.action, row.target)
        change = Change(schedule_actor(row.id), row.reason)
        try:
            with work.savepoint():  # all of it, or nothing of it
                written = self._write(
                    work,
                    project,
                    env,
                    row.action,
                    row.target,
                    row.change.get("base"),
                    _wanted(row),
                    change,
                )
        except UnveilError as exc:  # nothing of it is applied; the failure is told
            state, outcome, written = FAILED, f"not applied: {exc}", None
        else:
            state, outcome = APPLIED, "applied"
        if not work.schedules.settle(row, state, outcome, now):
            raise Conflict(f"schedule {row.id} changed meanwhile")
        work.record(
            actor=schedule_actor(row.id),
            action=f"schedule.{state}",
            target=row.target or env,
            reason=outcome if state == FAILED else row.reason,
            after={"schedule": row.id, "action": row.action, "outcome": outcome},
            environment_id=row.environment_id,
            versioned=False,
        )
        if state == APPLIED and row.until is not None and written is not None:
            undo = {"base": _written_value(row.action, written), **_undo(row.action, before)}
            undoing = work.schedules.add(
                environment_id=row.environment_id,
                action=row.action,
                target=row.target,
                change=undo,
                run_at=row.until,
                until=None,
                time_zone=row.time_zone,
                actor=schedule_actor(row.id),
                reason=f"end of {row.id}" + (f": {row.reason}" if row.reason else ""),
                now=now,
                undoes=row.id,
            )
            self._alarm(work, undoing)

    # -- the changes themselves ----------------------------------------------------------

    def _current(self, work: UnitOfWork, environment_id: int, action: str, target: str) -> Any:
        part = ACTIONS[action]
        if part is not None:
            item = work.items(part).get(environment_id, target)
            return None if item is None else item.data
        if action == "document.apply":
            return environment_items(work, environment_id)
        return None

    def _write(
        self,
        work: UnitOfWork,
        project: str,
        env: str,
        action: str,
        target: str,
        base: Any,
        wanted: dict[str, Any],
        change: Change,
    ) -> dict[str, Any]:
        """Carry the change out (merged with what changed since ``base``); what was written."""
        part = ACTIONS[action]
        environment_id = require_environment(work, project, env, lock=True)
        if part is not None:
            what = f"{part.removesuffix('s')} '{target}'"
            item = work.items(part).get(environment_id, target)
            current = None if item is None else item.data
            new = _merge(base, wanted.get("data"), current, what)
            if new == current:
                return {"data": current}
            if new is None:
                assert item is not None
                self.flags.delete_item(
                    part, project, env, target, change, item.version, within=work
                )
                return {"data": None}
            record = self.flags.put_item(
                part,
                project,
                env,
                target,
                new,
                change,
                None if item is None else item.version,
                create_only=item is None,
                within=work,
            )
            return {"data": record.data}
        if action == "document.apply":
            current_doc = self._current(work, environment_id, action, target)
            merged = _merge_document(base, wanted["document"], current_doc)
            self.flags.apply_document(project, env, merged, change, within=work)
            return {"document": self._current(work, environment_id, action, target)}
        if action == PROMOTION:
            request = PromotionRequest.from_data(wanted["promotion"])
            done = self.promotions.apply(project, env, request, change, within=work)
            return {"promotion": wanted["promotion"], "copied": done.as_data()["flags"]}
        release = self.releases.start(project, env, wanted["plan"], change.actor, within=work)
        return {"plan": wanted["plan"], "release": release.id}


def _wanted(row: ScheduleRow) -> dict[str, Any]:
    return {k: v for k, v in row.change.items() if k != "base"}


def _written_value(action: str, written: Mapping[str, Any]) -> Any:
    return written.get("document") if action == "document.apply" else written.get("data")


def _undo(action: str, before: Any) -> dict[str, Any]:
    return {"document": before} if action == "document.apply" else {"data": before}


def _merge_document(
    base: Mapping[str, Any] | None, wanted: Mapping[str, Any], current: Mapping[str, Any]
) -> dict[str, Any]:
    """The document's changes applied key by key to what is there now, or Conflict."""
    out: dict[str, Any] = {"version": 1}
    for part in ("flags", "segments"):
        before = dict((base or {}).get(part) or {})
        goal = dict(wanted.get(part) or {})
        now = dict(current.get(part) or {})
        merged = dict(now)
        for key in {*before, *goal}:
            if before.get(key) == goal.get(key):
                continue  # the document leaves this one as it was
            singular = part[:-1]
            value = _merge(before.get(key), goal.get(key), now.get(key), f"{singular} '{key}'")
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        out[part] = merged
    return out


def _mine(row: ScheduleRow | None, environment_id: int, schedule_id: str) -> ScheduleRow:
    if row is None or row.environment_id != environment_id:
        raise NotFound(f"no schedule '{schedule_id}' in this environment")
    return row
