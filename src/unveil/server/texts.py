"""Free text people write in request bodies (reasons, comments): checked as query text is.

The same rules as ``unveil.service.text.text_problem`` with several lines
allowed: no control characters other than line breaks and tabs, no lone
surrogates. A reason shows up in terminals (the CLI prints it) and in the
dashboard; an escape sequence in it would be someone else's command.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from unveil.service.text import text_problem

__all__ = ["Comment", "Reason"]


def _checked(value: str) -> str:
    if value == "":
        return value
    problem = text_problem(value, "text", 2000, multiline=True)
    if problem is not None:
        raise ValueError(problem.message)
    return value


#: a reason for the audit log, in a body
Reason = Annotated[str, Field(max_length=1000), AfterValidator(_checked)]
#: a comment on a change request
Comment = Annotated[str, Field(max_length=2000), AfterValidator(_checked)]
