"""The release state machine: what each input does, what no sequence of inputs can do."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.release_strategies import PLANS
from unveil.release.errors import CommandRefused, InvalidState
from unveil.release.machine import (
    Abort,
    Action,
    Advance,
    Approve,
    Event,
    FlagEdited,
    Notify,
    Pause,
    RecordDecision,
    Resume,
    SetRollout,
    Start,
    Tick,
    new_release,
    restart,
    step,
)
from unveil.release.plan import OnInsufficientData, Plan, parse_plan
from unveil.release.state import (
    Decision,
    PauseReason,
    Phase,
    ReleaseState,
    WaitReason,
    state_from_data,
    state_to_data,
)
from unveil.release.verdict import Observation, Verdict, VerdictKind

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday, 10:00 in Amsterdam


def plan(**options: Any) -> Plan:
    return parse_plan(
        {
            "flag": "new-checkout",
            "environment": "production",
            "control": "off",
            "treatment": "on",
            "steps": [
                {"percent": 1, "hold": "1h"},
                {"percent": 10, "hold": "2h"},
                {"percent": 50, "hold": "2h"},
                {"percent": 100},
            ],
            "guards": [{"name": "errors", "kind": "rate", "metric": "errors"}],
            "options": {"verification": "1h", **options},
        }
    )


def healthy(exposures: int = 5000, **explanation: object) -> Observation:
    return Observation(Verdict(VerdictKind.CONTINUE, explanation), exposures)


def failing(**explanation: object) -> Observation:
    return Observation(Verdict(VerdictKind.FAIL, explanation or {"errors": "x3"}), 800)


NO_DATA = Observation(Verdict(VerdictKind.NO_DATA), 0)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def running(p: Plan | None = None, minutes: float = 0) -> ReleaseState:
    state, _ = step(new_release(p or plan(), "rel-1", at(minutes)), at(minutes), Start(by="ann"))
    return state


def kinds(actions: tuple[Action, ...]) -> list[str]:
    return [type(a).__name__ for a in actions]


def shares(actions: tuple[Action, ...]) -> list[int]:
    return [a.share for a in actions if isinstance(a, SetRollout)]


# -- the way through ------------------------------------------------------------


def test_a_healthy_release_ramps_holds_and_completes_then_verifies() -> None:
    state = new_release(plan(), "rel-1", T0)
    assert state.phase is Phase.SCHEDULED
    state, actions = step(state, at(0), Tick())
    assert state.phase is Phase.RUNNING
    assert (state.step, state.share, state.step_started_at) == (0, 1000, T0)
    assert actions[0] == SetRollout("off", "on", 1000)
    assert kinds(actions) == ["SetRollout", "RecordDecision", "Notify"]

    seen = []
    for minutes in range(1, 60 * 8, 5):
        state, actions = step(state, at(minutes), healthy())
        seen.extend((minutes, s) for s in shares(actions))
    # 1% held 1h, 10% held 2h, 50% held 2h; the first look at or after each hold's end moves on
    assert seen == [(61, 10_000), (181, 50_000), (301, 100_000)]
    assert state.phase is Phase.COMPLETED
    assert state.verified is True
    decisions = [e.decision for e in state.history]
    assert decisions == [
        Decision.CREATED,
        Decision.STARTED,
        Decision.ADVANCED,
        Decision.ADVANCED,
        Decision.COMPLETED,
        Decision.VERIFIED,
    ]
    verified = next(e for e in state.history if e.decision is Decision.VERIFIED)
    assert verified.at == at(361)  # 301 + 60 minutes of verification


def test_the_hold_is_measured_from_the_stored_start_of_the_step() -> None:
    state = running()
    state, actions = step(state, at(59.99), healthy())
    assert actions == ()
    # a new leader reads the stored state and looks at exactly the hold's end
    state = state_from_data(json.loads(json.dumps(state_to_data(state))))
    state, actions = step(state, at(60), healthy())
    assert shares(actions) == [10_000]
    assert state.step_started_at == at(60)


def test_an_advance_records_why_with_the_judges_explanation() -> None:
    _state, actions = step(running(), at(60), healthy(4200, errors="ok"))
    record = next(a for a in actions if isinstance(a, RecordDecision))
    assert record.decision is Decision.ADVANCED
    assert record.explanation["judge"] == {"errors": "ok"}
    assert record.explanation["verdict"] == "continue"
    assert record.explanation["treatment_exposures"] == 4200
    assert (record.explanation["from_share"], record.explanation["share"]) == (1, 10)
    assert record.text == (
        "advanced after 1h (4200 treatment exposures, judge: continue); "
        "step 2 of 4: 'on' at 10%, held for 2h"
    )
    assert actions[-1] == Notify(Decision.ADVANCED, record.text)


def test_a_pass_verdict_does_not_shorten_the_hold() -> None:
    state = running()
    passing = Observation(Verdict(VerdictKind.PASS), 10_000)
    assert step(state, at(30), passing) == (state, ())
    assert shares(step(state, at(60), passing)[1]) == [10_000]


# -- regressions ------------------------------------------------------------------


def test_a_regression_rolls_back_at_once_and_says_why() -> None:
    state, actions = step(running(), at(3), failing(errors="3.1x control"))
    assert state.phase is Phase.ROLLED_BACK
    assert state.share == 0
    assert actions[0] == SetRollout("off", "on", 0)
    record = actions[1]
    assert isinstance(record, RecordDecision)
    assert record.decision is Decision.ROLLED_BACK
    assert record.explanation["judge"] == {"errors": "3.1x control"}
    assert record.text == "a regression at 1%: rolled back, everyone gets 'off'"


def test_a_regression_says_in_words_what_the_judge_found() -> None:
    """The judge's summary is part of the decision's text: the flag change's audit reason,
    the release's history (status, dashboard) and the notification all say which guard
    found what, not only that something did."""
    found = "errors: the treatment's errors rate is higher than control's (+196%)."
    state, actions = step(running(), at(3), failing(summary=f"Roll back: {found}"))
    record = next(a for a in actions if isinstance(a, RecordDecision))
    assert record.text == f"a regression at 1%: rolled back, everyone gets 'off'; {found}"
    assert state.history[-1].text == record.text
    assert actions[-1] == Notify(Decision.ROLLED_BACK, record.text)
    held, _ = step(
        running(plan(on_regression="hold")), at(3), failing(summary=f"Roll back: {found}")
    )
    assert held.history[-1].text.endswith(f"or abort; {found}")
    other = "experiment 'search' mismatches in 3.00% of 900 runs, above its maximum of 1.00%"
    _, actions = step(running(), at(3), failing(summary=other))
    assert actions[-1] == Notify(
        Decision.ROLLED_BACK, f"a regression at 1%: rolled back, everyone gets 'off'; {other}"
    )
    # however long the summary, the state stays one the server can store and read back
    endless, _ = step(running(), at(3), failing(summary="x" * 10_000))
    assert len(endless.history[-1].text) <= 2000
    assert state_from_data(json.loads(json.dumps(state_to_data(endless)))) == endless


def test_a_rollback_never_waits_for_the_window() -> None:
    p = plan(window="Mon-Fri 09:00-16:00 Europe/Amsterdam")
    state = running(p)
    saturday = datetime(2026, 3, 7, 3, 0, tzinfo=UTC)
    assert not p.options.window.is_open(saturday)  # type: ignore[union-attr]
    state, actions = step(state, saturday, failing())
    assert state.phase is Phase.ROLLED_BACK
    assert shares(actions) == [0]


def test_a_regression_during_verification_rolls_back() -> None:
    state = running()
    for minutes in (60, 180, 300):
        state, _ = step(state, at(minutes), healthy())
    assert (state.phase, state.verified) == (Phase.COMPLETED, False)
    state, actions = step(state, at(330), failing())
    assert state.phase is Phase.ROLLED_BACK
    assert shares(actions) == [0]


def test_hold_on_regression_pauses_at_the_share_and_alerts() -> None:
    state = running(plan(on_regression="hold"))
    state, _ = step(state, at(60), healthy())
    state, actions = step(state, at(70), failing())
    assert state.phase is Phase.PAUSED
    assert state.pause_reason is PauseReason.REGRESSION
    assert state.share == 10_000
    assert shares(actions) == []
    assert kinds(actions) == ["RecordDecision", "Notify"]
    assert actions[-1] == Notify(
        Decision.HELD,
        "a regression at 10%: held there as the plan says (on_regression: hold); "
        "a person decides: resume (and then advance, if need be) or abort",
    )
    # held: nothing moves it by itself, not even more failures
    assert step(state, at(500), failing()) == (state, ())
    state, actions = step(state, at(501), Resume(by="ann"))
    assert (state.phase, state.step_started_at) == (Phase.RUNNING, at(501))
    assert shares(actions) == [10_000]


def test_hold_on_regression_during_verification_resumes_the_verification() -> None:
    state = running(plan(on_regression="hold"))
    state, _ = step(state, at(0), Advance())
    state, _ = step(state, at(0), Advance())
    state, _ = step(state, at(0), Advance())
    assert state.phase is Phase.COMPLETED
    state, _ = step(state, at(10), failing())
    assert (state.phase, state.paused_from) == (Phase.PAUSED, Phase.COMPLETED)
    state, _ = step(state, at(20), Resume())
    assert (state.phase, state.verification_ends_at) == (Phase.COMPLETED, at(80))
    state, _ = step(state, at(80), Tick())
    assert state.verified


# -- waiting -----------------------------------------------------------------------


def test_a_hold_that_ends_outside_the_window_waits_for_it_and_says_so_once() -> None:
    p = plan(window="Mon-Fri 09:00-16:00 Europe/Amsterdam")
    friday = datetime(2026, 3, 6, 14, 30, tzinfo=UTC)  # 15:30 in Amsterdam
    state = running(p)
    state = replace(state, step_started_at=friday - timedelta(minutes=30))
    state, actions = step(state, friday + timedelta(minutes=31), healthy())
    assert state.waiting is WaitReason.WINDOW
    assert state.step == 0
    assert actions[-1] == Notify(
        Decision.WAITING,
        "hold over; waiting for the window (Mon-Fri 09:00-16:00 Europe/Amsterdam), "
        "which opens at 2026-03-09T08:00:00+00:00",
    )
    for hours in range(1, 60):
        later = friday + timedelta(hours=hours)
        state, actions = step(state, later, healthy())
        assert actions == (), later
    monday = datetime(2026, 3, 9, 8, 0, tzinfo=UTC)
    state, actions = step(state, monday, healthy())
    assert shares(actions) == [10_000]
    assert state.waiting is None


def test_a_hold_that_ends_on_the_spring_forward_weekend_waits_for_nine_summer_time() -> None:
    p = plan(window="Mon-Fri 09:00-16:00 Europe/Amsterdam")
    friday = datetime(2026, 3, 27, 14, 30, tzinfo=UTC)  # 15:30 winter time
    state = replace(running(p), step_started_at=friday)
    state, actions = step(state, friday + timedelta(hours=1), healthy())
    assert actions[-1].text.endswith("which opens at 2026-03-30T07:00:00+00:00")  # type: ignore[union-attr]
    assert step(state, datetime(2026, 3, 30, 6, 59, 59, tzinfo=UTC), healthy()) == (state, ())
    state, actions = step(state, datetime(2026, 3, 30, 7, 0, tzinfo=UTC), healthy())
    assert actions[0] == SetRollout("off", "on", 10_000)
    assert actions[0].percent == 10


def test_a_hold_that_ends_on_the_fall_back_weekend_waits_for_nine_winter_time() -> None:
    p = plan(window="Mon-Fri 09:00-16:00 Europe/Amsterdam")
    friday = datetime(2026, 10, 23, 13, 30, tzinfo=UTC)  # 15:30 summer time
    state = replace(running(p), step_started_at=friday)
    state, actions = step(state, friday + timedelta(hours=1), healthy())
    assert actions[-1].text.endswith("which opens at 2026-10-26T08:00:00+00:00")  # type: ignore[union-attr]
    assert step(state, datetime(2026, 10, 26, 7, 59, 59, tzinfo=UTC), healthy()) == (state, ())
    state, actions = step(state, datetime(2026, 10, 26, 8, 0, tzinfo=UTC), healthy())
    assert shares(actions) == [10_000]


def test_a_scheduled_start_waits_for_its_time_and_for_the_window() -> None:
    p = plan(window="Mon-Fri 09:00-16:00 Europe/Amsterdam")
    saturday = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)
    state = new_release(p, "rel-1", T0, start_at=saturday)
    assert step(state, saturday - timedelta(seconds=1), Tick()) == (state, ())
    state, actions = step(state, saturday, Tick())
    assert (state.phase, state.waiting) == (Phase.SCHEDULED, WaitReason.WINDOW)
    assert shares(actions) == []
    state, actions = step(state, datetime(2026, 3, 9, 8, 0, tzinfo=UTC), Tick())
    assert state.phase is Phase.RUNNING
    assert shares(actions) == [1000]


def test_start_by_a_person_does_not_wait() -> None:
    state = new_release(plan(window="Sat 09:00-10:00 UTC"), "rel-1", T0, start_at=at(600))
    state, actions = step(state, T0, Start(by="ann"))
    assert (state.phase, shares(actions)) == (Phase.RUNNING, [1000])
    assert actions[-1] == Notify(
        Decision.STARTED, "started by ann; step 1 of 4: 'on' at 1%, held for 1h"
    )


def test_too_little_data_waits_and_never_fails() -> None:
    state = running(plan(min_exposures=1000))
    state, actions = step(state, at(60), healthy(999))
    assert (state.phase, state.step, state.waiting) == (Phase.RUNNING, 0, WaitReason.DATA)
    assert actions[-1] == Notify(
        Decision.WAITING, "hold over; waiting for data: 999 of 1000 treatment exposures so far"
    )
    for minutes in range(61, 60 * 48, 30):
        state, actions = step(state, at(minutes), NO_DATA)
        assert (state.phase, actions) == (Phase.RUNNING, ())
        state, actions = step(state, at(minutes), Tick())
        assert (state.phase, actions) == (Phase.RUNNING, ())
    state, actions = step(state, at(60 * 48), healthy(1000))
    assert shares(actions) == [10_000]


def test_no_data_from_the_judge_waits_even_with_enough_exposures() -> None:
    state = running()
    state, actions = step(state, at(60), Observation(Verdict(VerdictKind.NO_DATA), 10**6))
    assert state.waiting is WaitReason.DATA
    assert actions[-1] == Notify(
        Decision.WAITING, "hold over; waiting for data: the judge has no data yet"
    )


def test_the_plan_may_say_advance_on_time_alone() -> None:
    state = running(plan(min_exposures=1000, insufficient_data="advance"))
    state, actions = step(state, at(60), Tick())
    assert shares(actions) == [10_000]
    assert actions[-1] == Notify(
        Decision.ADVANCED,
        "advanced after 1h (0 treatment exposures, judge: nothing observed; "
        "too little data, and the plan says advance); step 2 of 4: 'on' at 10%, held for 2h",
    )


# -- people ------------------------------------------------------------------------


def test_approval_comes_before_the_start() -> None:
    state = new_release(plan(require_approval=True), "rel-1", T0)
    assert state.phase is Phase.WAITING_FOR_APPROVAL
    assert step(state, at(5), Tick()) == (state, ())
    with pytest.raises(CommandRefused, match="it waits for approval"):
        step(state, at(5), Start())
    state, actions = step(state, at(6), Approve(by="cy"))
    assert state.phase is Phase.RUNNING
    assert [a.kind for a in actions if isinstance(a, Notify)] == [
        Decision.APPROVED,
        Decision.STARTED,
    ]


def test_the_caller_may_require_approval_when_the_plan_does_not() -> None:
    assert new_release(plan(), "r", T0, require_approval=True).phase is (Phase.WAITING_FOR_APPROVAL)
    assert new_release(plan(require_approval=True), "r", T0, require_approval=False).phase is (
        Phase.SCHEDULED
    )


def test_a_paused_release_takes_no_decision_and_resumes_with_a_new_hold() -> None:
    state, actions = step(running(), at(10), Pause(by="ann", reason="support is busy"))
    assert state.phase is Phase.PAUSED
    assert actions[-1] == Notify(Decision.PAUSED, "paused by ann: support is busy")
    for event in (healthy(), failing(), Tick(), NO_DATA):
        assert step(state, at(500), event) == (state, ())
    with pytest.raises(CommandRefused, match="it is paused; resume it first"):
        step(state, at(500), Advance())
    state, actions = step(state, at(600), Resume(by="ann"))
    assert actions[0] == SetRollout("off", "on", 1000)
    assert state.hold_ends_at == at(660)
    assert step(state, at(659), healthy()) == (state, ())


def test_a_hand_edit_pauses_the_release_and_says_why() -> None:
    state, actions = step(running(), at(10), FlagEdited(by="bob", change="default set to on"))
    assert (state.phase, state.pause_reason) == (Phase.PAUSED, PauseReason.HAND_EDIT)
    assert shares(actions) == []  # the person's change stands
    assert actions[-1] == Notify(
        Decision.PAUSED,
        "paused: the flag was edited by hand by bob: default set to on; "
        "the release leaves it alone until someone resumes it",
    )
    # more edits while paused, or before the start, change nothing
    assert step(state, at(11), FlagEdited()) == (state, ())
    scheduled = new_release(plan(), "rel-2", T0, start_at=at(100))
    assert step(scheduled, at(11), FlagEdited()) == (scheduled, ())


def test_a_person_may_advance_past_the_hold_the_data_and_the_window() -> None:
    state = running(plan(window="Sat 09:00-10:00 UTC", min_exposures=10**6))
    state, actions = step(state, at(1), Advance(by="ann"))
    assert shares(actions) == [10_000]
    assert actions[-1].text.startswith("advanced by ann before the plan would have")  # type: ignore[union-attr]


def test_advancing_the_last_step_completes_and_with_no_verification_verifies() -> None:
    state = running(plan(verification="0s"))
    for _ in range(3):
        state, actions = step(state, at(1), Advance())
    assert (state.phase, state.verified, state.share) == (Phase.COMPLETED, True, 100_000)
    assert [a.kind for a in actions if isinstance(a, Notify)] == [
        Decision.COMPLETED,
        Decision.VERIFIED,
    ]


def test_a_one_step_plan_goes_straight_to_100() -> None:
    p = parse_plan(
        {
            "flag": "f",
            "environment": "e",
            "control": "a",
            "treatment": "b",
            "steps": [{"percent": 100}],
        }
    )
    state, actions = step(new_release(p, "r", T0), T0, Tick())
    assert (state.phase, shares(actions)) == (Phase.COMPLETED, [100_000])


def test_abort_serves_control_unless_told_to_keep_the_share() -> None:
    state, actions = step(running(), at(5), Abort(by="ann", reason="wrong flag"))
    assert (state.phase, state.share, shares(actions)) == (Phase.ABORTED, 0, [0])
    assert actions[-1] == Notify(
        Decision.ABORTED, "aborted by ann: wrong flag; everyone gets 'off'"
    )
    state, actions = step(running(), at(5), Abort(keep_share=True))
    assert (state.phase, state.share, shares(actions)) == (Phase.ABORTED, 1000, [])
    scheduled = new_release(plan(), "rel-2", T0, start_at=at(100))
    state, actions = step(scheduled, at(5), Abort())
    assert shares(actions) == []
    assert actions[-1].text == "aborted; the release had not changed the flag"  # type: ignore[union-attr]


def _completed() -> ReleaseState:
    state = running(plan(verification="0s"))
    for _ in range(3):
        state, _ = step(state, at(1), Advance())
    return state


def _verifying() -> ReleaseState:
    state = running()
    for _ in range(3):
        state, _ = step(state, at(1), Advance())
    return state


REFUSALS = [
    ("completed", Advance(), "it has completed and been verified"),
    ("completed", Resume(), "it has completed and been verified"),
    ("completed", Abort(), "it has completed and been verified"),
    ("completed", Pause(), "it has completed and been verified"),
    ("completed", Start(), "it has completed and been verified"),
    ("verifying", Advance(), "it is at 100% already"),
    ("verifying", Start(), "it has started already"),
    ("verifying", Resume(), "it is not paused"),
    ("verifying", Approve(), "it does not wait for approval"),
    ("rolled_back", Resume(), "it is over; restart it as a new release to try again"),
    ("rolled_back", Advance(), "it is over"),
    ("rolled_back", Start(), "it is over"),
    ("rolled_back", Pause(), "it is over"),
    ("rolled_back", Abort(), "it is over"),
    ("aborted", Resume(), "it is over"),
    ("running", Resume(), "it is not paused"),
    ("running", Start(), "it has started already"),
    ("paused", Pause(), "it is paused already"),
    ("scheduled", Pause(), "it has not started; abort it to cancel it"),
    ("scheduled", Advance(), "it has not started"),
    ("scheduled", Resume(), "it is not paused"),
]


def _in(phase: str) -> ReleaseState:
    if phase == "completed":
        return _completed()
    if phase == "verifying":
        return _verifying()
    if phase == "rolled_back":
        return step(running(), at(1), failing())[0]
    if phase == "aborted":
        return step(running(), at(1), Abort())[0]
    if phase == "paused":
        return step(running(), at(1), Pause())[0]
    if phase == "scheduled":
        return new_release(plan(), "rel-1", T0, start_at=at(100))
    return running()


@pytest.mark.parametrize(("phase", "command", "reason"), REFUSALS)
def test_a_command_the_phase_does_not_allow_is_refused_with_a_reason(
    phase: str, command: Event, reason: str
) -> None:
    state = _in(phase)
    with pytest.raises(CommandRefused) as caught:
        step(state, at(2), command)
    assert caught.value.reason.startswith(reason)
    assert caught.value.phase == state.phase.value
    assert str(caught.value).startswith(f"cannot {caught.value.command} a release that is ")


def test_odd_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        step(running(), datetime(2026, 3, 2, 9, 0), Tick())
    with pytest.raises(TypeError, match="not an event"):
        step(running(), T0, "advance")  # type: ignore[arg-type]


# -- restarts ------------------------------------------------------------------------


def test_a_rolled_back_release_restarts_as_a_new_one_that_keeps_the_history() -> None:
    old, _ = step(running(), at(3), failing())
    new = restart(old, "rel-2", at(30))
    assert (new.id, new.previous, new.attempt, new.phase) == ("rel-2", "rel-1", 2, Phase.SCHEDULED)
    assert (new.step, new.share) == (-1, 0)
    assert new.history[: len(old.history)] == old.history
    assert [e.decision for e in new.history[len(old.history) :]] == [
        Decision.RESTARTED,
        Decision.CREATED,
    ]
    assert new.history[len(old.history)].text == "restarted as rel-2 from rel-1 (rolled back)"
    _state, actions = step(new, at(30), Tick())
    assert shares(actions) == [1000]
    assert restart(step(running(), at(3), Abort())[0], "rel-3", at(30)).previous == "rel-1"


def test_only_a_stopped_release_restarts_and_under_a_new_id() -> None:
    with pytest.raises(CommandRefused, match="only a rolled-back or aborted release"):
        restart(running(), "rel-2", at(30))
    with pytest.raises(CommandRefused, match="only a rolled-back or aborted release"):
        restart(_completed(), "rel-2", at(30))
    with pytest.raises(CommandRefused, match="needs a new id"):
        restart(step(running(), at(3), failing())[0], "rel-1", at(30))


# -- stored state ----------------------------------------------------------------------


def test_the_stored_state_is_plain_data() -> None:
    state, _ = step(running(), at(10), Pause(by="ann"))
    data = state_to_data(state)
    assert data["phase"] == "paused"
    assert data["step_started_at"] == "2026-03-02T09:00:00+00:00"
    assert data["share"] == 1
    assert data["paused_from"] == "running"
    assert json.loads(json.dumps(data)) == data
    assert state_from_data(data) == state


def _stored(**changes: Any) -> dict[str, Any]:
    data = state_to_data(running())
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([], [("", "must be a mapping, not a list")]),
        ({**_stored(), "extra": 1}, [("extra", "unknown field 'extra'")]),
        ({k: v for k, v in _stored().items() if k != "plan"}, [("plan", "is required")]),
        (_stored(format=2), [("format", "unknown format 2")]),
        (
            _stored(phase="sleeping"),
            [
                (
                    "phase",
                    "unknown phase 'sleeping' (one of: scheduled, waiting_for_approval, "
                    "running, paused, completed, rolled_back, aborted)",
                )
            ],
        ),
        (
            _stored(created_at="yesterday"),
            [("created_at", "must be an ISO 8601 time with its UTC offset, not 'yesterday'")],
        ),
        (
            _stored(created_at="2026-03-02T09:00:00"),
            [
                (
                    "created_at",
                    "must be an ISO 8601 time with its UTC offset, not '2026-03-02T09:00:00'",
                )
            ],
        ),
        (_stored(step=7), [("step", "must be from -1 to 3 for this plan, not 7")]),
        (_stored(share=50), [("share", "at step 0 the share is 1")]),
        (_stored(step=-1), [("step", "a release that is running has a step")]),
        (
            _stored(step_started_at=None),
            [("step_started_at", "a started release knows when its step began")],
        ),
        (
            _stored(paused_from="running"),
            [("paused_from", "is set exactly when the release is paused")],
        ),
        (
            _stored(pause_reason="by_person"),
            [("pause_reason", "is set exactly when the release is paused")],
        ),
        (_stored(phase="completed"), [("step", "a completed release is at its last step")]),
        (_stored(verified=True), [("verified", "a release that is running cannot be verified")]),
        (
            _stored(phase="paused", paused_from="scheduled", pause_reason="by_person"),
            [("paused_from", "a release is paused from running or completed")],
        ),
        (
            _stored(waiting="tea"),
            [("waiting", "unknown waiting 'tea' (one of: window, data, deploy)")],
        ),
        (_stored(attempt=0), [("attempt", "must be a whole number from 1 to 1000000, not 0")]),
        (
            _stored(previous=""),
            [("previous", "an id '' must be 1-200 printable characters without spaces")],
        ),
        (_stored(history={}), [("history", "must be a list, not a mapping")]),
        (
            _stored(history=[{"at": "x"}]),
            [
                (f"history[0].{k}", "is required")
                for k in ("release", "decision", "phase", "step", "share", "text")
            ],
        ),
        (
            _stored(
                history=[
                    {
                        "at": "x",
                        "release": "r",
                        "decision": "won",
                        "phase": "running",
                        "step": 0,
                        "share": 1,
                        "text": 5,
                    }
                ]
            ),
            [
                ("history[0].at", "must be an ISO 8601 time with its UTC offset, not 'x'"),
                (
                    "history[0].decision",
                    "unknown decision 'won' (one of: created, approved, started, advanced, "
                    "waiting, completed, verified, rolled_back, held, paused, resumed, "
                    "aborted, restarted)",
                ),
                ("history[0].text", "must be a string of at most 2000 characters"),
            ],
        ),
    ],
)
def test_stored_state_that_we_did_not_write_is_refused(
    data: object, expected: list[tuple[str, str]]
) -> None:
    with pytest.raises(InvalidState) as caught:
        state_from_data(data)
    found = [(p.path, p.message) for p in caught.value.problems]
    assert sorted(found) == sorted(expected)


def test_a_bad_plan_inside_the_state_is_named_under_plan() -> None:
    data = _stored()
    data["plan"] = {**data["plan"], "control": "on"}
    with pytest.raises(InvalidState) as caught:
        state_from_data(data)
    assert [(p.path, p.message) for p in caught.value.problems] == [
        ("plan.treatment", "must differ from control (both are 'on')")
    ]
    data["plan"] = "plan"
    with pytest.raises(InvalidState, match="  plan: a plan must be a mapping, not a string"):
        state_from_data(data)


# -- what no sequence of inputs can do -------------------------------------------------

_VERDICTS = st.builds(Verdict, st.sampled_from([VerdictKind.CONTINUE, VerdictKind.PASS]))


def _event(roll: int) -> st.SearchStrategy[Event]:
    """Mostly healthy looks and time passing, now and then a person or a regression."""
    if roll < 55:
        return st.builds(Observation, _VERDICTS, st.integers(0, 3000))
    if roll < 70:
        return st.just(Tick())
    if roll < 74:
        return st.just(NO_DATA)
    if roll < 76:
        return st.builds(failing)
    people: list[Event] = [Approve()] * 4 + [Start()] * 3 + [Pause()] * 3 + [Resume()] * 6
    people += [Advance()] * 5 + [FlagEdited()] * 2
    if roll < 99:
        return st.just(people[roll - 76])
    return st.builds(Abort, keep_share=st.booleans())


EVENTS: st.SearchStrategy[Event] = st.integers(0, 99).flatmap(_event)
GAPS = st.integers(0, 4 * 3600).map(lambda s: timedelta(seconds=s))
STARTS = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 31), timezones=st.just(UTC)
)
RUNS = st.tuples(
    PLANS,
    STARTS,
    st.none() | GAPS,
    st.lists(st.tuples(GAPS, EVENTS), min_size=15, max_size=60),
)

Outcome = tuple[ReleaseState, tuple[Action, ...]] | str


def _apply(state: ReleaseState, now: datetime, event: Event) -> Outcome:
    try:
        return step(state, now, event)
    except CommandRefused as refused:
        return refused.reason


def _replay(run: Any, *, through_json: bool) -> list[Outcome]:
    p, start, delay, events = run
    state = new_release(p, "rel-1", start, start_at=None if delay is None else start + delay)
    now = start
    out: list[Outcome] = []
    for gap, event in events:
        now += gap
        if through_json:  # as a restarted server or a new leader would read it
            state = state_from_data(json.loads(json.dumps(state_to_data(state))))
        outcome = _apply(state, now, event)
        out.append(outcome)
        if not isinstance(outcome, str):
            state = outcome[0]
    return out


AUTOMATIC = (Tick, Observation, FlagEdited)


@settings(max_examples=200, deadline=None)
@given(RUNS)
def test_no_sequence_of_inputs_breaks_the_rules(run: Any) -> None:
    p, start, delay, events = run
    state = new_release(p, "rel-1", start, start_at=None if delay is None else start + delay)
    now = start
    was_completed = False
    for gap, event in events:
        now += gap
        outcome = _apply(state, now, event)
        if isinstance(outcome, str):
            assert outcome  # a refusal always says why
            continue
        new, actions = outcome
        set_to = shares(actions)
        going_back = new.phase in {Phase.ROLLED_BACK, Phase.ABORTED}

        # a stopped or finished release never moves again
        if state.phase in {Phase.ROLLED_BACK, Phase.ABORTED} or state.over:
            assert (new, actions) == (state, ())
        was_completed = was_completed or state.phase is Phase.COMPLETED
        if was_completed:
            assert new.phase not in {Phase.RUNNING, Phase.SCHEDULED, Phase.WAITING_FOR_APPROVAL}
        # the share moves backwards only by a rollback (or an abort, which is one)
        if new.share < state.share or any(s < state.share for s in set_to):
            assert going_back
        if set_to:
            assert set_to[-1] == new.share
        # a paused release does not advance
        if state.phase is Phase.PAUSED:
            assert new.step == state.step
            assert new.share <= state.share
        # steps go one at a time, forwards
        assert state.step <= new.step <= state.step + 1
        # an automatic advance waits for the hold, the window and (if so planned) the data
        if new.step > state.step and state.phase is Phase.RUNNING:
            assert not isinstance(event, FlagEdited)
            if isinstance(event, Tick | Observation):
                assert state.hold_ends_at is not None
                assert now >= state.hold_ends_at
                window = p.options.window
                assert window is None or window.is_open(now)
                if p.options.insufficient_data is OnInsufficientData.WAIT:
                    assert isinstance(event, Observation)
                    assert event.verdict.kind is not VerdictKind.NO_DATA
                    assert event.treatment_exposures >= p.options.min_exposures
        # a regression is acted on at once
        watching = state.phase is Phase.RUNNING or (
            state.phase is Phase.COMPLETED and not state.verified
        )
        if watching and isinstance(event, Observation) and event.verdict.kind is VerdictKind.FAIL:
            assert new.phase is Phase.ROLLED_BACK or new.pause_reason is PauseReason.REGRESSION
        # the history only grows
        assert new.history[: len(state.history)] == state.history
        state = new


@settings(max_examples=100, deadline=None)
@given(RUNS)
def test_the_same_inputs_give_the_same_outputs_even_through_stored_state(run: Any) -> None:
    direct = _replay(run, through_json=False)
    assert _replay(run, through_json=False) == direct
    assert _replay(run, through_json=True) == direct


@settings(max_examples=100, deadline=None)
@given(RUNS)
def test_every_reachable_state_reads_back_equal(run: Any) -> None:
    for outcome in _replay(run, through_json=False):
        if not isinstance(outcome, str):
            state = outcome[0]
            assert state_from_data(json.loads(json.dumps(state_to_data(state)))) == state
