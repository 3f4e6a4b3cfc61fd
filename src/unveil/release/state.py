"""A release's state: all the machine needs, and plain data the server can store.

Everything that decides what happens next is in the state, including the
plan and the instant the current step began, so that a restarted server or
a new leader reading the stored state computes the same holds and takes the
same decisions as the one before. ``state_to_data`` writes it as plain
(JSON-ready) data and ``state_from_data`` reads it back equal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from unveil.core.errors import Problem
from unveil.release.errors import InvalidPlan, InvalidState
from unveil.release.plan import Plan, parse_plan, percent, plan_to_data
from unveil.release.reading import Reader, join, type_name

__all__ = [
    "STATE_FORMAT",
    "FINAL_PHASES",
    "MAX_TEXT",
    "Decision",
    "HistoryEntry",
    "PauseReason",
    "Phase",
    "ReleaseState",
    "WaitReason",
    "state_from_data",
    "state_to_data",
]

#: the version of the stored form, written with every state
STATE_FORMAT = 1
MAX_HISTORY = 10_000
#: the longest text of a history entry (what ``state_from_data`` still reads)
MAX_TEXT = 2000


class Phase(StrEnum):
    """Where a release is in its life."""

    SCHEDULED = "scheduled"  # waits for its start time (and window)
    WAITING_FOR_APPROVAL = "waiting_for_approval"
    RUNNING = "running"  # at ``step``, holding or about to advance
    PAUSED = "paused"  # a person, a hand edit or a held regression stopped it
    COMPLETED = "completed"  # at 100%: verifying, then (``verified``) done
    ROLLED_BACK = "rolled_back"  # the judge found a regression: control for everyone
    ABORTED = "aborted"  # a person stopped it for good


#: phases from which nothing moves the release again
FINAL_PHASES = frozenset({Phase.ROLLED_BACK, Phase.ABORTED})


class PauseReason(StrEnum):
    """Why a paused release is paused."""

    BY_PERSON = "by_person"
    HAND_EDIT = "hand_edit"  # someone changed the flag by hand: the release stops fighting it
    REGRESSION = "regression"  # the plan says hold, not roll back


class WaitReason(StrEnum):
    """Why a step whose hold is over has not advanced yet."""

    WINDOW = "window"  # outside the advancing window
    DATA = "data"  # too few treatment exposures, or the judge has no data
    DEPLOY = "deploy"  # the deploy the plan requires has not passed verification


class Decision(StrEnum):
    """What happened, as recorded in the history and in decisions."""

    CREATED = "created"
    APPROVED = "approved"
    STARTED = "started"
    ADVANCED = "advanced"
    WAITING = "waiting"
    COMPLETED = "completed"
    VERIFIED = "verified"
    ROLLED_BACK = "rolled_back"
    HELD = "held"
    PAUSED = "paused"
    RESUMED = "resumed"
    ABORTED = "aborted"
    RESTARTED = "restarted"


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One thing that happened to a release (or to one it was restarted from)."""

    at: datetime
    release: str
    decision: Decision
    phase: Phase
    step: int
    share: int
    text: str


@dataclass(frozen=True, slots=True)
class ReleaseState:
    """Everything about one release that decides what it does next.

    ``step`` is the index of the current step (-1 before the start);
    ``share`` is the treatment's share the release last set, in thousandths
    of a percent; ``step_started_at`` is when the current step's hold (or,
    once completed, the verification) began, moved on by a resume.
    """

    id: str
    plan: Plan
    phase: Phase
    created_at: datetime
    start_at: datetime | None = None
    step: int = -1
    step_started_at: datetime | None = None
    share: int = 0
    verified: bool = False
    paused_from: Phase | None = None
    pause_reason: PauseReason | None = None
    waiting: WaitReason | None = None
    previous: str | None = None
    attempt: int = 1
    history: tuple[HistoryEntry, ...] = ()

    @property
    def over(self) -> bool:
        """Whether nothing can move this release any more."""
        return self.phase in FINAL_PHASES or (self.phase is Phase.COMPLETED and self.verified)

    @property
    def hold_ends_at(self) -> datetime | None:
        """When the current step's hold is over (running releases only)."""
        if self.phase is not Phase.RUNNING or self.step_started_at is None:
            return None
        return self.step_started_at + self.plan.steps[self.step].hold

    @property
    def verification_ends_at(self) -> datetime | None:
        """When the verification at 100% is over (completed, unverified releases only)."""
        if self.phase is not Phase.COMPLETED or self.verified or self.step_started_at is None:
            return None
        return self.step_started_at + self.plan.options.verification


# -- writing -------------------------------------------------------------------


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def _entry_to_data(entry: HistoryEntry) -> dict[str, Any]:
    return {
        "at": _time(entry.at),
        "release": entry.release,
        "decision": entry.decision.value,
        "phase": entry.phase.value,
        "step": entry.step,
        "share": percent(entry.share),
        "text": entry.text,
    }


def state_to_data(state: ReleaseState) -> dict[str, Any]:
    """The state as plain data (strings, numbers, lists, mappings), ready for JSON."""
    return {
        "format": STATE_FORMAT,
        "id": state.id,
        "plan": plan_to_data(state.plan),
        "phase": state.phase.value,
        "created_at": _time(state.created_at),
        "start_at": _time(state.start_at),
        "step": state.step,
        "step_started_at": _time(state.step_started_at),
        "share": percent(state.share),
        "verified": state.verified,
        "paused_from": None if state.paused_from is None else state.paused_from.value,
        "pause_reason": None if state.pause_reason is None else state.pause_reason.value,
        "waiting": None if state.waiting is None else state.waiting.value,
        "previous": state.previous,
        "attempt": state.attempt,
        "history": [_entry_to_data(e) for e in state.history],
    }


# -- reading -------------------------------------------------------------------

_FIELDS = frozenset(
    {
        "format",
        "id",
        "plan",
        "phase",
        "created_at",
        "start_at",
        "step",
        "step_started_at",
        "share",
        "verified",
        "paused_from",
        "pause_reason",
        "waiting",
        "previous",
        "attempt",
        "history",
    }
)
_ENTRY_FIELDS = frozenset({"at", "release", "decision", "phase", "step", "share", "text"})


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


def _optional_choice(r: Reader, body: Mapping[str, Any], key: str, enum: type[StrEnum]) -> Any:
    raw = body.get(key)
    if raw is None:
        return None
    found = r.choice(raw, key, key.replace("_", " "), tuple(m.value for m in enum))
    return None if found is None else enum(found)


def _read_entry(r: Reader, raw: object, path: str) -> HistoryEntry | None:
    body = r.mapping(raw, path, _ENTRY_FIELDS)
    before = len(r.problems)
    for key in _ENTRY_FIELDS:
        r.require(body, key, path)
    if len(r.problems) > before:
        return None
    at = r.instant(body["at"], join(path, "at"))
    release = r.key(body["release"], join(path, "release"), "a release id")
    decision = r.choice(body["decision"], join(path, "decision"), "decision", tuple(Decision))
    phase = r.choice(body["phase"], join(path, "phase"), "phase", tuple(Phase))
    step = r.whole(body["step"], join(path, "step"), -1, 10**6)
    share = r.share(body["share"], join(path, "share"), zero=True)
    text = body["text"]
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        r.fail(join(path, "text"), f"must be a string of at most {MAX_TEXT} characters")
    if len(r.problems) > before:
        return None
    assert at is not None and release is not None and decision is not None  # noqa: PT018
    assert phase is not None and step is not None and share is not None  # noqa: PT018
    return HistoryEntry(
        at.astimezone(UTC), release, Decision(decision), Phase(phase), step, share, text
    )


def _check_consistent(r: Reader, state: ReleaseState) -> None:
    last = len(state.plan.steps) - 1
    if not -1 <= state.step <= last:
        r.fail("step", f"must be from -1 to {last} for this plan, not {state.step}")
        return
    started = state.step >= 0
    if state.phase in {Phase.RUNNING, Phase.PAUSED, Phase.COMPLETED} and not started:
        r.fail("step", f"a release that is {state.phase} has a step")
    if started and state.step_started_at is None:
        r.fail("step_started_at", "a started release knows when its step began")
    elif started and state.phase in {Phase.RUNNING, Phase.PAUSED, Phase.COMPLETED}:
        expected = state.plan.steps[state.step].share
        if state.share != expected:
            r.fail("share", f"at step {state.step} the share is {percent(expected)}")
    if state.phase is Phase.COMPLETED and state.step != last:
        r.fail("step", "a completed release is at its last step")
    if (state.phase is Phase.PAUSED) != (state.paused_from is not None):
        r.fail("paused_from", "is set exactly when the release is paused")
    if (state.phase is Phase.PAUSED) != (state.pause_reason is not None):
        r.fail("pause_reason", "is set exactly when the release is paused")
    if state.paused_from not in {None, Phase.RUNNING, Phase.COMPLETED}:
        r.fail("paused_from", "a release is paused from running or completed")
    if state.verified and state.phase not in {Phase.COMPLETED, *FINAL_PHASES}:
        r.fail("verified", f"a release that is {state.phase} cannot be verified")


def state_from_data(data: object) -> ReleaseState:
    """Read a stored state back; refuse (``InvalidState``) what we did not write."""
    r = Reader()
    if not isinstance(data, Mapping):
        raise InvalidState([Problem("", f"must be a mapping, not {type_name(data)}")])
    body = r.mapping(data, "", _FIELDS)
    for key in _FIELDS:
        r.require(body, key, "")
    if r.problems:
        raise InvalidState(r.problems)
    if body["format"] != STATE_FORMAT:
        raise InvalidState([Problem("format", f"unknown format {body['format']!r}")])
    plan: Plan | None = None
    try:
        plan = parse_plan(body["plan"])
    except InvalidPlan as e:
        r.problems.extend(
            Problem(join("plan", p.path) if p.path else "plan", p.message) for p in e.problems
        )
    release_id = r.key(body["id"], "id", "a release id")
    phase = r.choice(body["phase"], "phase", "phase", tuple(Phase))
    created_at = r.instant(body["created_at"], "created_at")
    start_at = None if body["start_at"] is None else r.instant(body["start_at"], "start_at")
    step = r.whole(body["step"], "step", -1, 10**6)
    step_started_at = (
        None
        if body["step_started_at"] is None
        else r.instant(body["step_started_at"], "step_started_at")
    )
    share = r.share(body["share"], "share", zero=True)
    verified = r.boolean(body["verified"], "verified")
    paused_from = _optional_choice(r, body, "paused_from", Phase)
    pause_reason = _optional_choice(r, body, "pause_reason", PauseReason)
    waiting = _optional_choice(r, body, "waiting", WaitReason)
    previous = None if body["previous"] is None else r.key(body["previous"], "previous", "an id")
    attempt = r.whole(body["attempt"], "attempt", 1, 10**6)
    raw_history = r.sequence(body["history"], "history")
    if len(raw_history) > MAX_HISTORY:
        r.fail("history", f"at most {MAX_HISTORY} entries, not {len(raw_history)}")
        raw_history = []
    history = [_read_entry(r, e, f"history[{i}]") for i, e in enumerate(raw_history)]
    if r.problems:
        raise InvalidState(r.problems)
    assert plan is not None and release_id is not None and phase is not None  # noqa: PT018
    assert created_at is not None and step is not None and share is not None  # noqa: PT018
    assert verified is not None and attempt is not None  # noqa: PT018
    state = ReleaseState(
        id=release_id,
        plan=plan,
        phase=Phase(phase),
        created_at=created_at.astimezone(UTC),
        start_at=_utc(start_at),
        step=step,
        step_started_at=_utc(step_started_at),
        share=share,
        verified=verified,
        paused_from=paused_from,
        pause_reason=pause_reason,
        waiting=waiting,
        previous=previous,
        attempt=attempt,
        history=tuple(e for e in history if e is not None),
    )
    _check_consistent(r, state)
    if r.problems:
        raise InvalidState(r.problems)
    return state
