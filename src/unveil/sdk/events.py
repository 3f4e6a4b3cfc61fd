"""Exposure and metric events, kept cheap on the evaluation path and bounded in memory.

An exposure (this context got this variant of this flag) is recorded once per
context, flag and variant per window: evaluating the same flag for the same
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
        self.window = window
        self._remembered = remembered
        self._events: deque[dict[str, Any]] = deque()
        self._seen: set[tuple[str, str | None, Any]] = set()
        self._seen_since = time.monotonic()
        self._exposed: dict[Any, dict[str, str]] = {}
        self._lock = threading.Lock()
        self.dropped = 0

    def exposure(self, flag: str, result: Evaluation, context: Mapping[str, Any]) -> None:
        """Record that the context got this variant (at most once per window)."""
        who = context.get("key")
        signature = (flag, result.variant, who if who.__class__ is str else None)
        if signature in self._seen:
            return
        self._record_exposure(signature, flag, result.variant, who)

    def _record_exposure(
        self, signature: tuple[str, str | None, Any], flag: str, variant: str | None, who: Any
    ) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._seen_since > self.window or len(self._seen) > self._remembered:
                self._seen.clear()
                self._seen_since = now
            self._seen.add(signature)
            if variant is not None and who.__class__ is str:
                if len(self._exposed) > self._remembered:
                    self._exposed.clear()
                self._exposed.setdefault(who, {})[flag] = variant
            self._append(
                {"kind": "exposure", "flag": flag, "variant": variant or "", "at": time.time()}
            )

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
            self._seen.clear()
            self._exposed.clear()
