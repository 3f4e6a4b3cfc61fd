"""Experiment examples in the event store and the intake (issue 14), on real databases.

The examples are telemetry like the counts: bounded in memory before they
are written (the latest 50 per environment and experiment), trimmed to the
latest 50 as they are written, and on SQLite kept in the events file, whose
schema version 3 adds them to an older file without losing its windows.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from tests.server_process import migrated_engine
from unveil.service.events import EventIntake
from unveil.store.database import make_engine, upgrade
from unveil.store.events import EXAMPLES_KEPT, FINE, EventCounts, Example

NOW = float(int(time.time()) // FINE * FINE)


def _mismatch(i: int, experiment: str = "search-v2") -> dict[str, Any]:
    return {
        "kind": "mismatch",
        "experiment": experiment,
        "at": NOW - 300 + i,
        "context": f"user-{i}",
        "control": {"n": i},
        "candidate": {"n": -i},
    }


def test_the_intake_holds_at_most_the_latest_fifty_examples_per_experiment(
    engine: Engine,
) -> None:
    counts = EventCounts(engine)
    intake = EventIntake(counts, clock=lambda: NOW)
    try:
        intake.accept(1, {"events": [_mismatch(i) for i in range(60)]})
        held = intake.pending_bytes()
        intake.accept(1, {"events": [_mismatch(i) for i in range(60, 260)]})
        # 200 more examples of the same experiment weigh about what the first 60 left:
        # the 50 latest are held, never all of them
        assert abs(intake.pending_bytes() - held) < 200
        intake.accept(1, {"events": [_mismatch(0, "pricing")]})
        assert intake.flush()
        assert intake.pending_bytes() == 0
        kept = counts.examples(1, "search-v2", 0, NOW + 60)
        assert [x.context for x in kept] == [f"user-{i}" for i in range(259, 209, -1)]
        assert [x.context for x in counts.examples(1, "pricing", 0, NOW + 60)] == ["user-0"]
        assert counts.examples(2, "search-v2", 0, NOW + 60) == []
    finally:
        intake.stop()


def test_the_store_trims_each_experiment_to_its_latest_examples(engine: Engine) -> None:
    counts = EventCounts(engine)
    try:
        for start in range(0, 120, 40):  # three writes: trimming holds across them
            counts.add_examples(
                [
                    Example(1, "search-v2", NOW + i, None, str(i), str(-i))
                    for i in range(start, start + 40)
                ]
            )
        counts.add_examples([Example(1, "other", NOW, "k", "1", "2")])
        kept = counts.examples(1, "search-v2", 0, NOW + 1000)
        assert len(kept) == EXAMPLES_KEPT
        assert [x.control for x in kept] == [str(i) for i in range(119, 69, -1)]
        assert len(counts.examples(1, "other", 0, NOW + 1000)) == 1
        # the range is a range: examples outside it are not shown
        assert [x.control for x in counts.examples(1, "search-v2", NOW + 100, NOW + 102)] == [
            "101",
            "100",
        ]
    finally:
        counts.close()


def test_an_events_file_of_schema_2_gains_the_examples_and_keeps_its_windows(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'unveil.db'}"
    upgrade(url)
    engine = make_engine(url)
    counts = EventCounts(engine)  # a new events file, schema 3
    start = int(NOW) - 600
    counts.add([((1, start, "f", "on", "m"), 2, 2.0)], {(1, start, "f", "on", "m"): {5: 2}})
    counts.close()
    events_file = tmp_path / "unveil-events.db"
    with sqlite3.connect(events_file) as db:  # as schema 2 left it: no examples
        db.execute("DROP TABLE experiment_examples")
        db.execute("DROP INDEX metric_windows_by_metric")
        db.execute("PRAGMA user_version = 2")
    db.close()
    counts = EventCounts(engine)
    try:
        [window] = counts.windows(1, "f", {"m"}, start, start + FINE)
        assert (window.count, dict(window.buckets)) == (2, {5: 2})
        counts.add_examples([Example(1, "e", NOW, None, "1", "2")])
        assert len(counts.examples(1, "e", 0, NOW + 1)) == 1
    finally:
        counts.close()
        engine.dispose()
    with sqlite3.connect(events_file) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (3,)
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "metric_windows_by_metric" in indexes  # what the list of experiments reads
    db.close()


def test_examples_on_postgresql_live_beside_the_windows(tmp_path: Path) -> None:
    """On PostgreSQL the table comes from migration 0008, in the one database."""
    with migrated_engine("postgresql", tmp_path) as engine:
        counts = EventCounts(engine)
        counts.add_examples([Example(3, "e", NOW, "k", "[1]", "[2]")])
        [kept] = counts.examples(3, "e", 0, NOW + 1)
        assert (kept.context, kept.control, kept.candidate) == ("k", "[1]", "[2]")


def test_examples_wait_while_the_database_is_away_and_are_written_once(tmp_path: Path) -> None:
    import psycopg

    from tests.server_process import PG_ADMIN_URL

    with migrated_engine("postgresql", tmp_path) as engine:
        name = str(engine.url.database)
        counts = EventCounts(engine)
        intake = EventIntake(counts, clock=lambda: NOW)
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True)
        try:
            intake.accept(1, {"events": [_mismatch(i) for i in range(10)]})
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            engine.dispose()
            assert not intake.flush()  # away: kept, not lost
            assert intake.pending_bytes() > 0
            intake.accept(1, {"events": [_mismatch(i) for i in range(10, 15)]})
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            assert intake.flush()
            kept = counts.examples(1, "search-v2", 0, NOW + 60)
            assert [x.context for x in kept] == [f"user-{i}" for i in range(14, -1, -1)]
            assert intake.pending_bytes() == 0
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            admin.close()
            intake.stop()
