"""Exposure and metric events, kept cheap on the evaluation path and bounded in memory.

An exposure (this context got this variant of this flag) is recorded once per
targeting key, flag and variant per window: evaluating the same flag for the
same user a thousand times a second sends one event. The memory of what was
reported lives here, in the SDK, keyed by flag (``seen``): the sender thread
starts a new window every ``window`` seconds, and a change of one flag
forgets only that flag's keys, so a change of an unrelated flag sends nothing
again. Contexts without a text key are remembered as one "keyless" key per
flag and variant.

``track`` records a metric for a context together with the variants that
context was last exposed to, so the server can attribute it. Values are
summed up here per metric, variants and 10-second window into a count, a
sum and the buckets of unveil's log-spaced histogram (core/logbuckets.py,
the very buckets the server keeps): a latency timed on every request sends
one small summary per window, not one event per request. A summary of one
value is sent as that value. What a caller
passes is checked at the call: a metric the server would refuse (a name that
is not 1 to 200 printable characters, a value that is not a finite number)
is refused here, quietly, with a logged warning and a count in ``refused``,
so that one bad call can never spoil a batch or stop the sender.

Dark-launch experiments (sdk/experiment.py) are summed the same way: one
``experiment`` event per experiment and window holds the count of each
outcome, the candidate's errors by type and both paths' durations, and at
most ``EXAMPLES_PER_WINDOW`` ``mismatch`` examples per experiment and window
are queued beside them.

The buffer holds at most ``capacity`` events and summaries; beyond that
events are dropped and counted, never grown without limit. The sender (see ``sync``) takes
batches out.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from unveil.core.logbuckets import LARGEST_VALUE, bucket_of

__all__ = [
    "EXAMPLES_PER_WINDOW",
    "KEYLESS",
    "MAX_NAME",
    "OUTCOMES",
    "EventBuffer",
    "encode_events",
    "name_problem",
    "targeting_key",
]

log = logging.getLogger("unveil.sdk")

#: The longest metric name the server takes.
MAX_NAME = 200
#: How many keys per flag and variant are remembered as reported before starting over.
SEEN_LIMIT = 100_000
#: Stands for every context without a text key in ``seen``.
KEYLESS = None
#: The width of the windows values are summed up in, in seconds (the server's windows).
SUMMARY_WINDOW = 10


class _Summary:
    """Values of one metric, for one set of variants, in one window: what a summary sends."""

    __slots__ = ("at", "buckets", "count", "metric", "total", "variants")

    def __init__(self, metric: str, variants: dict[str, str], at: float) -> None:
        self.metric = metric
        self.variants = variants
        self.at = at
        self.count = 0
        self.total = 0.0
        self.buckets: dict[int, int] = {}

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        index = bucket_of(value)
        self.buckets[index] = self.buckets.get(index, 0) + 1

    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = {"kind": "metric", "metric": self.metric}
        if self.count == 1:
            event["value"] = self.total
        else:
            event["count"] = self.count
            event["sum"] = self.total
            event["buckets"] = {str(i): n for i, n in sorted(self.buckets.items())}
        event["variants"] = self.variants
        event["at"] = self.at
        return event


#: The outcomes of an experiment's run, in the order the server lists them (see sdk/experiment.py).
OUTCOMES = ("match", "mismatch", "ignored", "error", "timeout", "skipped")
#: How many mismatch examples of one experiment leave the client per window.
EXAMPLES_PER_WINDOW = 5
#: How many exception type names one experiment's window counts apart ("other" holds the rest).
ERROR_NAMES = 20


class _Durations:
    """Milliseconds of one path of an experiment in one window, as a metric summary holds them."""

    __slots__ = ("buckets", "count", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.buckets: dict[int, int] = {}

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        index = bucket_of(value)
        self.buckets[index] = self.buckets.get(index, 0) + 1

    def summary(self) -> dict[str, Any]:
        buckets = {str(i): n for i, n in sorted(self.buckets.items())}
        return {"count": self.count, "sum": self.total, "buckets": buckets}


class _Runs:
    """One experiment's runs in one window: what an ``experiment`` event sends."""

    __slots__ = ("at", "candidate", "control", "errors", "experiment", "outcomes")

    def __init__(self, experiment: str, at: int) -> None:
        self.experiment = experiment
        self.at = at
        self.outcomes: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.control = _Durations()
        self.candidate = _Durations()

    def add(
        self, outcome: str, error: str | None, control_ms: float, candidate_ms: float | None
    ) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if outcome == "error":
            name = error or "other"
            if name not in self.errors and len(self.errors) >= ERROR_NAMES:
                name = "other"
            self.errors[name] = self.errors.get(name, 0) + 1
        self.control.add(control_ms)
        if candidate_ms is not None:
            self.candidate.add(candidate_ms)

    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = {
            "kind": "experiment",
            "experiment": self.experiment,
            "at": self.at,
            "outcomes": {o: self.outcomes[o] for o in OUTCOMES if o in self.outcomes},
        }
        if self.errors:
            event["errors"] = dict(self.errors)
        if self.control.count:
            event["control_ms"] = self.control.summary()
        if self.candidate.count:
            event["candidate_ms"] = self.candidate.summary()
        return event


def targeting_key(context: object) -> str | None:
    """A context's text targeting key, or None: never raises, whatever the context."""
    if context.__class__ is str:
        return context
    try:
        who = context.get("key") if isinstance(context, Mapping) else None
    except Exception:  # a caller's mapping may raise anything
        return None
    return who if who.__class__ is str else None


def name_problem(metric: object) -> str | None:
    """What makes this text unfit as a metric or experiment name for the server, or None."""
    if not isinstance(metric, str):
        return f"a metric name must be a string, not {type(metric).__name__}"
    if not 1 <= len(metric) <= MAX_NAME:
        return f"a metric name must have 1 to {MAX_NAME} characters, not {len(metric)}"
    if any(ch < " " or "\x7f" <= ch <= "\x9f" for ch in metric):
        return f"the metric name {metric!r} contains a control character"
    if any("\ud800" <= ch <= "\udfff" for ch in metric):  # the server would refuse the batch
        return f"the metric name {metric!r} contains a lone surrogate"
    return None


def _value_of(value: object) -> float | str:
    """The value as a float, or what is wrong with it."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"a metric value must be a number, not {type(value).__name__}"
    try:
        number = float(value)
    except OverflowError:
        return "a metric value must be a finite number; this one is too large"
    if not math.isfinite(number):
        return f"a metric value must be a finite number, not {number}"
    if abs(number) > LARGEST_VALUE:  # the server refuses it: summed, it would overflow
        return f"a metric value must be from -{LARGEST_VALUE:g} to {LARGEST_VALUE:g}, not {number}"
    return number


def encode_events(events: list[dict[str, Any]]) -> tuple[bytes, list[dict[str, Any]]]:
    """A batch as the body of ``POST /sdk/v1/events``, and the events it carries.

    Each event is encoded alone, so that one that cannot be (it should not
    happen: ``track`` checks what it takes) is left out instead of failing
    the whole batch.
    """
    parts: list[str] = []
    kept: list[dict[str, Any]] = []
    for event in events:
        try:
            parts.append(json.dumps(event, allow_nan=False, separators=(",", ":")))
        except (TypeError, ValueError, RecursionError):
            continue
        kept.append(event)
    return ('{"events":[' + ",".join(parts) + "]}").encode(), kept


class EventBuffer:
    """Events waiting to be sent, and the memory of which exposures were reported."""

    def __init__(
        self, capacity: int = 10_000, window: float = 60.0, remembered: int = 50_000
    ) -> None:
        self.capacity = capacity
        #: seconds between ``new_window`` calls (the sender thread makes them)
        self.window = window
        self._remembered = remembered
        #: flag -> variant -> targeting keys (or KEYLESS) reported in this window.
        #: Read without the lock on the evaluation path; changed only under it, in place.
        self.seen: dict[str, dict[str | None, set[str | None]]] = {}
        self._events: deque[dict[str, Any]] = deque()
        #: (metric, variants, window) -> the values summed so far, oldest first
        self._summaries: dict[tuple[str, tuple[tuple[str, str], ...], int], _Summary] = {}
        self._exposed: dict[str, dict[str, str]] = {}
        #: (experiment, window) -> its runs so far
        self._experiments: dict[tuple[str, int], _Runs] = {}
        #: mismatch examples queued per experiment in the window ``_example_window``
        self._examples: dict[str, int] = {}
        self._example_window = 0
        self._lock = threading.Lock()
        #: events dropped because the buffer was full
        self.dropped = 0
        #: ``track`` calls refused for bad input (each also logged)
        self.refused = 0
        #: mismatch examples dropped because the redaction function raised
        self.unredacted = 0

    def exposure(self, flag: str, variant: str | None, who: object) -> None:
        """Record that a context got this variant, once per window.

        ``who`` is the context's targeting key; any key that is not text
        counts as KEYLESS.
        """
        if who.__class__ is not str:
            who = KEYLESS
        with self._lock:
            by_variant = self.seen.get(flag)
            if by_variant is None:
                by_variant = self.seen[flag] = {}
            keys = by_variant.get(variant)
            if keys is None or len(keys) >= SEEN_LIMIT:
                keys = by_variant[variant] = set()
            elif who in keys:
                return  # another thread reported it first
            keys.add(who)
            if who is not None and variant is not None:
                if len(self._exposed) > self._remembered:
                    self._exposed.clear()
                self._exposed.setdefault(who, {})[flag] = variant
            self._append(
                {"kind": "exposure", "flag": flag, "variant": variant or "", "at": time.time()}
            )

    def new_window(self) -> None:
        """Every key reports again from now on (the sender calls this every ``window``)."""
        with self._lock:
            self.seen.clear()

    def flags_changed(self, flags: set[str]) -> None:
        """These flags changed: their keys report again; every other flag keeps its window."""
        with self._lock:
            for flag in flags:
                self.seen.pop(flag, None)

    def track(self, metric: object, context: object = None, value: object = 1.0) -> bool:
        """A metric for a context (a mapping, or its targeting key), with its variants.

        False, with a warning logged and ``refused`` counted, if the metric
        cannot be sent; never raises.
        """
        problem = name_problem(metric)
        number = _value_of(value)
        if problem is None and isinstance(number, str):
            problem = number
        if problem is None and not (context is None or isinstance(context, str | Mapping)):
            problem = (
                f"a context must be a mapping or a targeting key, not {type(context).__name__}"
            )
        if problem is not None:
            with self._lock:
                self.refused += 1
            log.warning("track(%.200r) refused: %s", metric, problem)
            return False
        assert isinstance(metric, str) and isinstance(number, float)  # noqa: PT018 (checked)
        who = targeting_key(context)
        now = time.time()
        with self._lock:
            exposed = self._exposed.get(who, {}) if who is not None else {}
            # insertion order: a different order only makes a second summary, which the server adds
            key = (metric, tuple(exposed.items()), int(now // SUMMARY_WINDOW))
            summary = self._summaries.get(key)
            if summary is None:
                if self.pending() >= self.capacity:
                    self.dropped += 1
                    return True
                summary = self._summaries[key] = _Summary(metric, dict(exposed), now)
            summary.add(number)
        return True

    def experiment_run(
        self,
        experiment: str,
        outcome: str,
        error: str | None,
        control_ms: float,
        candidate_ms: float | None,
    ) -> None:
        """Count one run of an experiment into its 10-second window (see sdk/experiment.py)."""
        window = int(time.time() // SUMMARY_WINDOW)
        with self._lock:
            runs = self._experiments.get((experiment, window))
            if runs is None:
                if self.pending() >= self.capacity:
                    self.dropped += 1
                    return
                runs = self._experiments[(experiment, window)] = _Runs(
                    experiment, window * SUMMARY_WINDOW
                )
            runs.add(outcome, error, control_ms, candidate_ms)

    def wants_example(self, experiment: str) -> bool:
        """Whether a mismatch example of this experiment would still be sent in this window.

        Asked before an example is made, so that converting and redacting
        values costs nothing once the window's share is taken.
        """
        window = int(time.time() // SUMMARY_WINDOW)
        examples = self._examples
        if window != self._example_window:
            return True
        return examples.get(experiment, 0) < EXAMPLES_PER_WINDOW

    def example(self, event: dict[str, Any]) -> bool:
        """Queue a (redacted) mismatch example, if its experiment's window has room left."""
        window = int(time.time() // SUMMARY_WINDOW)
        experiment = event["experiment"]
        with self._lock:
            if window != self._example_window:
                self._examples = {}
                self._example_window = window
            taken = self._examples.get(experiment, 0)
            if taken >= EXAMPLES_PER_WINDOW:
                return False
            self._examples[experiment] = taken + 1
            self._append(event)
            return True

    def count_unredacted(self) -> None:
        """A mismatch example was dropped: the application's redaction function raised."""
        with self._lock:
            self.unredacted += 1

    def _append(self, event: dict[str, Any]) -> None:
        if self.pending() >= self.capacity:
            self.dropped += 1
            return
        self._events.append(event)

    def take(self, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` events, oldest first, removed from the buffer; then summaries."""
        with self._lock:
            count = min(limit, len(self._events))
            taken = [self._events.popleft() for _ in range(count)]
            while len(taken) < limit and self._summaries:
                key = next(iter(self._summaries))
                taken.append(self._summaries.pop(key).event())
            while len(taken) < limit and self._experiments:
                runs = next(iter(self._experiments))
                taken.append(self._experiments.pop(runs).event())
            return taken

    def give_back(self, events: list[dict[str, Any]]) -> None:
        """Events that could not be sent go back in front, as far as there is room."""
        with self._lock:
            room = self.capacity - self.pending()
            keep = events[:room] if room > 0 else []
            self.dropped += len(events) - len(keep)
            self._events.extendleft(reversed(keep))

    def count_dropped(self, count: int) -> None:
        """Events lost on the way (the sender could not encode them)."""
        with self._lock:
            self.dropped += count

    def pending(self) -> int:
        """Events, metric summaries and experiment windows waiting to be sent."""
        return len(self._events) + len(self._summaries) + len(self._experiments)

    def after_fork_in_child(self) -> None:
        """In a forked child: a new lock, and none of the parent's waiting events.

        The parent's lock may have been held by one of its threads at the
        moment of the fork; in the child nobody will ever release it, so it
        is replaced, not taken. The parent sends its own events; what it
        reported (``seen``) and who was exposed to what stay, so the child
        neither reports those exposures again nor loses their attribution.
        """
        self._lock = threading.Lock()
        self._events.clear()
        self._summaries.clear()
        self._experiments.clear()
