"""What a use case refuses, as typed exceptions; the server maps them to statuses in one place.

UnveilError (unveil.core)
├── InvalidDocument (unveil.core)   a flags document is refused, with every problem
├── Invalid                         a request or change is refused, with every problem
├── BadRequest                      a request that cannot be understood at all
├── Unauthenticated                 no token, or one that is not valid
├── Forbidden                       a valid token without the right to do this
├── NotFound                        no such project, environment, flag, token...
├── Conflict                        the thing to create exists already
├── PreconditionRequired            changing needs the version it was read at
├── PreconditionFailed              it changed since it was read
├── Overloaded                      too busy now: retry after a moment
└── Fenced                          a background job lost its claim (never reaches HTTP)
"""

from __future__ import annotations

from unveil.core import InvalidDocument, Problem, UnveilError

__all__ = [
    "BadRequest",
    "Conflict",
    "Fenced",
    "Forbidden",
    "Invalid",
    "NotFound",
    "Overloaded",
    "PreconditionFailed",
    "PreconditionRequired",
    "StoredInvalid",
    "Unauthenticated",
]


class NotFound(UnveilError):
    """No such project, environment, flag, segment, token or job."""


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
    """The request or the change it makes is refused; nothing was written."""

    def __init__(self, problems: tuple[Problem, ...]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))


class StoredInvalid(InvalidDocument):
    """What an environment holds no longer reads back (stored under older, looser rules).

    Answered like any invalid document (422, every problem named); a whole
    document applied replaces it.
    """

    subject = (
        "the flags stored in this environment no longer validate (apply a corrected"
        " document to replace them:"
        " PUT .../document or unveil apply); they have"
    )


class BadRequest(UnveilError):
    """A request that cannot be understood (a malformed header or body)."""


class Unauthenticated(UnveilError):
    """No token, or a token that is not valid."""


class Forbidden(UnveilError):
    """A valid token that may not do this."""


class Overloaded(UnveilError):
    """Too busy right now; the caller should retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class Fenced(UnveilError):
    """A job's claim was taken over (another leader): its effect must not be written."""
