"""The release state machine: one pure function from (state, time, input) to (state, actions).

``step(state, now, event)`` is all there is. ``event`` is what happened: time
passed (``Tick``), the judge looked at the current step (``Observation``), a
person gave a command (``Start``, ``Approve``, ``Pause``, ``Resume``,
``Advance``, ``Abort``) or edited the flag by hand (``FlagEdited``). The
answer is the new state and the actions the service layer carries out, in
order: ``SetRollout`` (the treatment's share), ``RecordDecision`` (audit,
with the explanation) and ``Notify`` (tell people).

The rules, in short (docs/release-plans.md says them in full):

- A step advances by itself when its hold, measured from the stored
  ``step_started_at``, is over, the step has enough data (or the plan says
  to go on without), and the advancing window is open. A person's
  ``Advance`` skips all three: it is a decision, and it is recorded.
- A judge's ``fail`` acts at once, whatever the window: roll back (control
  for everyone) or, if the plan says hold, pause at the current share.
- Too little data never fails a release: it waits (and says so once).
- Paused releases take no automatic decision. Resuming starts the step's
  hold (or the verification) again, and sets the share again.
- The share only goes down by a rollback or an abort.
- A command the phase does not allow raises ``CommandRefused`` and changes
  nothing. Time passing and hand edits are never refused.

No clock is read here: ``now`` is passed in, and so a restarted server or a
new leader that reads the stored state decides exactly as the old one would.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from unveil.release.errors import CommandRefused
from unveil.release.plan import FULL_SHARE, OnInsufficientData, OnRegression, Plan, percent
from unveil.release.reading import duration_text
from unveil.release.state import (
    MAX_HISTORY,
    MAX_TEXT,
    Decision,
    HistoryEntry,
    PauseReason,
    Phase,
    ReleaseState,
    WaitReason,
)
from unveil.release.verdict import Observation, Verdict, VerdictKind

__all__ = [
    "Abort",
    "Action",
    "Advance",
    "Approve",
    "Command",
    "Event",
    "FlagEdited",
    "Notify",
    "Pause",
    "RecordDecision",
    "Resume",
    "SetRollout",
    "Start",
    "Tick",
    "new_release",
    "restart",
    "step",
]


# -- inputs --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed and nothing was observed (the judge had nothing to say).

    ``held``: why a scheduled release may not take its first step yet (the
    deploy its plan requires has not passed verification), or None.
    """

    held: str | None = None


@dataclass(frozen=True, slots=True)
class Start:
    """Start a scheduled release now, without waiting for its start time or window."""

    by: str = ""


@dataclass(frozen=True, slots=True)
class Approve:
    """Approve a release that waits for approval; it then starts when it is due."""

    by: str = ""


@dataclass(frozen=True, slots=True)
class Pause:
    """Stop taking decisions, keeping the current share."""

    by: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Resume:
    """Take decisions again; the current step's hold starts anew."""

    by: str = ""


@dataclass(frozen=True, slots=True)
class Advance:
    """Go to the next step now, whatever the hold, the data or the window."""

    by: str = ""


@dataclass(frozen=True, slots=True)
class Abort:
    """Stop the release for good; control for everyone unless ``keep_share``."""

    by: str = ""
    reason: str = ""
    keep_share: bool = False


@dataclass(frozen=True, slots=True)
class FlagEdited:
    """Someone changed the flag by hand while the release was running."""

    by: str = ""
    change: str = ""


Command = Start | Approve | Pause | Resume | Advance | Abort
Event = Tick | Observation | Command | FlagEdited


# -- actions -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetRollout:
    """Serve ``treatment`` to ``share`` thousandths of a percent, ``control`` to the rest."""

    control: str
    treatment: str
    share: int

    @property
    def percent(self) -> int | float:
        return percent(self.share)


@dataclass(frozen=True, slots=True)
class RecordDecision:
    """Write down what was decided and why (the audit entry's reason)."""

    decision: Decision
    text: str
    explanation: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Notify:
    """Tell people (webhooks, the dashboard) what happened."""

    kind: Decision
    text: str


Action = SetRollout | RecordDecision | Notify
Result = tuple[ReleaseState, tuple[Action, ...]]


# -- building blocks -----------------------------------------------------------


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"a timezone-aware datetime is needed, not {now!r}")
    return now.astimezone(UTC)


def _who(by: str) -> str:
    return f" by {by}" if by else ""


def _why(reason: str) -> str:
    return f": {reason}" if reason else ""


def _clip(text: str) -> str:
    """The text as a history entry holds it: at most MAX_TEXT characters."""
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "\u2026"


def _judge_words(verdict: Verdict) -> str:
    """What the judge found, in its own words (its summary, less the advice the decision
    text already follows), to end a regression's text with; empty when it says nothing."""
    summary = verdict.explanation.get("summary")
    if not isinstance(summary, str) or not summary:
        return ""
    return "; " + summary.removeprefix("Roll back: ")


def _move(
    state: ReleaseState,
    now: datetime,
    decision: Decision,
    text: str,
    *,
    details: Mapping[str, object] | None = None,
    verdict: Verdict | None = None,
    **changes: Any,
) -> Result:
    """The state with ``changes``, the history entry, and the actions that go with them."""
    text = _clip(text)
    new = replace(state, **changes)
    entry = HistoryEntry(now, state.id, decision, new.phase, new.step, new.share, text)
    new = replace(new, history=(*state.history, entry)[-MAX_HISTORY:])
    explanation: dict[str, object] = {
        "release": state.id,
        "decision": decision.value,
        "phase": new.phase.value,
        "step": new.step,
        "share": percent(new.share),
        "from_step": state.step,
        "from_share": percent(state.share),
        "text": text,
    }
    if details:
        explanation.update(details)
    if verdict is not None:
        explanation["verdict"] = verdict.kind.value
        explanation["judge"] = dict(verdict.explanation)
    actions: list[Action] = []
    if new.share != state.share or decision is Decision.RESUMED:
        actions.append(SetRollout(state.plan.control, state.plan.treatment, new.share))
    actions.append(RecordDecision(decision, text, explanation))
    actions.append(Notify(decision, text))
    return new, tuple(actions)


def _chain(first: Result, then: Result) -> Result:
    return then[0], first[1] + then[1]


def _step_words(plan: Plan, index: int) -> str:
    return f"step {index + 1} of {len(plan.steps)}"


def _enter_step(
    state: ReleaseState,
    now: datetime,
    index: int,
    decision: Decision,
    text: str,
    *,
    details: Mapping[str, object] | None = None,
    verdict: Verdict | None = None,
) -> Result:
    """Go to step ``index``; the last one (100%) completes the release."""
    plan = state.plan
    target = plan.steps[index]
    if index < len(plan.steps) - 1:
        return _move(
            state,
            now,
            decision,
            f"{text}; {_step_words(plan, index)}: {plan.treatment!r} at {target.percent}%, "
            f"held for {duration_text(target.hold)}",
            details=details,
            verdict=verdict,
            phase=Phase.RUNNING,
            step=index,
            share=target.share,
            step_started_at=now,
            waiting=None,
        )
    verification = plan.options.verification
    done = _move(
        state,
        now,
        Decision.COMPLETED,
        f"{text}; {plan.treatment!r} at 100%"
        + (f", watched for {duration_text(verification)} more" if verification else ""),
        details=details,
        verdict=verdict,
        phase=Phase.COMPLETED,
        step=index,
        share=FULL_SHARE,
        step_started_at=now,
        waiting=None,
        verified=False,
    )
    if verification:
        return done
    return _chain(done, _verify(done[0], now, "no verification period in the plan"))


def _verify(state: ReleaseState, now: datetime, text: str) -> Result:
    return _move(state, now, Decision.VERIFIED, f"verified: {text}", verified=True)


def _wait(
    state: ReleaseState,
    now: datetime,
    reason: WaitReason,
    text: str,
    verdict: Verdict | None,
) -> Result:
    """Note once (not at every tick) that a due step waits, and why."""
    if state.waiting is reason:
        return state, ()
    return _move(state, now, Decision.WAITING, text, verdict=verdict, waiting=reason)


def _regression(state: ReleaseState, now: datetime, verdict: Verdict) -> Result:
    """The judge found a regression: act now, whatever the window says."""
    plan = state.plan
    where = f"a regression at {percent(state.share)}%"
    if plan.options.on_regression is OnRegression.ROLLBACK:
        return _move(
            state,
            now,
            Decision.ROLLED_BACK,
            f"{where}: rolled back, everyone gets {plan.control!r}{_judge_words(verdict)}",
            verdict=verdict,
            phase=Phase.ROLLED_BACK,
            share=0,
            waiting=None,
        )
    return _move(
        state,
        now,
        Decision.HELD,
        f"{where}: held there as the plan says (on_regression: hold); "
        "a person decides: resume (and then advance, if need be) or abort" + _judge_words(verdict),
        verdict=verdict,
        phase=Phase.PAUSED,
        paused_from=state.phase,
        pause_reason=PauseReason.REGRESSION,
        waiting=None,
    )


# -- time and observations -----------------------------------------------------


def _start_when_due(state: ReleaseState, now: datetime, held: str | None = None) -> Result:
    if state.start_at is not None and now < state.start_at:
        return state, ()
    if held is not None:
        return _wait(state, now, WaitReason.DEPLOY, f"due to start; waiting: {held}", None)
    window = state.plan.options.window
    if window is not None and not window.is_open(now):
        opens = window.next_opening(now).isoformat()
        text = f"due to start; waiting for the window ({window}), which opens at {opens}"
        return _wait(state, now, WaitReason.WINDOW, text, None)
    return _enter_step(state, now, 0, Decision.STARTED, "started")


def _running(state: ReleaseState, now: datetime, seen: Observation | None) -> Result:
    verdict = seen.verdict if seen is not None else None
    if verdict is not None and verdict.kind is VerdictKind.FAIL:
        return _regression(state, now, verdict)
    hold_ends = state.hold_ends_at
    assert hold_ends is not None
    if now < hold_ends:
        return state, ()
    options = state.plan.options
    exposures = seen.treatment_exposures if seen is not None else 0
    judged = verdict is not None and verdict.kind is not VerdictKind.NO_DATA
    enough = judged and exposures >= options.min_exposures
    if not enough and options.insufficient_data is OnInsufficientData.WAIT:
        if exposures < options.min_exposures:
            need = f"{exposures} of {options.min_exposures} treatment exposures so far"
        else:
            need = "the judge has no data yet"
        return _wait(state, now, WaitReason.DATA, f"hold over; waiting for data: {need}", verdict)
    window = options.window
    if window is not None and not window.is_open(now):
        opens = window.next_opening(now).isoformat()
        text = f"hold over; waiting for the window ({window}), which opens at {opens}"
        return _wait(state, now, WaitReason.WINDOW, text, verdict)
    held = duration_text(now - (state.step_started_at or now))
    judge = verdict.kind.value if verdict is not None else "nothing observed"
    reason = f"advanced after {held} ({exposures} treatment exposures, judge: {judge}"
    reason += "; too little data, and the plan says advance)" if not enough else ")"
    return _enter_step(
        state,
        now,
        state.step + 1,
        Decision.ADVANCED,
        reason,
        details={"treatment_exposures": exposures},
        verdict=verdict,
    )


def _verifying(state: ReleaseState, now: datetime, seen: Observation | None) -> Result:
    if seen is not None and seen.verdict.kind is VerdictKind.FAIL:
        return _regression(state, now, seen.verdict)
    ends = state.verification_ends_at
    assert ends is not None
    if now < ends:
        return state, ()
    period = duration_text(state.plan.options.verification)
    return _verify(state, now, f"no regression in {period} at 100%")


def _on_time(
    state: ReleaseState, now: datetime, seen: Observation | None, held: str | None = None
) -> Result:
    if state.phase is Phase.SCHEDULED:
        return _start_when_due(state, now, held)
    if state.phase is Phase.RUNNING:
        return _running(state, now, seen)
    if state.phase is Phase.COMPLETED and not state.verified:
        return _verifying(state, now, seen)
    return state, ()


# -- commands ------------------------------------------------------------------


def _refuse(state: ReleaseState, command: str, reason: str) -> CommandRefused:
    return CommandRefused(command, state.phase.value, reason)


def _over(state: ReleaseState, command: str) -> CommandRefused:
    if state.phase is Phase.COMPLETED:
        return _refuse(state, command, "it has completed and been verified")
    return _refuse(state, command, "it is over; restart it as a new release to try again")


def _start(state: ReleaseState, now: datetime, command: Start) -> Result:
    if state.phase is Phase.SCHEDULED:
        return _enter_step(state, now, 0, Decision.STARTED, f"started{_who(command.by)}")
    if state.over:
        raise _over(state, "start")
    if state.phase is Phase.WAITING_FOR_APPROVAL:
        raise _refuse(state, "start", "it waits for approval")
    raise _refuse(state, "start", "it has started already")


def _approve(state: ReleaseState, now: datetime, command: Approve) -> Result:
    if state.phase is not Phase.WAITING_FOR_APPROVAL:
        raise _refuse(state, "approve", "it does not wait for approval")
    approved = _move(
        state,
        now,
        Decision.APPROVED,
        f"approved{_who(command.by)}",
        details={"by": command.by},
        phase=Phase.SCHEDULED,
    )
    return _chain(approved, _start_when_due(approved[0], now))


def _pause(state: ReleaseState, now: datetime, command: Pause) -> Result:
    if state.over:
        raise _over(state, "pause")
    if state.phase is Phase.PAUSED:
        raise _refuse(state, "pause", "it is paused already")
    if state.phase not in {Phase.RUNNING, Phase.COMPLETED}:
        raise _refuse(state, "pause", "it has not started; abort it to cancel it")
    return _move(
        state,
        now,
        Decision.PAUSED,
        f"paused{_who(command.by)}{_why(command.reason)}",
        details={"by": command.by, "reason": command.reason},
        phase=Phase.PAUSED,
        paused_from=state.phase,
        pause_reason=PauseReason.BY_PERSON,
        waiting=None,
    )


def _resume(state: ReleaseState, now: datetime, command: Resume) -> Result:
    if state.over:
        raise _over(state, "resume")
    if state.phase is not Phase.PAUSED:
        raise _refuse(state, "resume", "it is not paused")
    back = state.paused_from or Phase.RUNNING
    again = "hold" if back is Phase.RUNNING else "verification"
    return _move(
        state,
        now,
        Decision.RESUMED,
        f"resumed{_who(command.by)} at {percent(state.share)}%; the {again} starts again",
        details={"by": command.by},
        phase=back,
        paused_from=None,
        pause_reason=None,
        step_started_at=now,
    )


def _advance(state: ReleaseState, now: datetime, command: Advance) -> Result:
    if state.over:
        raise _over(state, "advance")
    if state.phase is Phase.PAUSED:
        raise _refuse(state, "advance", "it is paused; resume it first")
    if state.phase is Phase.COMPLETED:
        raise _refuse(state, "advance", "it is at 100% already")
    if state.phase is not Phase.RUNNING:
        raise _refuse(state, "advance", "it has not started")
    return _enter_step(
        state,
        now,
        state.step + 1,
        Decision.ADVANCED,
        f"advanced{_who(command.by)} before the plan would have",
        details={"by": command.by},
    )


def _abort(state: ReleaseState, now: datetime, command: Abort) -> Result:
    if state.over:
        raise _over(state, "abort")
    plan = state.plan
    if state.share == 0:
        outcome, share = "the release had not changed the flag", 0
    elif command.keep_share:
        outcome = f"the flag stays at {percent(state.share)}% {plan.treatment!r}"
        share = state.share
    else:
        outcome = f"everyone gets {plan.control!r}"
        share = 0
    return _move(
        state,
        now,
        Decision.ABORTED,
        f"aborted{_who(command.by)}{_why(command.reason)}; {outcome}",
        details={"by": command.by, "reason": command.reason, "keep_share": command.keep_share},
        phase=Phase.ABORTED,
        share=share,
        paused_from=None,
        pause_reason=None,
        waiting=None,
    )


def _hand_edit(state: ReleaseState, now: datetime, event: FlagEdited) -> Result:
    active = state.phase is Phase.RUNNING or (state.phase is Phase.COMPLETED and not state.verified)
    if not active:
        return state, ()
    return _move(
        state,
        now,
        Decision.PAUSED,
        f"paused: the flag was edited by hand{_who(event.by)}{_why(event.change)}; "
        "the release leaves it alone until someone resumes it",
        details={"by": event.by, "change": event.change},
        phase=Phase.PAUSED,
        paused_from=state.phase,
        pause_reason=PauseReason.HAND_EDIT,
        waiting=None,
    )


# -- the entry points -----------------------------------------------------------


def step(state: ReleaseState, now: datetime, event: Event) -> Result:
    """The release's next state and the actions to carry out, in order.

    Raises ``CommandRefused`` for a command the release cannot take now
    (the state is then unchanged), ``ValueError`` for a naive ``now``.
    """
    now = _utc(now)
    if isinstance(event, Tick):
        return _on_time(state, now, None, event.held)
    if isinstance(event, Observation):
        return _on_time(state, now, event)
    if isinstance(event, FlagEdited):
        return _hand_edit(state, now, event)
    if isinstance(event, Start):
        return _start(state, now, event)
    if isinstance(event, Approve):
        return _approve(state, now, event)
    if isinstance(event, Pause):
        return _pause(state, now, event)
    if isinstance(event, Resume):
        return _resume(state, now, event)
    if isinstance(event, Advance):
        return _advance(state, now, event)
    if isinstance(event, Abort):
        return _abort(state, now, event)
    raise TypeError(f"not an event of a release: {event!r}")


def new_release(
    plan: Plan,
    release_id: str,
    now: datetime,
    *,
    start_at: datetime | None = None,
    require_approval: bool | None = None,
) -> ReleaseState:
    """A release of ``plan`` that has not started.

    It waits for approval when the plan (or the caller, for an environment
    that requires it) says so, and then for ``start_at`` (if any) and the
    window; ``Start`` starts it at once.
    """
    now = _utc(now)
    approval = plan.options.require_approval if require_approval is None else require_approval
    phase = Phase.WAITING_FOR_APPROVAL if approval else Phase.SCHEDULED
    when = f" for {_utc(start_at).isoformat()}" if start_at is not None else ""
    text = f"created{when}" + ("; waits for approval" if approval else "")
    entry = HistoryEntry(now, release_id, Decision.CREATED, phase, -1, 0, text)
    return ReleaseState(
        id=release_id,
        plan=plan,
        phase=phase,
        created_at=now,
        start_at=None if start_at is None else _utc(start_at),
        history=(entry,),
    )


def restart(
    old: ReleaseState,
    release_id: str,
    now: datetime,
    *,
    start_at: datetime | None = None,
    require_approval: bool | None = None,
) -> ReleaseState:
    """A new release of a rolled-back or aborted one's plan, keeping its history.

    The new release links to the old one (``previous``) and counts its
    attempt; it starts from the first step again.
    """
    now = _utc(now)
    if old.phase not in {Phase.ROLLED_BACK, Phase.ABORTED}:
        raise CommandRefused(
            "restart", old.phase.value, "only a rolled-back or aborted release is restarted"
        )
    if release_id == old.id:
        raise CommandRefused("restart", old.phase.value, "the new release needs a new id")
    fresh = new_release(
        old.plan, release_id, now, start_at=start_at, require_approval=require_approval
    )
    note = HistoryEntry(
        now,
        release_id,
        Decision.RESTARTED,
        fresh.phase,
        -1,
        0,
        f"restarted as {release_id} from {old.id} ({old.phase.value.replace('_', ' ')})",
    )
    return replace(
        fresh,
        previous=old.id,
        attempt=old.attempt + 1,
        history=(*old.history, note, *fresh.history)[-MAX_HISTORY:],
    )
