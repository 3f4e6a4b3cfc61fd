"""Exposure and metric events, kept cheap on the evaluation path and bounded in memory.

An exposure (this context got this variant of this flag) is recorded once per
context, flag and variant per window (one window for the ruleset's memory of
keys and for this buffer's, turned by the sender thread): evaluating the same flag for the same
user a thousand times a second sends one event. ``track`` records a metric
for a context together with the variants that context was last exposed to,
so the server can attribute it. The buffer holds at most ``capacity``
events; beyond that events are dropped and counted, never grown without
limit. A sender thread (see ``live``) takes batches out.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from unveil.core import Evaluation

__all__ = ["EventBuffer"]


class EventBuffer:
    """Events waiting to be sent."""

    def __init__(
        self, capacity: int = 10_000, window: float = 60.0, remembered: int = 50_000
    ) -> None:
        self.capacity = capacity
        #: seconds between ``new_window`` calls (the sender thread makes them)
        self.window = window
        self._remembered = remembered
        self._events: deque[dict[str, Any]] = deque()
        # Contexts with a text key are deduplicated by the ruleset (Ruleset.forget_seen);
        # those without one are counted once per flag and variant here.
        self._keyless: set[tuple[str, str | None]] = set()
        self._exposed: dict[Any, dict[str, str]] = {}
        self._lock = threading.Lock()
        self.dropped = 0

    def exposure(self, flag: str, result: Evaluation, context: Mapping[str, Any]) -> None:
        """Record that the context got this variant (the ruleset has filtered repeats)."""
        who = context.get("key")
        variant = result.variant
        with self._lock:
            if who.__class__ is str:
                if len(self._exposed) > self._remembered:
                    self._exposed.clear()
                if variant is not None:
                    self._exposed.setdefault(who, {})[flag] = variant
            elif (flag, variant) in self._keyless:
                return
            else:
                self._keyless.add((flag, variant))
            self._append(
                {"kind": "exposure", "flag": flag, "variant": variant or "", "at": time.time()}
            )

    def new_window(self) -> None:
        """Keyless contexts report again from now on (the ruleset forgets its keys alike)."""
        with self._lock:
            self._keyless.clear()

    def track(self, metric: str, context: Mapping[str, Any] | None, value: float = 1.0) -> None:
        """A metric for a context, with the variants it was exposed to."""
        who = (context or {}).get("key")
        with self._lock:
            variants = dict(self._exposed.get(who, {})) if who.__class__ is str else {}
            self._append(
                {
                    "kind": "metric",
                    "metric": metric,
                    "value": value,
                    "variants": variants,
                    "at": time.time(),
                }
            )

    def _append(self, event: dict[str, Any]) -> None:
        if len(self._events) >= self.capacity:
            self.dropped += 1
            return
        self._events.append(event)

    def take(self, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` events, oldest first, removed from the buffer."""
        with self._lock:
            count = min(limit, len(self._events))
            return [self._events.popleft() for _ in range(count)]

    def give_back(self, events: list[dict[str, Any]]) -> None:
        """Events that could not be sent go back in front, as far as there is room."""
        with self._lock:
            room = self.capacity - len(self._events)
            keep = events[:room] if room > 0 else []
            self.dropped += len(events) - len(keep)
            self._events.extendleft(reversed(keep))

    def pending(self) -> int:
        return len(self._events)

    def forget(self) -> None:
        """Empty everything (a forked child starts clean; its parent sends its own)."""
        with self._lock:
            self._events.clear()
            self._keyless.clear()
            self._exposed.clear()
