"""Every path and query parameter is checked as text before any route sees it.

One dependency on every router, so no parameter of any operation, today's
or tomorrow's, can carry a NUL character, a control character or an
over-long value to the database (PostgreSQL refuses NUL in text, and every
column has a length): it is refused with 422 naming the parameter.
"""

from __future__ import annotations

from fastapi import Request

from unveil.core import Problem
from unveil.service.errors import Invalid
from unveil.service.text import text_problem

__all__ = ["MAX_PATH_PARAMETER", "MAX_QUERY_PARAMETER", "checked_parameters"]

#: The longest path parameter: a flag key (the longest key there is) fits.
MAX_PATH_PARAMETER = 200
#: The longest query parameter: a reason for the audit log fits.
MAX_QUERY_PARAMETER = 1000
#: Query parameters that may hold several lines.
_MULTILINE = {"reason"}


async def checked_parameters(request: Request) -> None:
    problems: list[Problem] = []
    for name, value in request.path_params.items():
        if isinstance(value, str):
            problem = text_problem(value, name, MAX_PATH_PARAMETER)
            if problem is not None:
                problems.append(problem)
    for name, value in request.query_params.multi_items():
        if value == "":
            continue  # an empty value is the same as none
        problem = text_problem(value, name, MAX_QUERY_PARAMETER, multiline=name in _MULTILINE)
        if problem is not None:
            problems.append(problem)
    if problems:
        raise Invalid(tuple(problems))
