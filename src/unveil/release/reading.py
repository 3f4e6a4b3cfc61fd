"""Reading plain data (what YAML or JSON gave) while collecting every problem.

Plans and stored release states are refused whole with each problem and
its path, never one at a time; this reader is what both use to say so.
Durations have one text form here too (``30m``, ``1h30m``, ``2d``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from unveil.core.errors import Problem

__all__ = ["MAX_DURATION", "Reader", "duration_text", "join", "type_name"]

_PLAIN_PATH_PART = re.compile(r"[A-Za-z0-9_-]+")
_KEY = re.compile(r"[^\s\x00-\x1f\x7f]{1,200}")
_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_MAX_TEXT = 200

#: the longest hold or verification period a plan may ask for
MAX_DURATION = timedelta(days=365)


def join(path: str, key: str) -> str:
    """The path of ``key`` under ``path``, quoted when it is not a plain name."""
    if _PLAIN_PATH_PART.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f'{path}["{key}"]'


def type_name(value: object) -> str:
    """What a value is, in the words an error message uses."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__


def duration_text(value: timedelta) -> str:
    """The canonical text of a whole-second duration: ``1h30m``, ``0s``."""
    seconds = int(value.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


class Reader:
    """Reads typed values out of plain data, noting a problem for each bad one."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def mapping(self, value: object, path: str, allowed: frozenset[str]) -> Mapping[str, Any]:
        """The mapping, or an empty one (with a problem) when it is none."""
        if not isinstance(value, Mapping):
            self.fail(path, f"must be a mapping, not {type_name(value)}")
            return {}
        for key in value:
            if not isinstance(key, str):
                self.fail(path, f"field names must be strings, not {type_name(key)} {key!r}")
            elif key not in allowed:
                self.fail(join(path, key), f"unknown field '{key}'")
        return value

    def require(self, body: Mapping[str, Any], key: str, path: str) -> bool:
        if key in body:
            return True
        self.fail(join(path, key), "is required")
        return False

    def sequence(self, value: object, path: str) -> list[Any]:
        if not isinstance(value, list | tuple):
            self.fail(path, f"must be a list, not {type_name(value)}")
            return []
        return list(value)

    def key(self, value: object, path: str, what: str) -> str | None:
        """A name people type: printable, no spaces, at most 200 characters."""
        if not isinstance(value, str) or not _KEY.fullmatch(value) or not value.isprintable():
            self.fail(path, f"{what} {value!r} must be 1-200 printable characters without spaces")
            return None
        return value

    def text(self, value: object, path: str, limit: int = _MAX_TEXT) -> str | None:
        if not isinstance(value, str) or not value or len(value) > limit:
            self.fail(path, f"must be a non-empty string of at most {limit} characters")
            return None
        if not value.isprintable():
            self.fail(path, "must not hold control characters")
            return None
        return value

    def boolean(self, value: object, path: str) -> bool | None:
        if not isinstance(value, bool):
            self.fail(path, f"must be true or false, not {type_name(value)}")
            return None
        return value

    def whole(self, value: object, path: str, low: int, high: int) -> int | None:
        if value.__class__ is not int or not low <= value <= high:  # bool is not int here
            self.fail(path, f"must be a whole number from {low} to {high}, not {value!r}")
            return None
        assert isinstance(value, int)
        return value

    def choice(self, value: object, path: str, what: str, options: tuple[str, ...]) -> str | None:
        if not isinstance(value, str) or value not in options:
            self.fail(path, f"unknown {what} {value!r} (one of: {', '.join(options)})")
            return None
        return value

    def share(self, value: object, path: str, *, zero: bool) -> int | None:
        """A percent with up to three decimals, as thousandths of a percent."""
        low = "0" if zero else "above 0"
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not (0 <= value <= 100 if zero else 0 < value <= 100)
        ):
            self.fail(path, f"a percent must be a number {low} and at most 100, not {value!r}")
            return None
        scaled = float(value) * 1000
        share = round(scaled)
        if not math.isclose(scaled, share, abs_tol=1e-6) or (share == 0 and not zero):
            self.fail(path, f"{value!r} has more than three decimals")
            return None
        return share

    def duration(self, value: object, path: str) -> timedelta | None:
        """A duration: text like ``30m`` or ``1h30m``, or a whole number of seconds."""
        if value.__class__ is int:
            assert isinstance(value, int)
            seconds = value
        elif isinstance(value, str) and value and (match := _DURATION.fullmatch(value)):
            d, h, m, s = (int(g or 0) for g in match.groups())
            seconds = ((d * 24 + h) * 60 + m) * 60 + s
        else:
            self.fail(
                path,
                f"a duration is text like '90s', '30m', '1h30m' or '2d', "
                f"or whole seconds, not {value!r}",
            )
            return None
        if seconds < 0:
            self.fail(path, f"must not be negative, not {value!r}")
            return None
        if seconds > MAX_DURATION.total_seconds():
            self.fail(path, f"must be at most {MAX_DURATION.days} days, not {value!r}")
            return None
        return timedelta(seconds=seconds)

    def instant(self, value: object, path: str) -> datetime | None:
        """A timezone-aware ISO 8601 timestamp."""
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                parsed = None
            if parsed is not None and parsed.utcoffset() is not None:
                return parsed
        self.fail(path, f"must be an ISO 8601 time with its UTC offset, not {value!r}")
        return None
