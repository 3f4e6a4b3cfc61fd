"""From what went wrong to the HTTP answer that says so: the one table, used everywhere.

Use cases raise typed errors (``unveil.service.errors`` draws their tree);
the exception handlers of the application and the guard in front of it
both answer through ``error_response``, so a refusal reads the same
wherever it is found. A database that cannot be reached is 503 with
Retry-After (the caller should try again, nothing was changed); anything
else unexpected is a JSON 500 with the details in the log, never a
traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from unveil.core import InvalidDocument, UnveilError
from unveil.release.errors import CommandRefused
from unveil.service.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    Overloaded,
    PreconditionFailed,
    PreconditionRequired,
    StoredInvalid,
    Unauthenticated,
)

__all__ = ["STATUS", "error_response"]

log = logging.getLogger("unveil.server")

#: The one table from what a use case refuses to the HTTP status that says so.
STATUS: dict[type[UnveilError], int] = {
    BadRequest: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    PreconditionFailed: 412,
    Invalid: 422,
    InvalidDocument: 422,
    StoredInvalid: 422,
    PreconditionRequired: 428,
    Overloaded: 429,
    CommandRefused: 409,
}


def _sendable(text: str) -> str:
    """The text with anything UTF-8 cannot carry (a lone surrogate it echoes) escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


#: A refusal's ``error`` names at most this many problems; ``problems`` has them all (a
#: document of thousands of wrong flags would otherwise say everything twice).
MOST_NAMED = 10


def _error_text(exc: Exception) -> str:
    if isinstance(exc, Invalid | InvalidDocument) and len(exc.problems) > MOST_NAMED:
        first = "; ".join(str(p) for p in exc.problems[:MOST_NAMED])
        count = len(exc.problems)
        return f"{count} problems, every one in 'problems'; the first {MOST_NAMED}: {first}"
    return str(exc)


def error_response(exc: Exception) -> JSONResponse:
    """The answer for any exception: its status from ``STATUS``, or 500 for the unexpected."""
    status = next((STATUS[k] for k in type(exc).__mro__ if k in STATUS), 500)
    headers: dict[str, str] = {}
    if isinstance(exc, OperationalError):  # the database is away or refuses connections
        log.warning("the database could not be reached: %s", exc.orig)
        away = {"error": "the database cannot be reached right now; retry shortly"}
        return JSONResponse(away, 503, headers={"Retry-After": "1"})
    if status == 500:
        log.error("unexpected error", exc_info=exc)
        return JSONResponse({"error": "internal error; the server log has the details"}, 500)
    body: dict[str, Any] = {"error": _sendable(_error_text(exc))}
    if isinstance(exc, Invalid | InvalidDocument):
        body["problems"] = [
            {"path": _sendable(p.path), "message": _sendable(p.message)} for p in exc.problems
        ]
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, Overloaded):
        headers["Retry-After"] = str(exc.retry_after)
    return JSONResponse(body, status_code=status, headers=headers)
