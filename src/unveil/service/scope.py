"""Finding the project or environment a request names, or saying there is none."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from unveil.core import Problem
from unveil.service.errors import Invalid, NotFound
from unveil.store.items import Item, Part
from unveil.store.unit import Reading

__all__ = [
    "MAX_AHEAD",
    "check_state",
    "environment_items",
    "require_environment",
    "require_project",
    "when_problem",
]


def missing_environment(project: str, env: str) -> NotFound:
    """The refusal of a project and environment that name no environment."""
    return NotFound(f"no environment '{env}' in project '{project}'")


def require_environment(reading: Reading, project: str, env: str, lock: bool = False) -> int:
    """The environment's id (its row held for the transaction with ``lock``)."""
    found = reading.environments.id_of(project, env, lock=lock)
    if found is None:
        raise missing_environment(project, env)
    return found


def require_held_environment(work: Reading, project: str, env: str) -> tuple[int, int]:
    """The environment's id and version, its row held for the transaction."""
    found = work.environments.held(project, env)
    if found is None:
        raise missing_environment(project, env)
    return found


def require_held_item(
    work: Reading, part: Part, project: str, env: str, key: str
) -> tuple[int, int, Item | None]:
    """The environment's id and version, its row held for the transaction, and its item
    ``key`` of ``part`` (None if it has none)."""
    found = work.items(part).held(project, env, key)
    if found is None:
        raise missing_environment(project, env)
    return found


def require_project(reading: Reading, project: str) -> int:
    found = reading.projects.id_of(project)
    if found is None:
        raise NotFound(f"no project '{project}'")
    return found


def check_state(state: str | None, states: tuple[str, ...]) -> None:
    """Refuse a ``state`` filter that names no state (422 naming the parameter)."""
    if state is not None and state not in states:
        known = ", ".join(states)
        raise Invalid((Problem("state", f"unknown state {state!r} (one of: {known})"),))


def environment_items(reading: Reading, environment_id: int) -> dict[str, Any]:
    """An environment's flags and segments as stored, by key (a document's two parts)."""
    return {
        "flags": {i.key: i.data for i in reading.flags.all(environment_id)},
        "segments": {i.key: i.data for i in reading.segments.all(environment_id)},
    }


#: how far ahead something may be set to happen (a schedule, a release's start)
MAX_AHEAD = timedelta(days=5 * 366)
#: a time this little in the past is "now" (callers' clocks drift)
_GRACE = timedelta(seconds=5)


def when_problem(at: datetime, now: datetime, field: str, text: str) -> Problem | None:
    """What is wrong with a time something is set to happen at: past, or years ahead."""
    if at < now - _GRACE:
        return Problem(field, f"{text} is in the past")
    if at > now + MAX_AHEAD:
        return Problem(field, "is more than five years ahead")
    return None
