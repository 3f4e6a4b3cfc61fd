"""A plan's guards as the judge's configuration, and the windows the judge is fed.

The plan says what people ask for (``release/plan.py``); the judge has its
own, finer configuration (``release/judge.py``). This is the one place the
first becomes the second, so that the worker and any tool that replays a
release judge alike. A release is judged in release mode: only FAIL (or
keep going) comes out, never an early PASS, because the plan's holds decide
when to advance.

The judge compares the arms window by window (what both share in a window
cancels), so the worker feeds it the server's 10-second windows in order,
and ``windows`` is the one way to cut a stretch of time into them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from unveil.release.judge import (
    ContinuousGuard,
    Direction,
    JudgeConfig,
    RateGuard,
)
from unveil.release.judge import (
    Guard as JudgeGuard,
)
from unveil.release.plan import Guard, GuardKind, Plan

__all__ = ["WINDOW", "ceil_window", "floor_window", "judge_config", "windows"]

#: the length of the server's aggregation windows, the judge's batches
WINDOW = timedelta(seconds=10)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _judge_guard(guard: Guard) -> JudgeGuard:
    direction = Direction(guard.direction.value)
    if guard.kind is GuardKind.RATE:
        return RateGuard(guard.name, guard.metric, direction, guard.margin)
    return ContinuousGuard(guard.name, guard.metric, direction, guard.margin)


def judge_config(plan: Plan) -> JudgeConfig | None:
    """The judge for ``plan``'s guards; None for a plan without guards (time alone decides)."""
    if not plan.guards:
        return None
    return JudgeConfig(
        tuple(_judge_guard(g) for g in plan.guards),
        min_exposures=plan.options.min_exposures,
        horizon_s=None,
        early_pass=False,
    )


def floor_window(at: datetime) -> datetime:
    """The start of the window ``at`` falls in."""
    seconds = (at - _EPOCH) // timedelta(seconds=1)
    size = int(WINDOW.total_seconds())
    return _EPOCH + timedelta(seconds=seconds - seconds % size)


def ceil_window(at: datetime) -> datetime:
    """The first window start at or after ``at``."""
    start = floor_window(at)
    return start if start == at else start + WINDOW


def windows(start: datetime, end: datetime, limit: int | None = None) -> Iterator[datetime]:
    """The starts of the whole windows from ``start`` (a window start) up to ``end``."""
    at, given = start, 0
    while at + WINDOW <= end and (limit is None or given < limit):
        yield at
        at += WINDOW
        given += 1
