"""SDK events: exposures and metrics, taken in fast and counted per 10-second window.

``EventIntake.accept`` checks a batch and folds it at once into counts per
environment, 10-second window, flag, variant and metric (with the histogram
buckets of tracked values, core/logbuckets.py), held in memory; a thread
adds them to the stored counts every few seconds (the store keeps them per
window and per minute). Nothing waits in a queue
of raw batches, so what the intake holds is only those counts, and it is
bounded two ways, answered early with ``Overloaded`` (the API's 429):

- by bytes: the counts held (and being written) may weigh at most
  ``max_bytes``; a database that is slow or away fills it, and then SDKs
  are told to come back later instead of memory growing;
- by series: an environment may start at most ``series_per_minute`` new
  series (flag, variant, metric and minute of the event) in each minute, so a flood of
  made-up names can neither fill memory nor the database.

A 202 is a promise: once ``accept`` returned, the events are in the counts
that ``stop`` writes before it returns, however busy the server was.

Writes go through ``EventCounts`` (store/events.py) in short transactions
of at most ``_CHUNK`` rows. If the database is away, the counts are kept for
the next try. If it refuses rows, the failing chunk is split until the
refused row is alone; that row is dropped and counted (``rejected_rows``)
and everything else is written: one bad row never stops the counting.

An exposure counts under the metric ``$exposure``. A metric event carries
the variants its context was exposed to (the SDK knows them), so its value
is counted once for each (flag, variant) it names, and under flag and
variant "" when it names none. A metric event carries either one ``value``
or a summary of several values the SDK summed up: ``count``, ``sum`` and
``buckets`` (bucket index -> how many values fell in it), see docs/api.md.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from unveil.core import Problem
from unveil.core.logbuckets import LARGEST_VALUE, OVERFLOW, bucket_of
from unveil.core.timestamps import parse_instant
from unveil.service.errors import Invalid, Overloaded
from unveil.store.events import (
    EXAMPLES_KEPT,
    FINE,
    Cell,
    EventCounts,
    Example,
    Refused,
    Unavailable,
)

__all__ = [
    "CANDIDATE",
    "CONTROL",
    "DURATION",
    "ERROR_TYPE",
    "EXPOSURE",
    "MAX_BATCH",
    "MAX_EXAMPLE",
    "OUTCOMES",
    "Batch",
    "EventIntake",
    "outcome_metric",
    "parse_batch",
    "parse_events",
]

EXPOSURE = "$exposure"
#: The prefix of every metric name the server keeps for itself (SDK metrics may not use it).
RESERVED = "$"
#: How an experiment's runs may end (one outcome per run), in the order reports show them.
OUTCOMES = ("match", "mismatch", "ignored", "error", "timeout", "skipped")
#: The two paths of an experiment, stored as the variants of its windows.
CONTROL = "control"
CANDIDATE = "candidate"
#: The metric of both paths' durations in milliseconds (variant: control or candidate).
DURATION = "$experiment.ms"
#: The metric of the candidate's errors, one variant per exception type name.
ERROR_TYPE = "$experiment.error_type"
#: The largest control or candidate value of a mismatch example, as UTF-8 JSON.
MAX_EXAMPLE = 4096
#: What one held example costs in memory beyond its texts.
_EXAMPLE_OVERHEAD = 300


def outcome_metric(outcome: str) -> str:
    """The metric that counts an experiment's runs of one outcome (variant: candidate)."""
    return f"$experiment.{outcome}"


#: The most events one batch may carry.
MAX_BATCH = 1_000
#: The longest flag, variant or metric name (the columns hold 200 characters).
MAX_NAME = 200
#: Rows per write transaction: short transactions, whatever the backlog.
_CHUNK = 500
#: What one held cell costs in memory, beyond its names (key tuple, sums, dict slot).
_CELL_OVERHEAD = 400
#: What one held histogram bucket costs in memory (dict slot and two integers).
_BUCKET_OVERHEAD = 100
#: The most values one summary event may stand for.
MAX_SUMMARY = 10**9
#: How often the last write at stop is tried before the counts are given up.
_FINAL_TRIES = 5

log = logging.getLogger("unveil.service.events")


@dataclass(frozen=True, slots=True)
class _Count:
    flag: str
    variant: str
    metric: str
    value: float  # the sum of the values
    at: float  # epoch seconds
    count: int = 1
    buckets: Mapping[int, int] | None = None  # None for exposures


@dataclass(slots=True)
class _Sums:
    """A held cell: how many events, their sum and their histogram buckets."""

    count: int
    total: float
    buckets: dict[int, int]

    def add(self, count: int, total: float, buckets: Mapping[int, int]) -> int:
        """Add to these sums; how many buckets are new (what the memory grows by)."""
        self.count += count
        self.total += total
        new = 0
        for index, n in buckets.items():
            before = self.buckets.get(index)
            if before is None:
                new += 1
                self.buckets[index] = n
            else:
                self.buckets[index] = before + n
        return new


def _text_problem(raw: str) -> str | None:
    """Why a name cannot be stored as text, if it cannot."""
    for char in raw:
        category = unicodedata.category(char)
        if category == "Cc":
            return "must not contain control characters (such as NUL, tab or newline)"
        if category == "Cs":
            return "must not contain a lone surrogate (it is not text)"
    return None


def _name(raw: object, path: str, problems: list[Problem]) -> str:
    if not isinstance(raw, str) or not raw or len(raw) > MAX_NAME:
        problems.append(Problem(path, f"must be a string of 1 to {MAX_NAME} characters"))
        return ""
    wrong = _text_problem(raw)
    if wrong is not None:
        problems.append(Problem(path, wrong))
        return ""
    return raw


#: How far in the past an event's time may be (an SDK's buffer held through an outage).
MAX_EVENT_AGE = 24 * 3600.0
#: How far ahead of the server's clock an event's time may be (clocks disagree a little).
MAX_EVENT_AHEAD = 300.0


def _when(raw: object, path: str, now: float, problems: list[Problem]) -> float:
    if raw is None:
        return now
    instant = parse_instant(raw)
    if instant is None:
        problems.append(Problem(path, "must be an RFC 3339 timestamp or epoch seconds"))
        return now
    if not now - MAX_EVENT_AGE <= instant <= now + MAX_EVENT_AHEAD:
        # an SDK sends within minutes of the event; a time far off is a broken clock,
        # and counting it would put a judge's data in a window that never comes
        problems.append(
            Problem(path, "must be within a day before and five minutes after the server's time")
        )
        return now
    return float(instant)


def _number(
    raw: object, path: str, problems: list[Problem], largest: float = LARGEST_VALUE
) -> float | None:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        problems.append(Problem(path, "must be a finite number"))
        return None
    try:
        number = float(raw)  # an integer of 400 digits does not fit
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        problems.append(Problem(path, "must be a finite number"))
        return None
    if abs(number) > largest:  # such numbers added up would overflow to infinity
        problems.append(Problem(path, f"must be a number from -{largest:g} to {largest:g}"))
        return None
    return number


def _summary(
    event: Mapping[str, Any], path: str, problems: list[Problem]
) -> tuple[float, int, Mapping[int, int]] | None:
    """A metric event's sum, count and buckets: of its one ``value``, or as summed by the SDK."""
    if "buckets" not in event:
        value = _number(event.get("value", 1.0), f"{path}.value", problems)
        return None if value is None else (value, 1, {bucket_of(value): 1})
    before = len(problems)
    if "value" in event:
        problems.append(Problem(f"{path}.value", "a summary (with buckets) has a sum, no value"))
    # a summary sums at most MAX_SUMMARY values the SDK took, each at most LARGEST_VALUE
    total = _number(event.get("sum"), f"{path}.sum", problems, LARGEST_VALUE * MAX_SUMMARY)
    raw = event.get("buckets")
    buckets: dict[int, int] = {}
    if not isinstance(raw, Mapping) or not raw:
        problems.append(Problem(f"{path}.buckets", "must map bucket indexes to counts"))
    else:
        for key, n in raw.items():
            where = f"{path}.buckets.{key}"
            if not isinstance(key, str) or not key.isdigit() or int(key) > OVERFLOW:
                problems.append(Problem(where, f"is not a bucket index (0 to {OVERFLOW})"))
            elif n.__class__ is not int or not 0 < n <= MAX_SUMMARY:
                problems.append(Problem(where, f"must be a whole number from 1 to {MAX_SUMMARY}"))
            else:
                buckets[int(key)] = n
    count = event.get("count")
    if len(problems) == before and count != sum(buckets.values()):
        problems.append(
            Problem(
                f"{path}.count", f"must be the sum of the bucket counts ({sum(buckets.values())})"
            )
        )
    if len(problems) > before or total is None or sum(buckets.values()) > MAX_SUMMARY:
        if len(problems) == before:
            problems.append(Problem(f"{path}.count", f"must be at most {MAX_SUMMARY}"))
        return None
    return total, sum(buckets.values()), buckets


@dataclass(frozen=True, slots=True)
class Batch:
    """What a batch adds: counts, and experiments' mismatch examples."""

    counts: list[_Count]
    examples: list[Example]


def parse_batch(data: object, now: float) -> list[_Count]:
    """The counts a batch adds; ``Invalid`` names every bad field, and nothing is taken."""
    return parse_events(data, now).counts


def parse_events(data: object, now: float) -> Batch:
    """What a batch adds; ``Invalid`` names every bad field, and nothing of it is taken."""
    problems: list[Problem] = []
    if not isinstance(data, Mapping) or not isinstance(data.get("events"), list):
        raise Invalid((Problem("events", "must be a list of events"),))
    events = data["events"]
    if len(events) > MAX_BATCH:
        raise Invalid((Problem("events", f"at most {MAX_BATCH} events per batch"),))
    counts: list[_Count] = []
    examples: list[Example] = []
    for i, event in enumerate(events):
        path = f"events[{i}]"
        if not isinstance(event, Mapping):
            problems.append(Problem(path, "must be a mapping"))
            continue
        at = _when(event.get("at"), f"{path}.at", now, problems)
        kind = event.get("kind")
        if kind == "exposure":
            flag = _name(event.get("flag"), f"{path}.flag", problems)
            variant = _name(event.get("variant"), f"{path}.variant", problems)
            counts.append(_Count(flag, variant, EXPOSURE, 1.0, at))
        elif kind == "metric":
            metric = _name(event.get("metric"), f"{path}.metric", problems)
            if metric.startswith(RESERVED):
                problems.append(
                    Problem(f"{path}.metric", f"names starting with {RESERVED!r} are the server's")
                )
            summary = _summary(event, path, problems)
            if summary is None:
                continue
            number, many, buckets = summary
            variants = event.get("variants", {})
            if not isinstance(variants, Mapping):
                problems.append(Problem(f"{path}.variants", "must map flag keys to variants"))
                continue
            if not variants:
                counts.append(_Count("", "", metric, number, at, many, buckets))
            for flag, variant in variants.items():
                vpath = f"{path}.variants.{flag}"
                flag_key = _name(flag, vpath, problems)
                variant_name = _name(variant, vpath, problems)
                counts.append(_Count(flag_key, variant_name, metric, number, at, many, buckets))
        elif kind == "experiment":
            counts.extend(_experiment(event, path, at, problems))
        elif kind == "mismatch":
            example = _mismatch(event, path, at, problems)
            if example is not None:
                examples.append(example)
        else:
            problems.append(
                Problem(f"{path}.kind", "must be 'exposure', 'metric', 'experiment' or 'mismatch'")
            )
    if problems:
        raise Invalid(tuple(problems))
    return Batch(counts, examples)


def _runs(raw: object, path: str, problems: list[Problem]) -> int | None:
    if raw.__class__ is not int or not 0 <= raw <= MAX_SUMMARY:
        problems.append(Problem(path, f"must be a whole number from 0 to {MAX_SUMMARY}"))
        return None
    return int(raw)


def _experiment(
    event: Mapping[str, Any], path: str, at: float, problems: list[Problem]
) -> list[_Count]:
    """The counts of an ``experiment`` event: outcomes, error types and both durations."""
    before = len(problems)
    name = _name(event.get("experiment"), f"{path}.experiment", problems)
    raw = event.get("outcomes")
    outcomes_from = len(problems)
    outcomes: dict[str, int] = {}
    if not isinstance(raw, Mapping):
        problems.append(Problem(f"{path}.outcomes", "must map outcomes to run counts"))
    else:
        for key, n in raw.items():
            where = f"{path}.outcomes.{key}"
            if key not in OUTCOMES:
                problems.append(Problem(where, f"is not an outcome (one of {', '.join(OUTCOMES)})"))
                continue
            runs = _runs(n, where, problems)
            if runs is not None:
                outcomes[key] = runs
        if len(problems) == outcomes_from and not any(outcomes.values()):
            problems.append(Problem(f"{path}.outcomes", "must count at least one run"))
    outcomes_read = len(problems) == outcomes_from
    errors: dict[str, int] = {}
    raw_errors = event.get("errors", {})
    if not isinstance(raw_errors, Mapping):
        problems.append(Problem(f"{path}.errors", "must map exception type names to counts"))
    else:
        errors_from = len(problems)
        for key, n in raw_errors.items():
            where = f"{path}.errors.{key}"
            type_name = _name(key, where, problems)
            runs = _runs(n, where, problems)
            if type_name and runs:
                errors[type_name] = runs
        errors_read = len(problems) == errors_from
        if outcomes_read and errors_read and sum(errors.values()) != outcomes.get("error", 0):
            problems.append(
                Problem(
                    f"{path}.errors",
                    f"must count {outcomes.get('error', 0)} errors in all (outcomes.error), "
                    f"not {sum(errors.values())}",
                )
            )
    durations: list[_Count] = []
    for field, variant in (("control_ms", CONTROL), ("candidate_ms", CANDIDATE)):
        summary = event.get(field)
        if summary is None:
            continue
        where = f"{path}.{field}"
        if not isinstance(summary, Mapping) or "buckets" not in summary:
            problems.append(Problem(where, "must be a summary: count, sum and buckets"))
            continue
        read = _summary(summary, where, problems)
        if read is not None:
            total, many, buckets = read
            durations.append(_Count(name, variant, DURATION, total, at, many, buckets))
    if len(problems) > before:
        return []
    found = [
        _Count(name, CANDIDATE, outcome_metric(outcome), float(n), at, n)
        for outcome, n in outcomes.items()
        if n
    ]
    found += [
        _Count(name, type_name, ERROR_TYPE, float(n), at, n) for type_name, n in errors.items()
    ]
    return found + durations


def _example_json(raw: object, path: str, problems: list[Problem]) -> str | None:
    try:
        text = json.dumps(raw, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError:  # a NaN or infinity (JSON has none; the parser may let them in)
        problems.append(Problem(path, "must be JSON (no NaN or infinity)"))
        return None
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        problems.append(Problem(path, "must not contain a lone surrogate (it is not text)"))
        return None
    if size > MAX_EXAMPLE:
        problems.append(Problem(path, f"is {size} bytes as JSON, more than {MAX_EXAMPLE}"))
        return None
    return text


def _mismatch(
    event: Mapping[str, Any], path: str, at: float, problems: list[Problem]
) -> Example | None:
    """A ``mismatch`` event as an example to keep (its environment is set by the intake)."""
    before = len(problems)
    name = _name(event.get("experiment"), f"{path}.experiment", problems)
    context = event.get("context")
    if context is not None:
        context = _name(context, f"{path}.context", problems) or None
    values: list[str] = []
    for field in ("control", "candidate"):
        if field not in event:
            problems.append(Problem(f"{path}.{field}", "is required (the value as JSON)"))
            continue
        value = _example_json(event[field], f"{path}.{field}", problems)
        if value is not None:
            values.append(value)
    if len(problems) > before:
        return None
    return Example(0, name, at, context, values[0], values[1])


def _cost(cell: Cell, buckets: int = 0) -> int:
    return _CELL_OVERHEAD + len(cell[2]) + len(cell[3]) + len(cell[4]) + buckets * _BUCKET_OVERHEAD


def _example_cost(example: Example) -> int:
    return (
        _EXAMPLE_OVERHEAD
        + len(example.experiment)
        + len(example.control)
        + len(example.candidate)
        + len(example.context or "")
    )


def _series(cell: Cell) -> Cell:
    """The series a cell belongs to for the cap: its names and minute."""
    env, start, flag, variant, metric = cell
    return (env, start - start % 60, flag, variant, metric)


@dataclass(slots=True)
class _Series:
    """The series an environment started in one minute of arrival."""

    minute: int
    seen: set[Cell]


class EventIntake:
    """Counts held in memory (bounded), and the thread that writes them."""

    def __init__(
        self,
        store: EventCounts,
        max_bytes: int = 64 << 20,
        series_per_minute: int = 10_000,
        flush_every: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        #: where the counts and windows are stored (read by the metrics API and the judge)
        self.store = store
        self._max_bytes = max_bytes
        self._series_per_minute = series_per_minute
        self._flush_every = flush_every
        self._clock = clock
        self._lock = threading.Lock()
        self._cells: dict[Cell, _Sums] = {}
        self._examples: dict[tuple[int, str], deque[Example]] = {}
        self._bytes = 0  # of the cells held and of those being written
        self._series: dict[int, _Series] = {}
        self._stopping = False
        self._wake = threading.Event()
        self._writing = threading.Lock()  # one write of counts at a time
        self._thread = threading.Thread(target=self._run, name="unveil-events", daemon=True)
        #: batches answered 429: memory full, or too many new series
        self.refused = 0
        #: rows the database refused, dropped (and the events they held)
        self.rejected_rows = 0
        self.rejected_events = 0
        #: events acknowledged but never written (the database was away at stop)
        self.lost_events = 0

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Take nothing more, write everything taken, and end."""
        with self._lock:
            self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()
        else:  # never started: write what was taken all the same
            self._final_flush()
        self._store.close()

    def pending_bytes(self) -> int:
        """What the held counts weigh, about (the bound is ``max_bytes``)."""
        return self._bytes

    # -- taking events ----------------------------------------------------------------------

    def accept(self, environment_id: int, data: object) -> int:
        """Take a batch: how many events were taken; ``Invalid`` if bad, ``Overloaded`` if busy."""
        now = self._clock()
        parsed = parse_events(data, now)
        counts = parsed.counts
        examples = [replace(x, environment_id=environment_id) for x in parsed.examples]
        folded: dict[Cell, _Sums] = {}
        for c in counts:
            cell = (environment_id, int(c.at // FINE) * FINE, c.flag, c.variant, c.metric)
            sums = folded.get(cell)
            if sums is None:
                folded[cell] = _Sums(c.count, c.value, dict(c.buckets or {}))
            else:
                sums.add(c.count, c.value, c.buckets or {})
        arrival = int(now // 60)
        with self._lock:
            if self._stopping:
                self.refused += 1
                raise Overloaded("the server is stopping; send these events again", 1)
            series = self._series.get(environment_id)
            if series is None or series.minute != arrival:
                series = self._series[environment_id] = _Series(arrival, set())
            new_series = {_series(cell) for cell in folded} - series.seen
            if len(series.seen) + len(new_series) > self._series_per_minute:
                self.refused += 1
                raise Overloaded(
                    f"more than {self._series_per_minute} new series (flag, variant, metric, "
                    "minute) in this environment this minute",
                    max(1, 60 - int(now) % 60),
                )
            added = sum(self._growth(cell, sums) for cell, sums in folded.items())
            added += sum(_example_cost(x) for x in examples)
            if self._bytes + added > self._max_bytes:
                self.refused += 1
                raise Overloaded("too many events waiting to be written; retry shortly", 1)
            series.seen.update(new_series)
            self._bytes += added
            for cell, sums in folded.items():
                held = self._cells.get(cell)
                if held is None:
                    self._cells[cell] = sums
                else:
                    held.add(sums.count, sums.total, sums.buckets)
            for example in examples:
                self._hold_example(example)
        return len(data["events"]) if isinstance(data, Mapping) else 0

    def _hold_example(self, example: Example) -> None:
        """Hold an example to write, at most the latest ``EXAMPLES_KEPT`` per experiment
        (older ones would be trimmed as they are written anyway). The lock is held."""
        key = (example.environment_id, example.experiment)
        held = self._examples.setdefault(key, deque())
        held.append(example)
        if len(held) > EXAMPLES_KEPT:
            self._bytes -= _example_cost(held.popleft())

    def _growth(self, cell: Cell, sums: _Sums) -> int:
        """What holding these sums adds to memory (the lock held)."""
        held = self._cells.get(cell)
        if held is None:
            return _cost(cell, len(sums.buckets))
        return _BUCKET_OVERHEAD * sum(1 for index in sums.buckets if index not in held.buckets)

    # -- writing -----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self._flush_every)
            with self._lock:
                stopping = self._stopping
            if stopping:
                self._final_flush()
                return
            self.flush()

    def _final_flush(self) -> None:
        pause = 0.5
        for attempt in range(_FINAL_TRIES):
            if self.flush():
                return
            if attempt < _FINAL_TRIES - 1:
                time.sleep(pause)  # the database is away: give it a moment, a few times
                pause *= 2
        with self._lock:
            lost = sum(sums.count for sums in self._cells.values())
            lost += sum(len(held) for held in self._examples.values())
            self._cells.clear()
            self._examples.clear()
            self._bytes = 0
        self.lost_events += lost
        log.error("the database stayed away: %s acknowledged events were not counted", lost)

    def flush(self) -> bool:
        """Write the held counts; False if the database was away (they are kept)."""
        with self._writing:
            with self._lock:
                cells, self._cells = self._cells, {}
                held, self._examples = self._examples, {}
            examples = [x for key in sorted(held) for x in held[key]]
            unwritten = self._write_examples(examples) if examples else []
            if unwritten:
                self._keep_examples(unwritten)
                self._keep(sorted(cells.items()))
                return False
            rows = sorted(cells.items())
            for start in range(0, len(rows), _CHUNK):  # sorted: nodes lock rows in one order
                try:
                    self._write(rows[start : start + _CHUNK])
                except Unavailable as exc:
                    log.warning("writing event counts failed (%s); keeping them for later", exc)
                    self._keep(rows[start:])
                    return False
            return True

    def _write(self, rows: Sequence[tuple[Cell, _Sums]]) -> None:
        """Write rows; split them around any the database refuses, and drop only those."""
        try:
            self._store.add(
                [(cell, sums.count, sums.total) for cell, sums in rows],
                {cell: sums.buckets for cell, sums in rows if sums.buckets},
            )
        except Refused as exc:
            if len(rows) > 1:
                half = len(rows) // 2
                self._write(rows[:half])
                self._write(rows[half:])
                return
            cell, sums = rows[0]
            self.rejected_rows += 1
            self.rejected_events += sums.count
            log.warning("the database refused the event counts of %r: %s", cell, exc)
        self._release(rows)

    def _write_examples(self, examples: Sequence[Example]) -> list[Example]:
        """Write examples; those left unwritten because the database is away (to keep).

        Examples the database refuses are split around, like rows of counts,
        and only the refused one is dropped and counted.
        """
        try:
            self._store.add_examples(examples)
        except Unavailable as exc:
            log.warning("writing mismatch examples failed (%s); keeping them for later", exc)
            return list(examples)
        except Refused as exc:
            if len(examples) > 1:
                half = len(examples) // 2
                return self._write_examples(examples[:half]) + self._write_examples(examples[half:])
            self.rejected_rows += 1
            self.rejected_events += 1
            log.warning("the database refused a mismatch example of %r: %s", examples[0], exc)
        freed = sum(_example_cost(x) for x in examples)
        with self._lock:
            self._bytes -= freed
        return []

    def _keep_examples(self, examples: Sequence[Example]) -> None:
        """Put unwritten examples back before any that came meanwhile (the lock is free)."""
        with self._lock:
            newer, self._examples = self._examples, {}
            for example in examples:
                self._hold_example(example)
            for key in sorted(newer):
                for example in newer[key]:
                    self._examples.setdefault(key, deque()).append(example)
                    held = self._examples[key]
                    if len(held) > EXAMPLES_KEPT:
                        self._bytes -= _example_cost(held.popleft())

    def _release(self, rows: Sequence[tuple[Cell, _Sums]]) -> None:
        freed = sum(_cost(cell, len(sums.buckets)) for cell, sums in rows)
        with self._lock:
            self._bytes -= freed

    def _keep(self, rows: Sequence[tuple[Cell, _Sums]]) -> None:
        """Put unwritten rows back; a cell held again meanwhile is one cell, not two."""
        with self._lock:
            for cell, sums in rows:
                held = self._cells.get(cell)
                if held is None:
                    self._cells[cell] = sums
                else:
                    before = _cost(cell, len(held.buckets)) + _cost(cell, len(sums.buckets))
                    held.add(sums.count, sums.total, sums.buckets)
                    self._bytes -= before - _cost(cell, len(held.buckets))

    # -- reading ------------------------------------------------------------------------------

    def counts(
        self,
        environment_id: int,
        flag: str | None = None,
        metric: str | None = None,
        since: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Stored counts of an environment, oldest minute first."""
        return self._store.read(environment_id, flag, metric, since)
