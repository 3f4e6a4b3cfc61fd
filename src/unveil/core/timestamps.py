"""Instants for the before/after operators, as seconds since the epoch.

Accepts RFC 3339 text and epoch seconds. Configuration must say its offset;
a context value without one is read as UTC, being lenient with callers.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, tzinfo

__all__ = ["instants_at_wall", "parse_instant"]


def instants_at_wall(wall: datetime, zone: tzinfo) -> list[datetime]:
    """The instants (zero, one or two, in UTC) at which ``zone``'s clocks show ``wall``.

    None in a spring-forward gap (the clocks skip that time), two in a
    fall-back fold (the clocks show it twice): callers must say which they
    want instead of one being picked silently.
    """
    naive = wall.replace(tzinfo=None)
    out: list[datetime] = []
    for fold in (0, 1):
        instant = naive.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        if instant.astimezone(zone).replace(tzinfo=None) == naive and instant not in out:
            out.append(instant)
    return out


def parse_instant(value: object, *, require_offset: bool = False) -> float | None:
    """Seconds since the epoch, or None when the value is not an instant."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an integer of hundreds of digits is JSON, but no time
            return None
        return seconds if math.isfinite(seconds) else None
    if not isinstance(value, str) or len(value) > 64:
        return None
    text = value.strip()
    if len(text) < 10 or text[4:5] != "-":
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        if require_offset:
            return None
        when = when.replace(tzinfo=UTC)
    return when.timestamp()
