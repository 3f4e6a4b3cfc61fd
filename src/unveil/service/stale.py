"""Stale flags: clean-up candidates per environment, each with its reasons.

A flag is a clean-up candidate in an environment when any of these holds
(N is the project's ``stale_after_days``, 30 unless set):

- ``rolled_out``: its configuration serves one variant to everyone
  (``core/served.py``) and has done so for more than N days. "Since when"
  comes from the audit log: the time its current version was written, walked
  back through its earlier writes for as long as each of them also served
  that one variant and the history is unbroken (the version before a write is
  exactly what the write before it wrote). A write the walk cannot see (a
  whole-document apply) ends it, so the date is never earlier than the truth.
- ``not_evaluated``: no SDK reported an exposure of it in the last N days
  (the event counts the server keeps, service/events.py), and it is older
  than N days.
- ``past_lifetime``: its metadata gives it a type with an expected lifetime
  (release and experiment: 40 days unless told otherwise; operational,
  kill-switch and permission flags have none) and it is older than that.
- ``not_deployed``: services have deploys in the environment whose scans
  found flag references, and none of those latest deploys refers to it
  (store/deploys.py ``latest_references``). A latest deploy that carries no
  references at all (recorded without ``--scan``) is left out: it cannot
  tell a flag that is gone from code that was never scanned.

A flag's age in an environment is the earlier of its first own creation in
the audit log and its metadata's creation; a flag only ever written by
whole-document applies counts from its last change (later, never earlier).

The leader runs ``check`` as a recurring job: a flag found stale is marked
(``stale_flags``) and the mark is recorded in the same unit of work as the
job's finish, with an audit entry and an outbox row that webhooks deliver as
``flag.stale``. The mark's primary key and the fenced finish make it once:
a flag that stays stale is not announced again; one that stops being stale
loses its mark (audited, not announced) and is announced again if it becomes
stale later.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from unveil.core import Problem
from unveil.core.served import flag_alone, only_variant
from unveil.service.documents import stored_document
from unveil.service.errors import Invalid
from unveil.service.events import EXPOSURE
from unveil.service.scope import require_environment, require_project
from unveil.store.events import EventCounts
from unveil.store.stale import FlagWrite
from unveil.store.unit import Reading, Store, UnitOfWork

__all__ = [
    "DEFAULT_STALE_AFTER_DAYS",
    "REASONS",
    "STALE_ACTOR",
    "STALE_CHECK",
    "StaleFlag",
    "StaleReason",
    "StaleService",
]

log = logging.getLogger("unveil.service.stale")

#: N, where a project did not set it.
DEFAULT_STALE_AFTER_DAYS = 30
MAX_STALE_AFTER_DAYS = 3650
#: The reasons, in the order they are listed.
REASONS = ("rolled_out", "not_evaluated", "past_lifetime", "not_deployed")
#: The recurring job's kind, and who the audit log says marked a flag.
STALE_CHECK = "flags.find_stale"
STALE_ACTOR = "unveil (stale flags)"
#: How many of a flag's own writes the "since when" walk reads at most.
_HISTORY = 50

Clock = Callable[[], datetime]
#: Service name -> that service's latest deploy references ({flag: [path:line]}).
DeployedReferences = Callable[[Reading, int], Mapping[str, Mapping[str, list[str]]]]


@dataclass(frozen=True, slots=True)
class StaleReason:
    """One reason a flag is a clean-up candidate, since when, in words."""

    code: str
    since: datetime | None
    text: str

    def as_data(self) -> dict[str, Any]:
        since = None if self.since is None else self.since.isoformat()
        return {"code": self.code, "since": since, "text": self.text}


@dataclass(frozen=True, slots=True)
class StaleFlag:
    """A clean-up candidate: its reasons, and where deployed code still refers to it."""

    key: str
    reasons: tuple[StaleReason, ...]
    #: service -> the locations (path:line) its latest deploy's scan found
    references: dict[str, list[str]] = field(default_factory=dict)
    #: when the leader found it stale and announced it (None: not yet)
    found_at: datetime | None = None

    def as_data(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "reasons": [r.as_data() for r in self.reasons],
            "references": self.references,
            "found_at": None if self.found_at is None else self.found_at.isoformat(),
        }


def _no_deploys(_reading: Reading, _environment_id: int) -> dict[str, dict[str, list[str]]]:
    """No deploy records in this build: the ``not_deployed`` criterion never holds."""
    return {}


def _day(at: datetime) -> str:
    return at.date().isoformat()


class StaleService:
    """The stale-flag report, the project setting N, and the leader's recurring check."""

    def __init__(
        self,
        store: Store,
        counts: EventCounts,
        deployed: DeployedReferences = _no_deploys,
        clock: Clock = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.counts = counts
        self._deployed = deployed
        self._clock = clock

    # -- the setting --------------------------------------------------------------------

    def settings(self, project: str) -> dict[str, Any]:
        """The project's stale-flag setting (N in days)."""
        with self.store.reading() as r:
            days = r.stale.stale_after_days(require_project(r, project))
        return {"stale_after_days": DEFAULT_STALE_AFTER_DAYS if days is None else days}

    def set_settings(self, project: str, data: Mapping[str, Any], actor: str) -> dict[str, Any]:
        """Set N; ``Invalid`` names the field. Audited as ``project.settings``."""
        problems = [Problem(k, "unknown field") for k in data if k != "stale_after_days"]
        days = data.get("stale_after_days")
        if (
            not isinstance(days, int)
            or isinstance(days, bool)
            or not 1 <= days <= MAX_STALE_AFTER_DAYS
        ):
            problems.append(
                Problem(
                    "stale_after_days",
                    f"must be a whole number of days, 1 to {MAX_STALE_AFTER_DAYS}",
                )
            )
        if problems:
            raise Invalid(tuple(problems))
        assert isinstance(days, int)
        with self.store.unit_of_work() as work:
            project_id = require_project(work, project)
            stored = work.stale.stale_after_days(project_id)
            before = DEFAULT_STALE_AFTER_DAYS if stored is None else stored
            if stored != days:
                work.stale.set_stale_after_days(project_id, days)
                work.record(
                    actor=actor,
                    action="project.settings",
                    target=project,
                    before={"stale_after_days": before},
                    after={"stale_after_days": days},
                )
        return {"stale_after_days": days}

    # -- the report ---------------------------------------------------------------------

    def report(self, project: str, env: str) -> dict[str, Any]:
        """The environment's stale flags now, with N and when each was announced."""
        with self.store.reading() as r:
            project_id = require_project(r, project)
            environment_id = require_environment(r, project, env)
            days = _days(r, project_id)
            found = self._find(r, project_id, environment_id, days)
            marks = r.stale.marks(environment_id)
        shown = [
            StaleFlag(
                s.key,
                s.reasons,
                s.references,
                marks[s.key].found_at if s.key in marks else None,
            )
            for s in found
        ]
        return {"stale_after_days": days, "flags": [s.as_data() for s in shown]}

    def _find(self, r: Reading, project_id: int, environment_id: int, days: int) -> list[StaleFlag]:
        """Every flag of the environment that meets a criterion, by key."""
        now = self._clock()
        horizon = now - timedelta(days=days)
        items = {item.key: item for item in r.flags.all(environment_id)}
        if not items:
            return []
        document = stored_document(r, environment_id)
        written = r.stale.written_at(environment_id, {i.version for i in items.values()})
        created = r.stale.created_at(environment_id)
        meta = r.stale.metadata(project_id)
        # a latest deploy with no references was not scanned (or uses no flags): it says nothing
        deployed = {s: refs for s, refs in self._deployed(r, environment_id).items() if refs}
        evaluated = self.counts.evaluated_since(environment_id, EXPOSURE, horizon)
        ages: dict[str, datetime | None] = {}
        for key, item in items.items():
            starts = [at for at in (created.get(key), written.get(item.version)) if at]
            if key in meta:
                starts.append(meta[key][2])
            ages[key] = min(starts) if starts else None
        single = {key: only_variant(flag) for key, flag in document.flags.items()}
        writes = r.stale.flag_writes(
            environment_id, [k for k, v in single.items() if v is not None], _HISTORY
        )
        quiet = [k for k in items if k not in evaluated]
        last_seen = self.counts.last_counted(environment_id, EXPOSURE, quiet) if quiet else {}
        stale: list[StaleFlag] = []
        for key in sorted(items):
            reasons: list[StaleReason] = []
            age = ages[key]
            since = _rolled_out_since(single[key], items[key].version, writes.get(key), written)
            if since is not None and since <= horizon:
                reasons.append(
                    StaleReason(
                        "rolled_out",
                        since,
                        f"serves '{single[key]}' to everyone since {_day(since)}"
                        f" ({(now - since).days} days; stale after {days})",
                    )
                )
            if key not in evaluated and age is not None and age <= horizon:
                last = last_seen.get(key)
                text = (
                    f"not evaluated for {days} days or more (last exposure {_day(last)})"
                    if last is not None
                    else f"never evaluated since it was created on {_day(age)}"
                )
                reasons.append(StaleReason("not_evaluated", last or age, text))
            if key in meta and age is not None:
                kind, lifetime, _ = meta[key]
                if lifetime is not None and age <= now - timedelta(days=lifetime):
                    reasons.append(
                        StaleReason(
                            "past_lifetime",
                            age + timedelta(days=lifetime),
                            f"a {kind} flag, past its expected lifetime of {lifetime} days"
                            f" (created {_day(age)})",
                        )
                    )
            if deployed and not any(key in refs for refs in deployed.values()):
                services = ", ".join(sorted(deployed))
                reasons.append(
                    StaleReason(
                        "not_deployed",
                        None,
                        f"no latest deploy refers to it (services: {services})",
                    )
                )
            if reasons:
                where = {s: list(refs[key]) for s, refs in sorted(deployed.items()) if key in refs}
                stale.append(StaleFlag(key, tuple(reasons), where))
        return stale

    # -- the leader's recurring check ----------------------------------------------------

    def check(self, work: UnitOfWork) -> int:
        """Mark and announce the flags that became stale, unmark the others; how many marked.

        Runs in the job's unit of work: the marks, their audit entries and
        outbox rows commit with the job's fenced finish or not at all.
        """
        marked = 0
        for project in work.projects.all():
            project_id = work.projects.id_of(project["key"])
            if project_id is None:
                continue
            days = _days(work, project_id)
            for env in project["environments"]:
                environment_id = work.environments.id_of(project["key"], env["key"])
                if environment_id is None:
                    continue
                marked += self._check_environment(work, project_id, environment_id, days)
        return marked

    def _check_environment(
        self, work: UnitOfWork, project_id: int, environment_id: int, days: int
    ) -> int:
        # read in one snapshot: the job's own transaction would see a write committed
        # between two of the reads in the second only (PostgreSQL's READ COMMITTED)
        with self.store.reading() as r:
            found = {s.key: s for s in self._find(r, project_id, environment_id, days)}
        marks = work.stale.marks(environment_id)
        now = self._clock()
        marked = 0
        for key, stale in found.items():
            if key in marks:
                continue
            reasons = [r.as_data() for r in stale.reasons]
            if not work.stale.mark(environment_id, key, reasons, now):
                continue  # marked meanwhile: it was announced then
            work.record(
                actor=STALE_ACTOR,
                action="stale.found",
                target=key,
                reason="; ".join(r.text for r in stale.reasons),
                after={"reasons": reasons, "references": stale.references},
                environment_id=environment_id,
                versioned=False,
            )
            marked += 1
        for key, mark in marks.items():
            if key in found:
                continue
            if work.stale.clear(environment_id, key):
                work.record(
                    actor=STALE_ACTOR,
                    action="stale.cleared",
                    target=key,
                    reason="no criterion holds any more",
                    before={"reasons": mark.reasons},
                    environment_id=environment_id,
                    versioned=False,
                )
        return marked


def _days(r: Reading, project_id: int) -> int:
    days = r.stale.stale_after_days(project_id)
    return DEFAULT_STALE_AFTER_DAYS if days is None else days


def _rolled_out_since(
    variant: str | None,
    version: int,
    history: list[FlagWrite] | None,
    written: Mapping[int, datetime],
) -> datetime | None:
    """Since when the flag has served ``variant`` alone; None if it serves more than one."""
    if variant is None:
        return None
    since = written.get(version)
    if not history or history[0].environment_version != version:
        return since  # its last write was not one of its own (a document apply)
    return _walk_back(variant, history)


def _walk_back(variant: str, history: list[FlagWrite]) -> datetime:
    """The earliest write from which the flag has served ``variant`` alone, unbroken.

    ``history`` is newest first and begins with the write of the current
    version. Each step back needs the older write to have written exactly the
    version the newer one replaced, and that version to serve ``variant`` alone.
    """
    since = history[0].at
    for newer, older in itertools.pairwise(history):
        if newer.action != "flag.update" or older.after != newer.before:
            break
        before = flag_alone("flag", newer.before)
        if before is None or only_variant(before) != variant:
            break
        since = older.at
    return since
