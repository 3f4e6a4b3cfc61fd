"""SDK events: exposures and metrics, taken in fast and counted per minute.

``EventIntake.accept`` checks a batch and puts it on a bounded queue; it
answers at once, and says no (the API's 429) when the queue is full rather
than let memory grow. One thread folds queued batches into counts per
environment, minute, flag, variant and metric, and writes them every few
seconds, adding to what is stored. Stopping the intake drains the queue
and writes everything first.

An exposure counts under the metric ``$exposure``. A metric event carries
the variants its context was exposed to (the SDK knows them), so its value
is counted once for each (flag, variant) it names, and under flag and
variant "" when it names none.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from unveil.core import Problem
from unveil.core.timestamps import parse_instant
from unveil.service.errors import Invalid
from unveil.store import tables as t

__all__ = ["EXPOSURE", "MAX_BATCH", "EventIntake", "parse_batch"]

EXPOSURE = "$exposure"
#: The most events one batch may carry.
MAX_BATCH = 1_000
_MAX_NAME = 200

log = logging.getLogger("unveil.service.events")

Cell = tuple[int, datetime, str, str, str]  # environment, minute, flag, variant, metric


@dataclass(frozen=True, slots=True)
class _Count:
    flag: str
    variant: str
    metric: str
    value: float
    at: datetime


def _minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def _name(raw: object, path: str, problems: list[Problem]) -> str:
    if not isinstance(raw, str) or not raw or len(raw) > _MAX_NAME:
        problems.append(Problem(path, f"must be a string of 1 to {_MAX_NAME} characters"))
        return ""
    return raw


def _when(raw: object, path: str, now: datetime, problems: list[Problem]) -> datetime:
    if raw is None:
        return now
    instant = parse_instant(raw)
    if instant is None:
        problems.append(Problem(path, "must be an RFC 3339 timestamp or epoch seconds"))
        return now
    try:
        return datetime.fromtimestamp(instant, UTC)
    except (OverflowError, OSError, ValueError):
        problems.append(Problem(path, "is out of range"))
        return now


def parse_batch(data: object, now: datetime) -> list[_Count]:
    """The counts a batch adds; ``Invalid`` names every bad field, and nothing is taken."""
    problems: list[Problem] = []
    if not isinstance(data, Mapping) or not isinstance(data.get("events"), list):
        raise Invalid((Problem("events", "must be a list of events"),))
    events = data["events"]
    if len(events) > MAX_BATCH:
        raise Invalid((Problem("events", f"at most {MAX_BATCH} events per batch"),))
    counts: list[_Count] = []
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
            value = event.get("value", 1.0)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                problems.append(Problem(f"{path}.value", "must be a finite number"))
                continue
            variants = event.get("variants", {})
            if not isinstance(variants, Mapping):
                problems.append(Problem(f"{path}.variants", "must map flag keys to variants"))
                continue
            if not variants:
                counts.append(_Count("", "", metric, float(value), at))
            for flag, variant in variants.items():
                vpath = f"{path}.variants.{flag}"
                flag_key = _name(flag, vpath, problems)
                counts.append(_Count(flag_key, _name(variant, vpath, problems), metric, value, at))
        else:
            problems.append(Problem(f"{path}.kind", "must be 'exposure' or 'metric'"))
    if problems:
        raise Invalid(tuple(problems))
    return counts


class EventIntake:
    """The bounded queue, the folding thread and the periodic write."""

    def __init__(self, engine: Engine, capacity: int = 10_000, flush_every: float = 2.0) -> None:
        self._engine = engine
        self._queue: queue.Queue[tuple[int, list[_Count]] | None] = queue.Queue(capacity)
        self._flush_every = flush_every
        self._cells: dict[Cell, list[float]] = {}
        self._thread = threading.Thread(target=self._run, name="unveil-events", daemon=True)
        self.dropped = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Drain what was accepted, write it, and end."""
        self._queue.put(None)
        self._thread.join(timeout=30)

    def depth(self) -> int:
        return self._queue.qsize()

    def accept(self, environment_id: int, data: object) -> bool:
        """Take a batch (checked first; ``Invalid`` if bad); False when too busy."""
        counts = parse_batch(data, datetime.now(UTC))
        try:
            self._queue.put_nowait((environment_id, counts))
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def _run(self) -> None:
        last_flush = time.monotonic()
        while True:
            wait = max(0.0, self._flush_every - (time.monotonic() - last_flush))
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                pass  # time to write, nothing new
            else:
                if item is None:
                    self._drain()
                    return
                self._fold(item[0], item[1])
            if time.monotonic() - last_flush >= self._flush_every:
                self._flush()
                last_flush = time.monotonic()

    def _drain(self) -> None:
        """Fold whatever was accepted before stopping, and write it all."""
        while not self._queue.empty():
            rest = self._queue.get_nowait()
            if rest is not None:
                self._fold(rest[0], rest[1])
        self._flush()

    def _fold(self, environment_id: int, counts: list[_Count]) -> None:
        for c in counts:
            cell = (environment_id, _minute(c.at), c.flag, c.variant, c.metric)
            sums = self._cells.setdefault(cell, [0, 0.0])
            sums[0] += 1
            sums[1] += c.value

    def _flush(self) -> None:
        if not self._cells:
            return
        cells, self._cells = self._cells, {}
        dialect = self._engine.dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        try:
            with self._engine.begin() as conn:
                for (env, minute, flag, variant, metric), (count, total) in cells.items():
                    statement = insert(t.event_counts).values(
                        environment_id=env,
                        minute=minute,
                        flag=flag,
                        variant=variant,
                        metric=metric,
                        count=count,
                        total=total,
                    )
                    conn.execute(
                        statement.on_conflict_do_update(
                            index_elements=[
                                "environment_id",
                                "minute",
                                "flag",
                                "variant",
                                "metric",
                            ],
                            set_={
                                "count": t.event_counts.c.count + statement.excluded.count,
                                "total": t.event_counts.c.total + statement.excluded.total,
                            },
                        )
                    )
        except Exception:  # keep the counts and try again at the next flush
            log.exception("writing event counts failed; keeping them for the next try")
            for cell, (count, total) in cells.items():
                sums = self._cells.setdefault(cell, [0, 0.0])
                sums[0] += count
                sums[1] += total

    def counts(self, environment_id: int, flag: str | None = None) -> list[dict[str, Any]]:
        """Stored counts of an environment, oldest minute first."""
        query = (
            select(t.event_counts)
            .where(t.event_counts.c.environment_id == environment_id)
            .order_by(t.event_counts.c.minute, t.event_counts.c.flag, t.event_counts.c.variant)
        )
        if flag is not None:
            query = query.where(t.event_counts.c.flag == flag)
        with self._engine.connect() as conn:
            return [
                {
                    "minute": t.utc_text(r.minute),
                    "flag": r.flag,
                    "variant": r.variant,
                    "metric": r.metric,
                    "count": r.count,
                    "total": r.total,
                }
                for r in conn.execute(query)
            ]
