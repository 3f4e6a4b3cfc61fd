"""The judge's metrics: 10-second windows with histograms, their roll-up, and the reader.

Against real databases of both kinds (SQLite's events file, PostgreSQL),
through the same intake the server runs.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from unveil.core.logbuckets import bucket_of
from unveil.release.histogram import Histogram
from unveil.release.plan import Direction, Guard, GuardKind, Source
from unveil.service.errors import Invalid
from unveil.service.events import EventIntake
from unveil.service.metrics import FINE_DAYS, HOURLY_DAYS, LAG, GuardReader, keep_windows
from unveil.store.database import make_engine
from unveil.store.events import FINE, HOUR, EventCounts

ERRORS = Guard("errors", GuardKind.RATE, "errors")
LATENCY = Guard("latency", GuardKind.CONTINUOUS, "latency_ms", Direction.HIGHER_IS_WORSE, 0.05)
#: a moment well inside the intake's accepted past, on a window boundary
T0 = (int(time.time()) - 3600) // HOUR * HOUR


def _exposure(variant: str, at: float) -> dict[str, Any]:
    return {"kind": "exposure", "flag": "checkout", "variant": variant, "at": at}


def _metric(metric: str, variant: str, value: float, at: float) -> dict[str, Any]:
    return {
        "kind": "metric",
        "metric": metric,
        "value": value,
        "variants": {"checkout": variant},
        "at": at,
    }


def _traffic() -> list[dict[str, Any]]:
    """Six windows of traffic: control is fast and healthy, treatment slow with errors."""
    events: list[dict[str, Any]] = []
    for w in range(6):
        at = T0 + w * FINE + 1
        for i in range(10):
            events.append(_exposure("off", at))
            events.append(_exposure("on", at))
            events.append(_metric("latency_ms", "off", 10.0 + i, at))
            events.append(_metric("latency_ms", "on", 20.0 + i, at))
        events.append(_metric("errors", "on", 1.0, at))
        events.append(_metric("errors", "on", 1.0, at))
        events.append(_metric("errors", "off", 1.0, at))
    return events


def _fill(engine: Engine) -> EventCounts:
    counts = EventCounts(engine)
    intake = EventIntake(counts)
    events = _traffic()
    for start in range(0, len(events), 500):
        intake.accept(1, {"events": events[start : start + 500]})
    assert intake.flush()
    return counts


def test_the_reader_gives_both_arms_per_guard_and_ranges_add_up(engine: Engine) -> None:
    counts = _fill(engine)
    try:
        reader = GuardReader(counts, clock=lambda: T0 + 3600.0)
        start = datetime.fromtimestamp(T0, UTC)
        whole = reader.batch(
            1, "checkout", "on", "off", [ERRORS, LATENCY], start, start + timedelta(seconds=60)
        )
        assert whole.end_s == T0 + 60
        assert (whole.treatment.exposures, whole.control.exposures) == (60, 60)
        assert (whole.treatment.counts["errors"], whole.control.counts["errors"]) == (12, 6)
        expected = Histogram.of([20.0 + i for i in range(10)] * 6)
        assert whole.treatment.values["latency_ms"] == expected
        assert whole.control.values["latency_ms"].count == 60
        # consecutive ranges, cut anywhere on window boundaries, add up to the whole
        cut = start + timedelta(seconds=20)
        first = reader.batch(1, "checkout", "on", "off", [ERRORS, LATENCY], start, cut)
        rest = reader.batch(
            1, "checkout", "on", "off", [ERRORS, LATENCY], cut, start + timedelta(seconds=60)
        )
        assert first.treatment.exposures + rest.treatment.exposures == 60
        assert first.treatment.counts["errors"] + rest.treatment.counts["errors"] == 12
        merged = first.treatment.values["latency_ms"].merge(rest.treatment.values["latency_ms"])
        assert merged == expected
    finally:
        counts.close()


def test_the_reader_refuses_open_windows_and_ranges_off_the_grid(tmp_path: Path) -> None:
    engine = _sqlite(tmp_path)
    counts = EventCounts(engine)
    now = float(T0 + 100)
    reader = GuardReader(counts, clock=lambda: now)
    start = datetime.fromtimestamp(T0, UTC)
    try:
        closed = reader.closed_until(datetime.fromtimestamp(now, UTC))
        assert closed == datetime.fromtimestamp(T0 + 100 - LAG - (100 - LAG) % FINE, UTC)
        with pytest.raises(Invalid, match="end: is after the last closed window"):
            reader.batch(
                1, "checkout", "on", "off", [ERRORS], start, closed + timedelta(seconds=10)
            )
        with pytest.raises(Invalid, match="start: must be at the start of a 10-second window"):
            reader.batch(1, "checkout", "on", "off", [ERRORS], start + timedelta(seconds=3), closed)
        ahead = closed + timedelta(seconds=60)  # an empty range may lie anywhere
        nothing = reader.batch(1, "checkout", "on", "off", [ERRORS], ahead, ahead)
        assert (nothing.treatment.exposures, nothing.treatment.counts["errors"]) == (0, 0)
        empty = reader.batch(1, "checkout", "on", "off", [ERRORS, LATENCY], start, closed)
        assert empty.treatment.exposures == 0
        assert empty.treatment.values["latency_ms"].count == 0
        prometheus = Guard(
            "p", GuardKind.RATE, "p", source=Source.PROMETHEUS, query='x{v="{variant}"}'
        )
        with pytest.raises(Exception, match="no Prometheus configured"):
            reader.batch(1, "checkout", "on", "off", [prometheus], start, closed)
    finally:
        counts.close()
        engine.dispose()


def _window_rows(counts: EventCounts, since: int, until: int) -> list[tuple[Any, ...]]:
    found = counts.windows(1, "checkout", {"$exposure", "errors", "latency_ms"}, since, until)
    return sorted(
        (w.seconds, w.start, w.variant, w.metric, w.count, w.total, dict(w.buckets)) for w in found
    )


def test_a_week_old_window_rolls_into_its_hour_once_however_often_the_job_runs(
    engine: Engine,
) -> None:
    counts = _fill(engine)
    try:
        before = _window_rows(counts, T0, T0 + HOUR)
        assert {row[0] for row in before} == {FINE}
        # six days later nothing moves; past seven days the hour is rolled
        assert keep_windows(counts, T0 + (FINE_DAYS - 1) * 86400) == (0, 0)
        later = T0 + FINE_DAYS * 86400 + HOUR
        rolled, dropped = keep_windows(counts, later)
        assert (rolled, dropped) == (len(before), 0)
        after = _window_rows(counts, T0, T0 + HOUR)
        assert {(row[0], row[1]) for row in after} == {(HOUR, T0)}
        by_series = {(row[2], row[3]): row for row in after}
        assert by_series[("on", "$exposure")][4] == 60
        assert by_series[("on", "errors")][4:6] == (12, 12.0)
        latency = by_series[("on", "latency_ms")]
        assert Histogram.from_counts(latency[6], latency[5]) == Histogram.of(
            [20.0 + i for i in range(10)] * 6
        )
        # a retried job (or a second leader) finds nothing left to roll
        assert keep_windows(counts, later) == (0, 0)
        assert _window_rows(counts, T0, T0 + HOUR) == after
        # the reader reads the hourly window where the fine ones were
        reader = GuardReader(counts, clock=lambda: later)
        start = datetime.fromtimestamp(T0, UTC)
        batch = reader.batch(
            1, "checkout", "on", "off", [ERRORS], start, start + timedelta(hours=1)
        )
        assert batch.treatment.counts["errors"] == 12
        # after ninety days the hour goes
        assert keep_windows(counts, T0 + HOURLY_DAYS * 86400 + HOUR)[1] == len(after)
        assert _window_rows(counts, T0, T0 + HOUR) == []
    finally:
        counts.close()


def test_values_land_in_the_buckets_the_core_defines(engine: Engine) -> None:
    counts = _fill(engine)
    try:
        rows = counts.windows(1, "checkout", {"latency_ms"}, T0, T0 + FINE, ("off",))
        assert len(rows) == 1
        assert rows[0].count == 10
        assert sum(rows[0].buckets.values()) == 10
        assert set(rows[0].buckets) == {bucket_of(10.0 + i) for i in range(10)}
    finally:
        counts.close()


def _sqlite(tmp_path: Path) -> Engine:
    from unveil.store.database import make_engine, upgrade

    url = f"sqlite:///{tmp_path / 'unveil.db'}"
    upgrade(url)
    return make_engine(url)


def test_an_events_file_of_schema_1_is_upgraded_keeping_its_counts(tmp_path: Path) -> None:
    """The events file has its own schema version (PRAGMA user_version): 1 held only
    the counts per minute; 2 adds the windows, 3 the experiments' examples, and the
    old counts stay."""
    events_file = tmp_path / "unveil-events.db"
    with sqlite3.connect(events_file) as db:  # as version 1 of the file left it
        db.execute(
            "CREATE TABLE event_counts (environment_id INTEGER NOT NULL, minute DATETIME NOT NULL,"
            " flag VARCHAR(200) NOT NULL, variant VARCHAR(200) NOT NULL,"
            " metric VARCHAR(200) NOT NULL, count BIGINT NOT NULL, total FLOAT NOT NULL,"
            " PRIMARY KEY (environment_id, minute, flag, variant, metric))"
        )
        db.execute(
            "INSERT INTO event_counts VALUES "
            "(1, '2026-01-01 12:00:00.000000', 'f', 'on', 'm', 3, 3.0)"
        )
        db.execute("PRAGMA user_version = 1")
    db.close()
    engine = _sqlite(tmp_path)
    counts = EventCounts(engine)
    try:
        assert [(c["flag"], c["count"]) for c in counts.read(1)] == [("f", 3)]
        minute = int(datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC).timestamp())
        counts.add([((1, minute, "f", "on", "m"), 2, 2.0)], {(1, minute, "f", "on", "m"): {5: 2}})
        assert [(c["flag"], c["count"]) for c in counts.read(1)] == [("f", 5)]
        [window] = counts.windows(1, "f", {"m"}, minute, minute + FINE)
        assert (window.count, dict(window.buckets)) == (2, {5: 2})
    finally:
        counts.close()
        engine.dispose()
    with sqlite3.connect(events_file) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (3,)
    db.close()


def test_an_events_file_of_a_newer_schema_is_refused(tmp_path: Path) -> None:
    events_file = tmp_path / "unveil-events.db"
    with sqlite3.connect(events_file) as db:
        db.execute("PRAGMA user_version = 4")
    db.close()
    engine = _sqlite(tmp_path)
    try:
        with pytest.raises(RuntimeError, match="newer unveil"):
            EventCounts(engine)
    finally:
        engine.dispose()


def test_roll_ups_at_the_same_moment_count_each_window_once(engine: Engine) -> None:
    """Two leaders (or a retried job) rolling the same hour at once: the delete that
    takes the fine rows is what the hourly sums are made of, so only one gets them."""
    import threading

    counts = _fill(engine)
    later = T0 + FINE_DAYS * 86400 + HOUR
    results: list[tuple[int, int]] = []
    go = threading.Barrier(4)

    def roll() -> None:
        go.wait()
        results.append(keep_windows(counts, later))

    try:
        threads = [threading.Thread(target=roll) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(rolled for rolled, _ in results) == 36  # every fine row rolled once
        by_series = {(r[2], r[3]): r for r in _window_rows(counts, T0, T0 + HOUR)}
        assert by_series[("on", "$exposure")][4] == 60
        assert by_series[("off", "latency_ms")][4] == 60
        assert sum(by_series[("off", "latency_ms")][6].values()) == 60
    finally:
        counts.close()


def test_the_server_rolls_old_windows_up_by_itself(tmp_path: Path) -> None:
    """The recurring job metrics.keep runs on the leader as it starts."""
    from tests.server_process import start_server, stop, wait_for

    engine = _sqlite(tmp_path)
    counts = EventCounts(engine)
    old = (int(time.time()) - (FINE_DAYS + 1) * 86400) // HOUR * HOUR
    cell = (1, old + 20, "checkout", "on", "errors")
    counts.add([(cell, 5, 5.0)], {cell: {bucket_of(1.0): 5}})
    counts.close()
    engine.dispose()
    server = start_server(f"sqlite:///{tmp_path / 'unveil.db'}")
    try:

        def rolled() -> list[Any]:
            engine = make_engine(f"sqlite:///{tmp_path / 'unveil.db'}")
            store = EventCounts(engine)
            try:
                return _window_rows(store, old, old + HOUR)
            finally:
                store.close()
                engine.dispose()

        assert wait_for(lambda: [r[:5] for r in rolled()] == [(HOUR, old, "on", "errors", 5)])
        assert rolled()[0][6] == {bucket_of(1.0): 5}
    finally:
        stop(server)


def test_any_cut_of_a_range_into_consecutive_batches_adds_up(tmp_path: Path) -> None:
    """What the judge's promise about batches needs: the data does not depend on the cut."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    engine = _sqlite(tmp_path)
    counts = _fill(engine)
    reader = GuardReader(counts, clock=lambda: T0 + 3600.0)
    start = datetime.fromtimestamp(T0, UTC)
    guards = [ERRORS, LATENCY]
    whole = reader.batch(1, "checkout", "on", "off", guards, start, start + timedelta(seconds=60))

    @settings(max_examples=30, deadline=None)
    @given(st.sets(st.integers(1, 5)))
    def cut(points: set[int]) -> None:
        edges = [0, *sorted(points), 6]
        parts = [
            reader.batch(
                1,
                "checkout",
                "on",
                "off",
                guards,
                start + timedelta(seconds=FINE * a),
                start + timedelta(seconds=FINE * b),
            )
            for a, b in itertools.pairwise(edges)
        ]
        for arm in ("treatment", "control"):
            mine = [getattr(p, arm) for p in parts]
            expected = getattr(whole, arm)
            assert sum(p.exposures for p in mine) == expected.exposures
            assert sum(p.counts["errors"] for p in mine) == expected.counts["errors"]
            merged = Histogram()
            for p in mine:
                merged = merged.merge(p.values["latency_ms"])
            assert merged.buckets == expected.values["latency_ms"].buckets
            assert merged.count == expected.values["latency_ms"].count

    try:
        cut()
    finally:
        counts.close()
        engine.dispose()
