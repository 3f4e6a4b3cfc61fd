"""Deploys beside releases: what code runs where, whether it was verified, and what follows.

A deploy is a technical fact (a version of a service is on an
environment's servers); a release is a business decision (users get a
flag's variant). This records the first, verifies it (the CLI runs the
checks and hands the result here), and reads both together:

- a deploy of a version older than the current one, or one recorded as a
  rollback, is a *deploy rollback*. Versions compare as semver when both
  parse, otherwise by the order in which they were first deployed here;
  a version never deployed before is newer;
- when a deploy rollback takes away the code of a flag that was released
  after that code arrived (and no other service's current deploy still
  carries it), the release follows: the environment's setting says
  whether the flag is switched off (audited, its reason naming the
  deploy), kept, or a change request to switch it off is opened;
- the timeline of an environment: deploys, verifications, flag changes,
  release decisions and applied schedules from the audit log, in order;
- the status: what is deployed dark (code references a flag that is not
  released to anyone) and what is released without code (a flag on that
  no current deploy references).

Every write is one unit of work: the deploy, its audit entry and the
outbox row that announces it (``deploy.recorded``, ``deploy.rolled_back``,
``deploy.verified``), and the flag switch-off a rollback causes, commit
together.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from unveil.core import Problem
from unveil.core.semver import parse_semver
from unveil.service.errors import Invalid, NotFound
from unveil.service.flags import Change, FlagService
from unveil.service.scope import require_environment, require_project
from unveil.service.text import text_problem
from unveil.store.deploys import DeployRow, ServiceRow
from unveil.store.unit import Reading, Store, UnitOfWork

__all__ = [
    "MAX_LOCATIONS",
    "MAX_REFERENCE_FLAGS",
    "ON_ROLLBACK",
    "DeployRequest",
    "DeployService",
    "Verification",
    "deploy_actor",
    "is_released",
]

#: what a deploy rollback does to a flag whose code it takes away (the first is the default)
ON_ROLLBACK = ("off", "keep", "ask")
MAX_REFERENCE_FLAGS = 10_000
MAX_LOCATIONS = 100_000
MAX_LOCATION = 1000
MAX_VERSION = 200
MAX_COMMIT = 100
MAX_LINK = 2000
MAX_CHECKS = 100
MAX_EVIDENCE_BYTES = 256 * 1024
#: how far back a deploy's time may be given (backfilling what CI did earlier)
MAX_BACKDATE = timedelta(days=30)
_GRACE = timedelta(seconds=5)
RESULTS = ("passed", "failed")
#: audit actions the timeline shows, by the side of the two moments they belong to
_TIMELINE = {
    "deploy.recorded": "deploy",
    "deploy.rolled_back": "deploy",
    "deploy.verified": "deploy",
    "flag.create": "release",
    "flag.update": "release",
    "flag.delete": "release",
    "document.apply": "release",
    "release.started": "release",
    "release.advanced": "release",
    "release.paused": "release",
    "release.resumed": "release",
    "release.rolled_back": "release",
    "release.aborted": "release",
    "release.completed": "release",
    "schedule.applied": "release",
    "schedule.failed": "release",
    "change.opened": "release",
    "change.approved": "release",
    "launch.started": "release",  # (launch.done changes no flag: its release's
    "launch.stopped": "release",  # completion is on the timeline already)
}
#: who a launch's own flag changes are by (``service.launches.launch_actor``): the
#: launch's mark stands for them, so that a launch is one mark, not one per flag
_LAUNCH_ACTOR = "launch:"
_Clock = Callable[[], datetime]


def deploy_actor(deploy_id: str) -> str:
    """Who the audit log says switched a flag off because of a deploy rollback."""
    return f"deploy:{deploy_id}"


@dataclass(frozen=True, slots=True)
class DeployRequest:
    """A deploy as the API and the CLI hand it over."""

    service: str
    version: str | None = None
    commit: str | None = None
    link: str | None = None
    references: Mapping[str, Sequence[str]] | None = None
    rollback: bool = False
    at: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Verification:
    """The result of ``unveil deploy verify``: passed or failed, and every check's evidence."""

    result: str
    checks: Sequence[Mapping[str, Any]] = field(default_factory=tuple)
    reason: str | None = None


def _iso(value: datetime) -> str:
    return _aware(value).isoformat()


def deploy_data(row: DeployRow, project: str, env: str) -> dict[str, Any]:
    """A deploy as the API shows it."""
    return {
        "id": row.id,
        "project": project,
        "environment": env,
        "service": row.service,
        "version": row.version,
        "commit": row.commit,
        "link": row.link,
        "actor": row.actor,
        "reason": row.reason,
        "at": _iso(row.at),
        "rollback": row.rollback,
        "previous": row.previous,
        "flags": sorted(row.references),
        "references": row.references if row.scanned else None,
        "verification": row.verification,
        "verified": row.verified,
    }


def _audited(data: Mapping[str, Any]) -> dict[str, Any]:
    """A deploy as the audit log keeps it: its flags, not every place they are used.

    The places (up to 100,000) stay on the deploy itself; the audit log and
    the timeline read from it stay small.
    """
    return {k: v for k, v in data.items() if k != "references"}


def _service_data(row: ServiceRow) -> dict[str, Any]:
    return {"name": row.name, "owner": row.owner, "created_at": _iso(row.created_at)}


# -- what a flag serves ------------------------------------------------------------------


def _serves_on(served: Any, off: Any) -> bool:
    """Whether a serve (a variant name or a rollout) gives anyone a variant other than off."""
    if isinstance(served, str):
        return bool(served != off)
    if isinstance(served, Mapping) and isinstance(served.get("rollout"), Mapping):
        return any(k != off and _positive(v) for k, v in served["rollout"].items())
    return False


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def is_released(data: Mapping[str, Any] | None) -> bool:
    """Whether a flag (its flags-file form) serves anyone a variant other than its off variant.

    A flag that is off (its kill switch), or whose default, rules and
    targets all serve the off variant, is released to nobody.
    """
    if not isinstance(data, Mapping) or data.get("enabled", True) is False:
        return False
    off = data.get("off_variant", "off")
    if _serves_on(data.get("default"), off):
        return True
    for rule in data.get("rules") or ():
        if isinstance(rule, Mapping) and _serves_on(rule.get("serve"), off):
            return True
    targets = data.get("targets")
    if isinstance(targets, Mapping):
        return any(k != off and bool(v) for k, v in targets.items())
    return False


# -- checking input ------------------------------------------------------------------------


def _text(value: object, name: str, limit: int, problems: list[Problem]) -> None:
    if value is None:
        return
    problem = text_problem(value, name, limit)
    if problem is not None:
        problems.append(problem)
    elif isinstance(value, str) and any(c.isspace() for c in value):
        problems.append(Problem(name, "must not contain spaces"))


def _link_problem(link: str) -> Problem | None:
    problem = text_problem(link, "link", MAX_LINK)
    if problem is not None:
        return problem
    try:
        parts = urlsplit(link)
    except ValueError as exc:
        return Problem("link", f"is not a URL: {exc}")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return Problem("link", "must be an http:// or https:// URL")
    return None


def _reference_problems(refs: object) -> list[Problem]:
    """What is wrong with a deploy's references ({"flag": ["path:line", ...]})."""
    if not isinstance(refs, Mapping):
        return [Problem("references", "must be an object of flag key -> list of 'path:line'")]
    if len(refs) > MAX_REFERENCE_FLAGS:
        return [Problem("references", f"at most {MAX_REFERENCE_FLAGS} flags")]
    if _all_fine(refs):  # the common case, checked in one pass over all the text
        return []
    problems: list[Problem] = []
    total = 0
    for key, places in refs.items():
        where = f"references.{key}"
        problem = text_problem(key, where, 200)
        if problem is not None:
            problems.append(Problem(where, f"the flag key {problem.message}"))
        if not isinstance(places, Sequence) or isinstance(places, str):
            problems.append(Problem(where, "must be a list of 'path:line'"))
            continue
        total += len(places)
        for i, place in enumerate(places):
            problem = text_problem(place, f"{where}[{i}]", MAX_LOCATION)
            if problem is not None:
                problems.append(problem)
        if len(problems) > 20:
            break
    if total > MAX_LOCATIONS:
        problems.append(Problem("references", f"at most {MAX_LOCATIONS} locations in all"))
    return problems


def _all_fine(refs: Mapping[Any, Any]) -> bool:
    """Whether every key and location is good text, without naming what is not (fast)."""
    texts: list[str] = []
    total = 0
    for key, places in refs.items():
        if not isinstance(key, str) or not 0 < len(key) <= 200:
            return False
        if not isinstance(places, list):
            return False
        for place in places:
            if not isinstance(place, str) or not 0 < len(place) <= MAX_LOCATION:
                return False
        total += len(places)
        texts.append(key)
        texts.extend(places)
    if total > MAX_LOCATIONS:
        return False
    joined = " ".join(texts)
    return not joined or text_problem(joined, "references", len(joined)) is None


class DeployService:
    """Record and verify deploys; read the timeline and the status they make with releases."""

    def __init__(
        self, store: Store, flags: FlagService, clock: _Clock = lambda: datetime.now(UTC)
    ) -> None:
        self.store = store
        self.flags = flags
        self._clock = clock

    # -- services ---------------------------------------------------------------------------

    def put_service(
        self, project: str, name: str, owner: str | None, actor: str
    ) -> tuple[dict[str, Any], bool]:
        """Create a service (or change its owner); the service, and whether it was created."""
        problems: list[Problem] = []
        _text(name, "name", 200, problems)
        if owner is not None:
            problem = text_problem(owner, "owner", 200)
            if problem is not None:
                problems.append(problem)
        if problems:
            raise Invalid(tuple(problems))
        with self.store.unit_of_work() as work:
            project_id = require_project(work, project)
            found = work.deploys.service(project_id, name)
            if found is not None:
                if found.owner == owner:
                    return _service_data(found), False
                work.deploys.set_owner(found.id, owner)
                action, before = "service.updated", _service_data(found)
            else:
                work.deploys.add_service(project_id, name, owner, actor, self._clock())
                action, before = "service.created", None
            row = work.deploys.service(project_id, name)
            assert row is not None
            work.record(
                actor=actor,
                action=action,
                target=f"{project}/service:{name}",
                before=before,
                after=_service_data(row),
            )
            return _service_data(row), found is None

    def services(self, project: str) -> list[dict[str, Any]]:
        with self.store.reading() as r:
            project_id = require_project(r, project)
            return [_service_data(s) for s in r.deploys.services(project_id)]

    # -- the setting ------------------------------------------------------------------------

    def on_rollback(self, project: str, env: str) -> str:
        with self.store.reading() as r:
            environment_id = require_environment(r, project, env)
            return r.settings.on_deploy_rollback(environment_id) or ON_ROLLBACK[0]

    def set_on_rollback(self, project: str, env: str, value: str, actor: str) -> str:
        if value not in ON_ROLLBACK:
            known = ", ".join(ON_ROLLBACK)
            raise Invalid((Problem("on_deploy_rollback", f"must be one of {known}"),))
        with self.store.unit_of_work() as work:
            environment_id = require_environment(work, project, env, lock=True)
            before = work.settings.on_deploy_rollback(environment_id) or ON_ROLLBACK[0]
            work.settings.set_on_deploy_rollback(environment_id, value)
            work.record(
                actor=actor,
                action="settings.updated",
                target=env,
                before={"on_deploy_rollback": before},
                after={"on_deploy_rollback": value},
                environment_id=environment_id,
                versioned=False,
            )
        return value

    # -- recording --------------------------------------------------------------------------

    def record(self, project: str, env: str, request: DeployRequest, actor: str) -> dict[str, Any]:
        """Record a deploy; a deploy rollback (an older version, or asked) lets releases follow."""
        now = self._clock()
        at = self._checked(request, now)
        with self.store.unit_of_work() as work:
            environment_id = require_environment(work, project, env, lock=True)
            project_id = require_project(work, project)
            service = work.deploys.service(project_id, request.service)
            if service is None:
                raise NotFound(
                    f"service: no service '{request.service}' in project '{project}' "
                    "(create it first: PUT .../services/{name} or unveil deploy service)"
                )
            current = work.deploys.latest(environment_id, service.id)
            version, references = self._what(work, environment_id, service, current, request)
            rollback = request.rollback or (
                current is not None
                and _older(
                    version, current.version, work.deploys.versions(environment_id, service.id)
                )
            )
            row = work.deploys.add(
                environment_id=environment_id,
                service_id=service.id,
                version=version,
                commit=request.commit,
                link=request.link,
                actor=actor,
                reason=request.reason,
                at=at,
                references=references,
                rollback=bool(rollback),
                previous=None if current is None else current.id,
                now=now,
            )
            data = deploy_data(row, project, env)
            work.record(
                actor=actor,
                action="deploy.rolled_back" if rollback else "deploy.recorded",
                target=f"service:{service.name}",
                reason=request.reason,
                before=None if current is None else _audited(deploy_data(current, project, env)),
                after=_audited(data),
                environment_id=environment_id,
                versioned=False,
            )
            followed: list[dict[str, Any]] = []
            if rollback and current is not None:
                followed = self._follow(work, project, env, environment_id, row, current)
            return {**data, "release_follows": followed}

    def _checked(self, request: DeployRequest, now: datetime) -> datetime:
        """The deploy's time, or every problem with the request."""
        problems: list[Problem] = []
        _text(request.service, "service", 200, problems)
        if request.version is None and not request.rollback:
            problems.append(Problem("version", "is required"))
        _text(request.version, "version", MAX_VERSION, problems)
        _text(request.commit, "commit", MAX_COMMIT, problems)
        if request.link is not None:
            problem = _link_problem(request.link)
            if problem is not None:
                problems.append(problem)
        if request.references is not None:
            problems += _reference_problems(request.references)
        if request.reason is not None:
            problem = text_problem(request.reason, "reason", 1000, multiline=True)
            if problem is not None:
                problems.append(problem)
        at = now
        if request.at is not None:
            try:
                at = datetime.fromisoformat(request.at)
            except (TypeError, ValueError):
                problems.append(Problem("at", "must be an RFC 3339 time with its offset"))
            else:
                if at.tzinfo is None:
                    problems.append(Problem("at", "needs its offset (2026-12-01T10:00:00+00:00)"))
                elif at > now + _GRACE:
                    problems.append(Problem("at", "is in the future"))
                elif at < now - MAX_BACKDATE:
                    problems.append(Problem("at", "is more than 30 days ago"))
        if problems:
            raise Invalid(tuple(problems))
        return at.astimezone(UTC)

    @staticmethod
    def _what(
        work: UnitOfWork,
        environment_id: int,
        service: ServiceRow,
        current: DeployRow | None,
        request: DeployRequest,
    ) -> tuple[str, dict[str, list[str]] | None]:
        """The version deployed and its references (a rollback's default: the one before).

        None: not known (not scanned, and the version was never deployed here scanned).
        """
        version = request.version
        if version is None:  # a rollback without a version: back to the last older one
            version = _previous_version(work, environment_id, service, current)
        if request.references is not None:
            given = request.references
            return version, {k: v if isinstance(v, list) else list(v) for k, v in given.items()}
        # not scanned: the code of a version deployed before carries what it carried then
        for earlier in work.deploys.in_environment(environment_id, service.id, limit=1000):
            if earlier.version == version:
                return version, earlier.references if earlier.scanned else None
        return version, None

    def _follow(
        self,
        work: UnitOfWork,
        project: str,
        env: str,
        environment_id: int,
        deploy: DeployRow,
        replaced: DeployRow,
    ) -> list[dict[str, Any]]:
        """Let releases follow a deploy rollback: what happened to each flag it took away."""
        if not deploy.scanned:  # what the code it went back to references is not known
            return []
        gone = sorted(set(replaced.references) - set(deploy.references))
        if not gone:
            return []
        policy = work.settings.on_deploy_rollback(environment_id) or ON_ROLLBACK[0]
        elsewhere = {
            flag
            for d in work.deploys.current(environment_id)
            if d.service != deploy.service
            for flag in d.references
        }
        history = work.deploys.in_environment(environment_id, None, limit=1000)
        mine = [d for d in history if d.service == deploy.service and d.id != deploy.id]
        outcomes: list[dict[str, Any]] = []
        for flag in gone:
            item = work.flags.get(environment_id, flag)
            if item is None or not is_released(item.data) or flag in elsewhere:
                continue
            arrived = _arrival(mine, flag)
            released_at = _released_at(work, environment_id, flag)
            if arrived is None or released_at is None or released_at < _aware(arrived.created_at):
                continue  # released before this code came: the release is not the code's
            reason = (
                f"deploy {deploy.id} rolled {deploy.service} back to {deploy.version}, whose code "
                f"does not reference '{flag}' (released after {arrived.id}, "
                f"version {arrived.version}, brought it)"
            )
            off = {**item.data, "enabled": False}
            outcome: dict[str, Any] = {"flag": flag, "action": policy, "reason": reason}
            if policy == "off":
                self.flags.put_item(
                    "flags",
                    project,
                    env,
                    flag,
                    off,
                    Change(deploy_actor(deploy.id), reason),
                    item.version,
                    within=work,
                )
            elif policy == "ask":
                request = work.changes.add(
                    environment_id=environment_id,
                    action="flag.put",
                    target=flag,
                    payload={"data": off},
                    diff={"before": item.data, "after": off},
                    base_version=item.version,
                    requester=deploy_actor(deploy.id),
                    reason=reason,
                    now=self._clock(),
                )
                work.record(
                    actor=deploy_actor(deploy.id),
                    action="change.opened",
                    target=flag,
                    reason=reason,
                    after={
                        "change_request": request.id,
                        "action": "flag.put",
                        "requester": deploy_actor(deploy.id),
                    },
                    environment_id=environment_id,
                    versioned=False,
                )
                outcome["change_request"] = request.id
            outcomes.append(outcome)
        return outcomes

    # -- verifying --------------------------------------------------------------------------

    def verify(
        self, project: str, env: str, deploy_id: str, result: Verification, actor: str
    ) -> dict[str, Any]:
        """Store a verification's result and evidence on the deploy, and announce it."""
        problems: list[Problem] = []
        if result.result not in RESULTS:
            problems.append(Problem("result", f"must be one of {', '.join(RESULTS)}"))
        checks = list(result.checks)
        if not checks:
            problems.append(Problem("checks", "at least one check"))
        if len(checks) > MAX_CHECKS:
            problems.append(Problem("checks", f"at most {MAX_CHECKS}"))
        for i, check in enumerate(checks):
            if not isinstance(check, Mapping) or not isinstance(check.get("passed"), bool):
                problems.append(Problem(f"checks[{i}].passed", "must be true or false"))
            elif not isinstance(check.get("name"), str):
                problems.append(Problem(f"checks[{i}].name", "must be text"))
        if not problems:
            failed = any(not c["passed"] for c in checks)
            if failed != (result.result == "failed"):
                problems.append(Problem("result", "must be 'failed' exactly when a check failed"))
        if len(json.dumps(checks, default=str)) > MAX_EVIDENCE_BYTES:
            problems.append(Problem("checks", f"evidence of at most {MAX_EVIDENCE_BYTES} bytes"))
        if problems:
            raise Invalid(tuple(problems))
        with self.store.unit_of_work() as work:
            environment_id = require_environment(work, project, env, lock=True)
            row = work.deploys.get(deploy_id)
            if row is None or row.environment_id != environment_id:
                raise NotFound(f"no deploy '{deploy_id}' in this environment")
            evidence = {
                "result": result.result,
                "checks": checks,
                "verified_by": actor,
                "at": self._clock().isoformat(),
            }
            work.deploys.verify(row.id, result.result, evidence)
            work.record(
                actor=actor,
                action="deploy.verified",
                target=f"service:{row.service}",
                reason=result.reason,
                after={
                    "deploy": row.id,
                    "service": row.service,
                    "version": row.version,
                    "result": result.result,
                    "checks": checks,
                },
                environment_id=environment_id,
                versioned=False,
            )
            found = work.deploys.get(row.id)
            assert found is not None
            return deploy_data(found, project, env)

    # -- reading ----------------------------------------------------------------------------

    def get(self, project: str, env: str, deploy_id: str) -> dict[str, Any]:
        with self.store.reading() as r:
            environment_id = require_environment(r, project, env)
            row = r.deploys.get(deploy_id)
            if row is None or row.environment_id != environment_id:
                raise NotFound(f"no deploy '{deploy_id}' in this environment")
        return deploy_data(row, project, env)

    def timeline(self, project: str, env: str, limit: int = 200) -> list[dict[str, Any]]:
        """Deploys and releases of the environment in one order (oldest first), who and why."""
        limit = _limit(limit, 1000)
        with self.store.reading() as r:
            environment_id = require_environment(r, project, env)
            entries = r.deploys.timeline_entries(
                environment_id, tuple(_TIMELINE), limit, hidden_actor=_LAUNCH_ACTOR
            )
            verified = {
                d.id: d.verified for d in r.deploys.in_environment(environment_id, None, 1000)
            }
        return [_mark(e, verified) for e in entries]

    def status(self, project: str, env: str) -> dict[str, Any]:
        """What runs, and what deploys and releases together tell: dark, and without code."""
        with self.store.reading() as r:
            environment_id = require_environment(r, project, env)
            return status_of(r, environment_id, project, env)

    def list(
        self, project: str, env: str, service: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The environment's deploys (of one service), newest first."""
        limit = _limit(limit)
        with self.store.reading() as r:
            environment_id = require_environment(r, project, env)
            service_id = None
            if service is not None:
                found = r.deploys.service(require_project(r, project), service)
                if found is None:
                    raise NotFound(f"service: no service '{service}' in project '{project}'")
                service_id = found.id
            rows = r.deploys.in_environment(environment_id, service_id, limit)
        return [deploy_data(row, project, env) for row in rows]


def status_of(r: Reading, environment_id: int, project: str, env: str) -> dict[str, Any]:
    """The status of one environment (see ``DeployService.status``)."""
    current = r.deploys.current(environment_id)
    flags = {i.key: i.data for i in r.flags.all(environment_id)}
    carried: dict[str, list[str]] = {}
    for d in current:
        for flag in d.references:
            carried.setdefault(flag, []).append(d.service)
    dark = [
        {
            "flag": flag,
            "services": sorted(services),
            "exists": flag in flags,
            "why": (
                "referenced by deployed code, not released to anyone"
                if flag in flags
                else "referenced by deployed code, no such flag in this environment"
            ),
        }
        for flag, services in sorted(carried.items())
        if not is_released(flags.get(flag))
    ]
    scanned = any(d.scanned for d in current)
    without_code = (
        [
            {"flag": key, "why": "released, but no current deploy references it"}
            for key, data in sorted(flags.items())
            if is_released(data) and key not in carried
        ]
        if scanned
        else []
    )
    return {
        "project": project,
        "environment": env,
        "services": [
            {
                "service": d.service,
                "deploy": d.id,
                "version": d.version,
                "commit": d.commit,
                "at": _iso(d.at),
                "rollback": d.rollback,
                "verified": d.verified,
                "flags": sorted(d.references),
                "scanned": d.scanned,
            }
            for d in current
        ],
        "deployed_dark": dark,
        "released_without_code": without_code,
        "scanned": scanned,
    }


# -- helpers ----------------------------------------------------------------------------------


def _previous_version(
    work: UnitOfWork, environment_id: int, service: ServiceRow, current: DeployRow | None
) -> str:
    """The version of the latest deploy before the current one that is older than it.

    (Not simply the deploy before: after a rollback, that one is the newer
    version rolled back from.)
    """
    if current is not None:
        order = work.deploys.versions(environment_id, service.id)
        for earlier in work.deploys.in_environment(environment_id, service.id, limit=1000):
            if _older(earlier.version, current.version, order):
                return earlier.version
    raise Invalid(
        (Problem("version", f"service '{service.name}' has no older version deployed here"),)
    )


def _limit(limit: int, most: int = 1000) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= most:
        raise Invalid((Problem("limit", f"must be a whole number from 1 to {most}"),))
    return limit


def _older(version: str, current: str, order: Sequence[str]) -> bool:
    """Whether ``version`` is older than ``current``: semver when both parse, else by order.

    By order: a version first deployed before the current one was is older;
    a version never deployed here is newer.
    """
    a, b = parse_semver(version), parse_semver(current)
    if a is not None and b is not None:
        return a < b
    if version == current or version not in order or current not in order:
        return False
    return order.index(version) < order.index(current)


def _arrival(history: Sequence[DeployRow], flag: str) -> DeployRow | None:
    """The deploy that brought the flag's code in the latest unbroken run carrying it.

    ``history`` is the service's deploys newest first (without the rollback itself).
    """
    arrived = None
    for d in history:
        if flag not in d.references:
            break
        arrived = d
    return arrived


def _aware(value: datetime) -> datetime:
    """A stored time with its zone (SQLite gives them back without, always UTC)."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _loads(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return None


def _released_at(r: Reading, environment_id: int, flag: str) -> datetime | None:
    """When the flag last went from released to nobody to released to someone."""
    last = None
    for entry in r.audit.read(environment_id, target=flag):
        if not str(entry["action"]).startswith("flag."):
            continue
        before, after = _loads(entry["before"]), _loads(entry["after"])
        if is_released(after) and not is_released(before):
            last = datetime.fromisoformat(str(entry["at"]))
    return last


def _summary(action: str, target: str, before: Any, after: Any) -> str:
    """One line saying what a mark of the timeline was."""
    if action.startswith("deploy.") and isinstance(after, Mapping):
        service, version = after.get("service"), after.get("version")
        if action == "deploy.verified":
            return f"{service} {version}: verification {after.get('result')}"
        verb = "rolled back to" if action == "deploy.rolled_back" else "deployed"
        commit = f" ({after['commit']})" if after.get("commit") else ""
        return f"{service} {verb} {version}{commit}"
    if action.startswith("flag."):
        if action == "flag.create":
            return f"flag {target} created" + (" released" if is_released(after) else "")
        if action == "flag.delete":
            return f"flag {target} deleted"
        if is_released(before) and not is_released(after):
            return f"flag {target} switched off"
        if is_released(after) and not is_released(before):
            return f"flag {target} released"
        return f"flag {target} changed"
    if action.startswith("launch.") and isinstance(after, Mapping):
        what = action.removeprefix("launch.")
        flags = ", ".join(str(f) for f in after.get("flags") or [])
        return f"launch '{after.get('name')}' ({target}) {what}" + (f": {flags}" if flags else "")
    return f"{action} {target}".strip()


def _mark(entry: Mapping[str, Any], verified: Mapping[str, str | None]) -> dict[str, Any]:
    action, target = str(entry["action"]), str(entry["target"])
    before, after = _loads(entry["before"]), _loads(entry["after"])
    mark: dict[str, Any] = {
        "at": entry["at"],
        "kind": _TIMELINE.get(action, "release"),
        "action": action,
        "target": target,
        "actor": entry["actor"],
        "reason": entry["reason"],
        "summary": _summary(action, target, before, after),
    }
    if action in ("deploy.recorded", "deploy.rolled_back") and isinstance(after, Mapping):
        deploy_id = after.get("id")
        mark["deploy"] = deploy_id
        mark["verified"] = verified.get(str(deploy_id))
        mark["flags"] = after.get("flags", [])
    if action == "deploy.verified" and isinstance(after, Mapping):
        mark["deploy"] = after.get("deploy")
        mark["result"] = after.get("result")
        mark["checks"] = after.get("checks")
    return mark
