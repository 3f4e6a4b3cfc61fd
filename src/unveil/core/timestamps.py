"""Instants for the before/after operators, as seconds since the epoch.

Accepts RFC 3339 text and epoch seconds. Configuration must say its offset;
a context value without one is read as UTC, being lenient with callers.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

__all__ = ["parse_instant"]


def parse_instant(value: object, *, require_offset: bool = False) -> float | None:
    """Seconds since the epoch, or None when the value is not an instant."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
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
