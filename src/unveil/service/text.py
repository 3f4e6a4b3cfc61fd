"""Text that people and programs send: checked before any database sees it.

PostgreSQL refuses a NUL character in text and every column has a length;
control characters in names make logs and audit entries lie. So every name,
key, reason and filter that enters a use case passes through here first,
and a bad one is refused with the field named, never a database error.
"""

from __future__ import annotations

import re

from unveil.core import Problem
from unveil.service.errors import Invalid

__all__ = ["KEY_PATTERN", "check_key", "check_text", "text_problem"]

#: Project and environment keys: they appear in URLs and file names.
KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # tab and newline are allowed in reasons
_CONTROL_IN_NAMES = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def text_problem(
    value: object, field: str, max_length: int, multiline: bool = False
) -> Problem | None:
    """What is wrong with a text value, if anything."""
    if not isinstance(value, str):
        return Problem(field, "must be a string")
    if not value:
        return Problem(field, "must not be empty")
    if len(value) > max_length:
        return Problem(field, f"must be at most {max_length} characters")
    if (_CONTROL if multiline else _CONTROL_IN_NAMES).search(value):
        return Problem(field, "must not contain control characters")
    if _SURROGATE.search(value):
        return Problem(field, "must not contain a lone surrogate (it is not text UTF-8 can carry)")
    return None


def check_text(value: str, field: str, max_length: int = 200, multiline: bool = False) -> str:
    """The value, or ``Invalid`` naming the field."""
    problem = text_problem(value, field, max_length, multiline)
    if problem is not None:
        raise Invalid((problem,))
    return value


def check_key(value: str, field: str) -> str:
    """A project or environment key: letters, digits, '_', '.', '-', at most 100."""
    check_text(value, field, 100)
    if not KEY_PATTERN.fullmatch(value) or value in {".", ".."}:
        raise Invalid(
            (Problem(field, "must start with a letter or digit and hold only A-Z a-z 0-9 _ . -"),)
        )
    return value
