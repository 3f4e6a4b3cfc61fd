"""What a use case refuses, as typed exceptions the HTTP layer maps to statuses."""

from __future__ import annotations

from unveil.core import Problem, UnveilError

__all__ = ["Conflict", "Invalid", "NotFound", "PreconditionFailed", "PreconditionRequired"]


class NotFound(UnveilError):
    """No such project, environment, flag or segment."""


class Conflict(UnveilError):
    """The thing to create exists already."""


class PreconditionRequired(UnveilError):
    """Changing an existing thing needs the version it was read at (If-Match)."""


class PreconditionFailed(UnveilError):
    """The thing changed since it was read: the write would lose someone's update."""

    def __init__(self, current: int | str) -> None:
        self.current = current
        super().__init__(f"the version is now {current}; read it again and retry")


class Invalid(UnveilError):
    """The change would make the environment's flags invalid; nothing was written."""

    def __init__(self, problems: tuple[Problem, ...]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))
