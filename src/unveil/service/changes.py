"""Four-eyes approval: in an environment that requires it, a change waits for a second person.

When an environment requires approval, a change (a flag or segment edit, a
document apply, a release start, a schedule) becomes a change request:
who asked, why, the exact change, and the diff against the version it was
asked on. It is checked when asked (carried out in a savepoint that is
rolled back), so a request that could never apply is refused at once.
Another person with the releaser or admin role approves or rejects it;
the requester cannot approve their own, and may withdraw it. An approved
request is applied exactly as asked, in the approval's transaction, or,
if what it changes has moved on since, refused (and says so): nothing is
ever applied over a change its approver has not seen.

Stopping is never held up: turning a flag off (a change whose only effect
is ``enabled: false``), and pausing or aborting a release, apply at once;
the flag change is audited and announced as an emergency change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from unveil.core import UnveilError
from unveil.core.errors import Problem
from unveil.release.machine import Advance, Resume
from unveil.service.errors import Conflict, Forbidden, Invalid, NotFound
from unveil.service.flags import Change, FlagService
from unveil.service.promotions import PROMOTION, PromotionRequest, PromotionService
from unveil.service.releases import ReleaseService
from unveil.service.schedules import ScheduleRequest, ScheduleService
from unveil.service.scope import (
    check_state,
    environment_items,
    missing_environment,
    require_environment,
)
from unveil.store.changes import OPEN, STATES, ChangeRow
from unveil.store.items import Part
from unveil.store.unit import Store, UnitOfWork

__all__ = ["EMERGENCY", "ChangeRequest", "ChangeService", "Expect"]

#: the parts of the environment each action changes (None: the whole, or not a part)
ACTIONS: dict[str, Part | None] = {
    "flag.put": "flags",
    "flag.delete": "flags",
    "segment.put": "segments",
    "segment.delete": "segments",
    "document.apply": None,
    "release.start": None,
    "release.resume": None,
    "release.advance": None,
    "release.restart": None,
    "schedule.create": None,
    PROMOTION: None,
}
#: what the reason of an emergency change starts with in the audit log
EMERGENCY = "emergency change, approval not needed to turn a flag off"
_Clock = Callable[[], datetime]
#: how another use case carries out an approved change of its own action (a launch's start)
Applier = Callable[[UnitOfWork, str, str, str, Mapping[str, Any], Change], Any]
#: what such a use case holds before an approval holds the request's environment
#: (work, project, target): the rows its applier will hold, in its own order
Holder = Callable[[UnitOfWork, str, str], None]


@dataclass(frozen=True, slots=True)
class Expect:
    """The preconditions a direct write carries: If-Match, and If-None-Match: *."""

    if_match: int | None
    create_only: bool = False


@dataclass(frozen=True, slots=True)
class ChangeRequest:
    """A change request as the API shows it."""

    row: ChangeRow
    project: str
    env: str

    def as_data(self) -> dict[str, Any]:
        r = self.row
        return {
            "id": r.id,
            "project": self.project,
            "environment": self.env,
            "action": r.action,
            "target": r.target,
            "state": r.state,
            "requester": r.requester,
            "reason": r.reason,
            "base_version": r.base_version,
            "diff": r.diff,
            "change": r.payload,
            "decided_by": r.decided_by,
            "outcome": r.outcome,
            "comments": r.comments,
            "created_at": _iso(r.created_at),
            "updated_at": _iso(r.updated_at),
        }


def _iso(value: datetime) -> str:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


class ChangeService:
    """Ask for, decide on and apply changes that need a second person."""

    def __init__(
        self,
        store: Store,
        flags: FlagService,
        releases: ReleaseService,
        schedules: ScheduleService,
        clock: _Clock = lambda: datetime.now(UTC),
        promotions: PromotionService | None = None,
    ) -> None:
        self.store = store
        self.flags = flags
        self.releases = releases
        self.schedules = schedules
        self.promotions = promotions or PromotionService(store, flags)
        self._clock = clock
        #: actions other use cases carry out when approved (they open their own requests)
        self._appliers: dict[str, Applier] = {}
        self._holders: dict[str, Holder] = {}

    def register(self, action: str, applier: Applier, hold: Holder | None = None) -> None:
        """Let an approved request of ``action`` be carried out by ``applier``.

        For use cases built on top of this one (a launch opens requests for its
        start and is started when they are approved), which this module must
        not import. ``hold``: for an applier that holds rows of several
        environments, called first when such a request is approved, so that
        the approval takes them in the applier's order rather than its own
        environment first (two orders of the same rows deadlock on PostgreSQL).
        """
        self._appliers[action] = applier
        if hold is not None:
            self._holders[action] = hold

    # -- the setting -------------------------------------------------------------------

    def requires_approval(self, project: str, env: str) -> bool:
        with self.store.reading() as r:
            return r.settings.requires_approval(require_environment(r, project, env))

    def set_requires_approval(self, project: str, env: str, value: bool, actor: str) -> bool:
        with self.store.unit_of_work() as work:
            environment_id = require_environment(work, project, env, lock=True)
            before = work.settings.requires_approval(environment_id)
            if before != value:
                work.settings.set_requires_approval(environment_id, value)
                work.record(
                    actor=actor,
                    action="environment.settings",
                    target=env,
                    before={"requires_approval": before},
                    after={"requires_approval": value},
                    environment_id=environment_id,
                    versioned=False,
                )
            return value

    # -- asking ------------------------------------------------------------------------

    def gate(
        self,
        project: str,
        env: str,
        action: str,
        target: str,
        payload: Mapping[str, Any],
        actor: str,
        reason: str | None,
        expect: Expect | None = None,
    ) -> ChangeRequest | str | None:
        """What to do with a change about to be made.

        None: go ahead (no approval needed here). ``EMERGENCY``: go ahead, it
        only turns a flag off (say so in its reason). A ``ChangeRequest``: it
        was opened instead, and nothing else is written. ``expect`` is the
        caller's If-Match (and If-None-Match: *), checked as a direct write
        would check it.
        """
        with self.store.glance() as r:  # the common case costs one small read
            required = r.settings.requires_approval_in(project, env)
        if required is None:
            raise missing_environment(project, env)
        if not required:
            return None
        with self.store.unit_of_work() as work:
            environment_id = require_environment(work, project, env, lock=True)
            if not work.settings.requires_approval(environment_id):
                return None
            before, base_version = self._current(work, environment_id, action, target)
            with work.savepoint(keep=False):  # it must apply now; what it writes is its diff
                after = self._apply(
                    work, project, env, action, target, payload, Change(actor, reason), expect
                )
            if action == "flag.put" and _only_turns_off(before, after):
                return EMERGENCY
            diff = {"before": before, "after": after}
            return self.open_request(
                work, project, env, action, target, payload, diff, base_version, actor, reason
            )

    def open_request(
        self,
        work: UnitOfWork,
        project: str,
        env: str,
        action: str,
        target: str,
        payload: Mapping[str, Any],
        diff: Mapping[str, Any],
        base_version: int | None,
        actor: str,
        reason: str | None,
    ) -> ChangeRequest:
        """Open a request for a change already checked, in ``work`` (audited ``change.opened``).

        For ``gate``, and for use cases that decide themselves that they wait
        for approval (a launch, across its environments).
        """
        row = work.changes.add(
            environment_id=require_environment(work, project, env, lock=True),
            action=action,
            target=target,
            payload=dict(payload),
            diff=dict(diff),
            base_version=base_version,
            requester=actor,
            reason=reason,
            now=self._clock(),
        )
        self._record(work, row, actor, "opened", reason)
        return ChangeRequest(row, project, env)

    # -- reading -----------------------------------------------------------------------

    def list(self, project: str, env: str, state: str | None = None) -> list[ChangeRequest]:
        check_state(state, STATES)
        with self.store.reading() as r:
            environment_id = require_environment(r, project, env)
            rows = r.changes.in_environment(environment_id, state)
        return [ChangeRequest(row, project, env) for row in rows]

    def get(self, project: str, env: str, change_id: str) -> ChangeRequest:
        with self.store.reading() as r:
            environment_id = require_environment(r, project, env)
            row = _mine(r.changes.get(change_id), environment_id, change_id)
        return ChangeRequest(row, project, env)

    # -- deciding ----------------------------------------------------------------------

    def approve(
        self, project: str, env: str, change_id: str, who: str, comment: str | None = None
    ) -> ChangeRequest:
        """Apply the request as asked, or refuse it (state ``refused``) if its target moved on."""
        with self.store.unit_of_work() as work:
            self._hold_first(work, project, env, change_id)
            environment_id, row = self._open(work, project, env, change_id)
            if who == row.requester:
                raise Forbidden("you asked for this change: someone else must approve it")
            _, now_version = self._current(work, environment_id, row.action, row.target)
            change = Change(
                row.requester,
                f"{row.reason or row.action} (approved by {who}"
                + (f": {comment})" if comment else ")"),
            )
            state, outcome = "applied", f"approved by {who} and applied"
            if now_version != row.base_version:
                state = "refused"
                outcome = (
                    f"not applied: {row.target or 'the environment'} changed since the request "
                    f"(version {row.base_version} then, {now_version} now); ask again"
                )
            else:
                try:
                    with work.savepoint():
                        self._apply(work, project, env, row.action, row.target, row.payload, change)
                except UnveilError as exc:
                    state, outcome = "refused", f"not applied: {exc}"
            comments = _with_comment(row, who, comment, self._clock())
            self._move(work, row, state=state, decided_by=who, outcome=outcome, comments=comments)
            self._record(work, row, who, "approved", comment)
            self._record(work, row, who, state, outcome)
            return self._reread(work, project, env, row.id)

    def reject(
        self, project: str, env: str, change_id: str, who: str, comment: str | None = None
    ) -> ChangeRequest:
        with self.store.unit_of_work() as work:
            _, row = self._open(work, project, env, change_id)
            if who == row.requester:
                raise Forbidden("you asked for this change: withdraw it instead")
            comments = _with_comment(row, who, comment, self._clock())
            self._move(
                work,
                row,
                state="rejected",
                decided_by=who,
                outcome=f"rejected by {who}",
                comments=comments,
            )
            self._record(work, row, who, "rejected", comment)
            return self._reread(work, project, env, row.id)

    def withdraw(self, project: str, env: str, change_id: str, who: str) -> ChangeRequest:
        with self.store.unit_of_work() as work:
            _, row = self._open(work, project, env, change_id)
            if who != row.requester:
                raise Forbidden("only the person who asked for a change may withdraw it")
            self._move(work, row, state="withdrawn", decided_by=who, outcome="withdrawn")
            self._record(work, row, who, "withdrawn", None)
            return self._reread(work, project, env, row.id)

    def comment(self, project: str, env: str, change_id: str, who: str, text: str) -> ChangeRequest:
        with self.store.unit_of_work() as work:
            _, row = self._open(work, project, env, change_id)
            self._move(work, row, comments=_with_comment(row, who, text, self._clock()))
            self._record(work, row, who, "commented", text)
            return self._reread(work, project, env, row.id)

    # -- helpers -----------------------------------------------------------------------

    def _hold_first(self, work: UnitOfWork, project: str, env: str, change_id: str) -> None:
        """What the request's applier will hold, held before its environment (see register)."""
        environment_id = require_environment(work, project, env)
        found = work.changes.get(change_id)
        if found is None or found.environment_id != environment_id:
            return  # _open names the problem
        hold = self._holders.get(found.action)
        if hold is not None:
            hold(work, project, found.target)

    def _open(
        self, work: UnitOfWork, project: str, env: str, change_id: str
    ) -> tuple[int, ChangeRow]:
        environment_id = require_environment(work, project, env, lock=True)
        row = _mine(work.changes.get(change_id, lock=True), environment_id, change_id)
        if row.state != OPEN:
            raise Conflict(f"change request {row.id} is {row.state}: it can no longer change")
        return environment_id, row

    def _move(self, work: UnitOfWork, row: ChangeRow, **values: Any) -> None:
        if not work.changes.move(row, self._clock(), **values):
            raise Conflict(f"change request {row.id} changed meanwhile; read it again")

    def _reread(self, work: UnitOfWork, project: str, env: str, change_id: str) -> ChangeRequest:
        found = work.changes.get(change_id)
        if found is None:
            raise NotFound(f"no change request '{change_id}'")
        return ChangeRequest(found, project, env)

    @staticmethod
    def _record(work: UnitOfWork, row: ChangeRow, actor: str, what: str, text: str | None) -> None:
        work.record(
            actor=actor,
            action=f"change.{what}",
            target=row.target or "(document)",
            reason=text,
            after={"change_request": row.id, "action": row.action, "requester": row.requester},
            environment_id=row.environment_id,
            versioned=False,
        )

    def _current(
        self, work: UnitOfWork, environment_id: int, action: str, target: str
    ) -> tuple[Any, int | None]:
        """What the change replaces, and the version a later approval must still find."""
        part = ACTIONS.get(action)
        if action not in ACTIONS and action not in self._appliers:
            raise Invalid((Problem("action", f"unknown action {action!r}"),))
        if part is not None:
            item = work.items(part).get(environment_id, target)
            return (None, None) if item is None else (item.data, item.version)
        if action == "document.apply":
            document = environment_items(work, environment_id)
            return document, work.environments.version(environment_id)
        if action == PROMOTION:  # approved only onto the environment it was compared with
            return None, work.environments.version(environment_id)
        return None, None

    def _apply(
        self,
        work: UnitOfWork,
        project: str,
        env: str,
        action: str,
        target: str,
        payload: Mapping[str, Any],
        change: Change,
        expect: Expect | None = None,
    ) -> Any:
        """Carry the change out through its own use case; what it wrote.

        ``expect``: the preconditions the asker gave; None (an approval) means
        the versions there are now, which the approval has checked already.
        """
        environment_id = require_environment(work, project, env, lock=True)
        if action in self._appliers:
            return self._appliers[action](work, project, env, target, payload, change)
        if action == PROMOTION:
            request = PromotionRequest.from_data(payload["promotion"])
            done = self.promotions.apply(project, env, request, change, within=work)
            return done.as_data()
        part = ACTIONS[action]
        if part is not None:
            item = work.items(part).get(environment_id, target)
            current = None if item is None else item.version
            given = expect or Expect(current, item is None)
            if_match, create_only = given.if_match, given.create_only
            if action.endswith(".delete"):
                if item is None:
                    raise NotFound(f"no {part.removesuffix('s')} '{target}'")
                self.flags.delete_item(part, project, env, target, change, if_match, within=work)
                return None
            record = self.flags.put_item(
                part,
                project,
                env,
                target,
                payload["data"],
                change,
                if_match,
                create_only=create_only,
                within=work,
            )
            return record.data
        if action == "document.apply":
            if_match = expect.if_match if expect else None
            self.flags.apply_document(
                project, env, payload["document"], change, if_match=if_match, within=work
            )
            # the environment as the document leaves it, in the form ``_current`` reads
            # before it: the request's diff compares two documents, entry by entry
            return environment_items(work, environment_id)
        if action in ("release.resume", "release.advance"):  # ``target`` is the release
            command = Resume(change.actor) if action == "release.resume" else Advance(change.actor)
            moved = self.releases.command(project, env, target, command, within=work)
            return {"release": moved.id, "phase": moved.state.phase.value}
        if action == "release.restart":
            at = payload.get("start_at")
            again = self.releases.restart(
                project,
                env,
                target,
                change.actor,
                None if at is None else datetime.fromisoformat(str(at)),
                within=work,
            )
            return {"release": again.id, "restarted": target}
        if action == "release.start":
            at = payload.get("start_at")
            started = self.releases.start(
                project,
                env,
                payload["plan"],
                change.actor,
                None if at is None else datetime.fromisoformat(str(at)),
                within=work,
            )
            return {"release": started.id, "plan": payload["plan"]}
        made = self.schedules.create(
            project, env, ScheduleRequest(**payload["schedule"]), change.actor, within=work
        )
        return made.as_data()


def _only_turns_off(before: Any, after: Any) -> bool:
    """Whether a flag change does nothing but switch the flag off (the kill switch)."""
    if not isinstance(before, Mapping) or not isinstance(after, Mapping):
        return False
    if after.get("enabled", True) is not False or before.get("enabled", True) is False:
        return False
    rest = {k for k in {*before, *after} if k != "enabled"}
    return all(before.get(k) == after.get(k) for k in rest)


def _with_comment(
    row: ChangeRow, who: str, text: str | None, now: datetime
) -> list[dict[str, Any]] | None:
    if not text:
        return None
    return [*row.comments, {"at": now.isoformat(), "by": who, "text": text}]


def _mine(row: ChangeRow | None, environment_id: int, change_id: str) -> ChangeRow:
    if row is None or row.environment_id != environment_id:
        raise NotFound(f"no change request '{change_id}' in this environment")
    return row
