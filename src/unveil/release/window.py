"""When a release may advance: weekdays and hours in a named IANA time zone.

A team wants its releases to move while people are at work to watch them,
not at 3 a.m. or on a Sunday. A window is written the way people say it::

    Mon-Fri 09:00-16:00 Europe/Amsterdam
    Mon-Thu 09:00-16:00; Fri 09:00-12:00 Europe/Amsterdam

Spans are separated by ``;`` and share the zone named last. Days are
``Mon`` .. ``Sun`` (or full names, any case), as ranges (``Mon-Fri``, also
across the weekend: ``Fri-Mon``), lists (``Mon,Wed``) or ``daily``; hours are
``HH:MM-HH:MM`` on the local wall clock, the end excluded, ``24:00`` for the
end of the day. A span may not cross midnight: write two spans instead.

The hours are wall-clock hours, so a window keeps its local meaning across
daylight-saving changes: on the spring-forward day an opening that falls in
the skipped hour happens when the clock jumps past it; on the fall-back day
the repeated hour is open (or closed) both times. Only advancing waits for a
window; a rollback never does (see ``unveil.release.machine``).

Pure: the time is passed in. The zone's rules come from the system's zone
files or, where there are none, the ``tzdata`` package.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from unveil.core.timestamps import instants_at_wall
from unveil.release.errors import InvalidWindow

__all__ = ["Span", "Window", "parse_window", "time_zone"]

_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_FULL_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_INDEX = {name.lower(): i for i, name in enumerate(_DAY_NAMES)} | {
    name: i for i, name in enumerate(_FULL_NAMES)
}
_ALL_DAYS = frozenset(range(7))
_HOURS = re.compile(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})")
_ZONE_KEY = re.compile(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*")
_DAY_MINUTES = 24 * 60
#: how far ahead an opening is looked for; every window that parses opens within it
_HORIZON_DAYS = 366
_CHUNK_DAYS = 8


@dataclass(frozen=True, slots=True)
class Span:
    """Some weekdays, and the local hours they are open on each of them.

    ``days`` are 0 (Monday) to 6 (Sunday); ``start`` and ``end`` are minutes
    after local midnight, ``0 <= start < end <= 1440``.
    """

    days: frozenset[int]
    start: int
    end: int

    def __str__(self) -> str:
        return f"{_days_text(self.days)} {_clock(self.start)}-{_clock(self.end)}"


@dataclass(frozen=True, slots=True)
class Window:
    """The times at which a release may advance by itself."""

    spans: tuple[Span, ...]
    zone: str

    def __str__(self) -> str:
        return "; ".join(str(span) for span in self.spans) + f" {self.zone}"

    def is_open(self, at: datetime) -> bool:
        """Whether the instant ``at`` (timezone-aware) lies in the window."""
        local = _aware(at).astimezone(ZoneInfo(self.zone))
        minute = local.hour * 60 + local.minute
        return any(
            local.weekday() in span.days and span.start <= minute < span.end for span in self.spans
        )

    def next_opening(self, at: datetime) -> datetime:
        """The first instant at or after ``at`` at which the window is open (in UTC).

        The window is open on a piece of the time line between two instants
        at which the wall clock reaches an opening time or jumps (a zone
        transition), so the first opening is the earliest of those instants
        that is open. Looking at all of them rather than at "today at 09:00"
        is what makes the skipped and the repeated hour come out right.
        """
        at = _aware(at).astimezone(UTC)
        if self.is_open(at):
            return at
        zone = ZoneInfo(self.zone)
        first_day = at.astimezone(zone).date()
        for chunk in range(0, _HORIZON_DAYS, _CHUNK_DAYS):
            found: list[datetime] = []
            for offset in range(chunk, chunk + _CHUNK_DAYS):
                day = first_day + timedelta(days=offset)
                for span in self.spans:
                    if day.weekday() in span.days:
                        found.extend(_instants_at_wall(day, span.start, zone))
                found.extend(_transitions_around(day, zone))
            openings = [c for c in found if c >= at and self.is_open(c)]
            if openings:
                return min(openings)
        raise InvalidWindow(str(self), f"does not open within {_HORIZON_DAYS} days")


def _aware(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"a timezone-aware datetime is needed, not {at!r}")
    return at


def _instants_at_wall(day: date, minute: int, zone: ZoneInfo) -> list[datetime]:
    """The instants (zero, one or two) at which the wall clock shows ``minute`` on ``day``."""
    return instants_at_wall(datetime.combine(day, time(minute // 60, minute % 60)), zone)


def _offset_at(seconds: int, zone: ZoneInfo) -> timedelta | None:
    return datetime.fromtimestamp(seconds, zone).utcoffset()


def _transitions_around(day: date, zone: ZoneInfo) -> list[datetime]:
    """The instants near ``day`` at which the zone's offset changes (to the second)."""
    midnight = datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)
    lo = int(midnight.timestamp()) - 3 * 3600
    hi = lo + 30 * 3600
    if _offset_at(lo, zone) == _offset_at(hi, zone):
        return []
    out: list[datetime] = []
    step = 1800
    for left in range(lo, hi, step):
        right = left + step
        before = _offset_at(left, zone)
        if _offset_at(right, zone) == before:
            continue
        # the first second with the new offset lies in (left, right]
        a, b = left, right
        while b - a > 1:
            mid = (a + b) // 2
            if _offset_at(mid, zone) == before:
                a = mid
            else:
                b = mid
        out.append(datetime.fromtimestamp(b, UTC))
    return out


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _days_text(days: frozenset[int]) -> str:
    if days == _ALL_DAYS:
        return "Mon-Sun"
    runs: list[list[int]] = []
    for d in sorted(days):
        if runs and runs[-1][-1] == d - 1:
            runs[-1].append(d)
        else:
            runs.append([d])
    parts = []
    for run in runs:
        if len(run) >= 3:
            parts.append(f"{_DAY_NAMES[run[0]]}-{_DAY_NAMES[run[-1]]}")
        else:
            parts.extend(_DAY_NAMES[d] for d in run)
    return ",".join(parts)


def _day(name: str, text: str) -> int:
    index = _DAY_INDEX.get(name.lower())
    if index is None:
        raise InvalidWindow(text, f"unknown day {name!r} (use Mon, Tue, Wed, Thu, Fri, Sat, Sun)")
    return index


def _read_days(spec: str, text: str) -> frozenset[int]:
    if spec.lower() in {"daily", "every-day"}:
        return _ALL_DAYS
    days: set[int] = set()
    for part in spec.split(","):
        if not part:
            raise InvalidWindow(text, f"an empty day in {spec!r}")
        first, sep, last = part.partition("-")
        if not sep:
            days.add(_day(first, text))
            continue
        a, b = _day(first, text), _day(last, text)
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return frozenset(days)


def _read_hours(spec: str, text: str) -> tuple[int, int]:
    match = _HOURS.fullmatch(spec)
    if match is None:
        raise InvalidWindow(text, f"hours {spec!r} must be written HH:MM-HH:MM")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2 != 0):
        raise InvalidWindow(text, f"{spec!r} is not a time of day (00:00 to 24:00)")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end:
        raise InvalidWindow(text, f"{spec!r} never opens: it ends when it begins")
    if end < start:
        raise InvalidWindow(
            text,
            f"{spec!r} crosses midnight: write two spans, e.g. "
            f"'{_clock(start)}-24:00' and '00:00-{_clock(end)}' on the next day",
        )
    return start, end


def time_zone(key: str) -> ZoneInfo | None:
    """The IANA zone of that name, or None: a name that is not one (too long, odd
    characters, a path) is never handed to the zone reader, which would raise for it."""
    if not _ZONE_KEY.fullmatch(key) or len(key) > 64:
        return None
    try:
        return ZoneInfo(key)
    except (ValueError, LookupError, OSError):
        return None


def _check_zone(key: str, text: str) -> None:
    if not _ZONE_KEY.fullmatch(key) or len(key) > 64:
        raise InvalidWindow(text, f"{key!r} is not an IANA time zone name (like Europe/Amsterdam)")
    if time_zone(key) is None:
        raise InvalidWindow(text, f"unknown time zone {key!r} (an IANA name like Europe/Amsterdam)")


def parse_window(text: str) -> Window:
    """Read a window's text; raises ``InvalidWindow`` saying what is wrong."""
    if not isinstance(text, str):
        raise InvalidWindow(repr(text), "a window is text, like 'Mon-Fri 09:00-16:00 UTC'")
    tokens = text.split()
    if len(tokens) < 3:
        raise InvalidWindow(
            text, "a window is days, hours and a time zone: 'Mon-Fri 09:00-16:00 Europe/Amsterdam'"
        )
    zone = tokens[-1]
    _check_zone(zone, text)
    spans: list[Span] = []
    for part in " ".join(tokens[:-1]).split(";"):
        words = part.split()
        if len(words) < 2:
            raise InvalidWindow(
                text, f"{part.strip()!r} must be days then hours, like 'Mon 09:00-12:00'"
            )
        days = _read_days("".join(words[:-1]), text)
        start, end = _read_hours(words[-1], text)
        span = Span(days, start, end)
        if span not in spans:
            spans.append(span)
    return Window(tuple(spans), zone)
