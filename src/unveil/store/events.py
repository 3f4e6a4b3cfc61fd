"""Where SDK event counts are written and read: never where a flag write waits.

Counts are telemetry; a kill switch must not wait for them. So:

- On SQLite the counts live in a database file of their own beside the
  flags (``unveil.db`` -> ``unveil-events.db``), with its own engine and so
  its own write lock: writing counts can never hold the lock a flag write
  needs. Counts left in the flags database by an older version are moved
  over once, at start.
- On PostgreSQL ``event_counts`` has no foreign key to ``environments``
  (an insert under a foreign key takes a KEY SHARE lock on the referenced
  row, the very row a flag write locks), and each write is one short
  transaction with a lock and statement timeout.

Two granularities are written together, in one transaction per chunk: the
counts per minute (``event_counts``, what ``GET .../events`` shows) and the
judge's 10-second windows (``metric_windows`` with their histogram buckets
in ``metric_buckets``). Ten-second windows older than a week are rolled into
hourly ones (``roll_up``), and hourly ones are dropped after 90 days
(``prune``); see docs/metrics.md.

A write either goes in whole or raises one of two errors: ``Unavailable``
(the database is away or busy: try the same counts again later) or
``Refused`` (the database will not take these rows: retrying them as they
are can never succeed).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, delete, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from unveil.store import tables as t
from unveil.store.database import make_engine, reader

__all__ = [
    "FINE",
    "HOUR",
    "EXAMPLES_KEPT",
    "Cell",
    "EventCounts",
    "Example",
    "Refused",
    "Unavailable",
    "Window",
    "events_path",
]

log = logging.getLogger("unveil.store.events")

#: environment id, window start (epoch seconds, a multiple of FINE), flag, variant, metric
Cell = tuple[int, int, str, str, str]
#: the width of the judge's windows, and of the windows they are rolled into, in seconds
FINE = 10
HOUR = 3600
#: the schema version of a SQLite events file (PRAGMA user_version): 1 had only
#: event_counts, 2 adds the windows, 3 the experiments' mismatch examples
_EVENTS_SCHEMA = 3
#: mismatch examples kept per environment and experiment (the latest ones)
EXAMPLES_KEPT = 50
_KEY = ["environment_id", "minute", "flag", "variant", "metric"]
_WINDOW_KEY = ["environment_id", "flag", "metric", "seconds", "start", "variant"]
_TABLES = (t.event_counts, t.metric_windows, t.metric_buckets, t.experiment_examples)


@dataclass(frozen=True, slots=True)
class Window:
    """One variant's aggregate of one metric in one stored window."""

    start: int  # epoch seconds
    seconds: int  # FINE or HOUR
    variant: str
    metric: str
    count: int
    total: float
    buckets: Mapping[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Example:
    """One mismatch example of an experiment, its two values as JSON text."""

    environment_id: int
    experiment: str
    at: float  # epoch seconds
    context: str | None
    control: str
    candidate: str


class Unavailable(Exception):
    """The database could not be reached or was too busy: the counts were not written."""


class Refused(Exception):
    """The database refused the rows themselves: the same rows will fail again."""


def events_path(database: Path) -> Path:
    """The SQLite file that holds the counts of a flags database file."""
    return database.with_name(f"{database.stem}-events{database.suffix or '.db'}")


class EventCounts:
    """Adds counts to stored ones, and reads them back; one engine of its own on SQLite."""

    def __init__(self, engine: Engine) -> None:
        self._own: Engine | None = None
        path = engine.url.database
        if engine.dialect.name == "sqlite" and path and path != ":memory:":
            main = Path(path)
            self._own = make_engine(f"sqlite:///{events_path(main)}")
            _prepare(self._own)
            _move_old_counts(self._own, main)
        self.engine = self._own or engine

    def close(self) -> None:
        if self._own is not None:
            self._own.dispose()

    def add(
        self,
        cells: Sequence[tuple[Cell, int, float]],
        buckets: Mapping[Cell, Mapping[int, int]] | None = None,
    ) -> None:
        """Add each cell's count, total and buckets to what is stored, in one short transaction.

        A cell's time is the start of its 10-second window; the minute it lies
        in gets the same count. ``buckets`` holds the histogram buckets of the
        cells that have them (tracked values; exposures have none).
        """
        if not cells:
            return
        minutes: dict[tuple[int, int, str, str, str], list[float]] = {}
        windows: list[dict[str, Any]] = []
        bucket_rows: list[dict[str, Any]] = []
        for cell, count, total in cells:
            env, start, flag, variant, metric = cell
            minute_key = (env, start - start % 60, flag, variant, metric)
            sums = minutes.setdefault(minute_key, [0, 0.0])
            sums[0] += count
            sums[1] += total
            key = {
                "environment_id": env,
                "flag": flag,
                "metric": metric,
                "seconds": FINE,
                "start": start,
                "variant": variant,
            }
            windows.append({**key, "count": count, "total": total})
            for index, n in sorted((buckets or {}).get(cell, {}).items()):
                bucket_rows.append({**key, "bucket": index, "count": n})
        rows = [
            {
                "environment_id": env,
                "minute": datetime.fromtimestamp(minute, UTC),
                "flag": flag,
                "variant": variant,
                "metric": metric,
                "count": int(count),
                "total": total,
            }
            for (env, minute, flag, variant, metric), (count, total) in sorted(minutes.items())
        ]
        with self._short_write() as conn:
            conn.execute(self._upsert(t.event_counts, _KEY, ("count", "total")), rows)
            conn.execute(self._upsert(t.metric_windows, _WINDOW_KEY, ("count", "total")), windows)
            if bucket_rows:
                conn.execute(
                    self._upsert(t.metric_buckets, [*_WINDOW_KEY, "bucket"], ("count",)),
                    bucket_rows,
                )

    @contextmanager
    def _short_write(self) -> Iterator[Connection]:
        """One short transaction of telemetry; its failures as ``Unavailable`` or ``Refused``."""
        try:
            with self.engine.begin() as conn:
                if self._postgres:  # a write of counts never waits long, nor makes others wait
                    conn.execute(text("SET LOCAL lock_timeout = '2s'"))
                    conn.execute(text("SET LOCAL statement_timeout = '10s'"))
                yield conn
        except (OperationalError, InterfaceError) as exc:
            raise Unavailable(str(exc)) from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise Unavailable(str(exc)) from exc
            raise Refused(str(exc.orig or exc)) from exc
        except (ValueError, TypeError) as exc:  # refused by the driver before the database
            raise Refused(str(exc)) from exc

    @property
    def _postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def _upsert(self, table: Table, key: list[str], summed: tuple[str, ...]) -> Any:
        """INSERT that adds to the stored row when the key is taken."""
        statement = (postgresql.insert if self._postgres else sqlite.insert)(table)
        return statement.on_conflict_do_update(
            index_elements=key,
            set_={name: table.c[name] + statement.excluded[name] for name in summed},
        )

    def read(
        self,
        environment_id: int,
        flag: str | None = None,
        metric: str | None = None,
        since: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """Stored counts of an environment, oldest minute first (of one flag and metric,
        from a minute on, when asked: a page reads the last hour, not every minute kept)."""
        c = t.event_counts.c
        query = (
            select(t.event_counts)
            .where(c.environment_id == environment_id)
            .order_by(c.minute, c.flag, c.variant, c.metric)
        )
        if flag is not None:
            query = query.where(c.flag == flag)
        if metric is not None:
            query = query.where(c.metric == metric)
        if since is not None:
            query = query.where(c.minute >= since)
        with reader(self.engine).connect() as conn:
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

    def evaluated_since(self, environment_id: int, metric: str, since: datetime) -> set[str]:
        """The flags with counts of ``metric`` in a minute at or after ``since`` (stale flags).

        Reads the primary key's leading columns (environment, minute), so it
        costs the rows of the period asked, not of all time.
        """
        c = t.event_counts.c
        query = (
            select(c.flag)
            .where(c.environment_id == environment_id, c.minute >= since, c.metric == metric)
            .distinct()
        )
        with reader(self.engine).connect() as conn:
            return {row.flag for row in conn.execute(query)}

    def last_counted(
        self, environment_id: int, metric: str, flags: Collection[str]
    ) -> dict[str, datetime]:
        """The last minute with counts of ``metric``, for each of ``flags`` that has any."""
        c = t.event_counts.c
        found: dict[str, datetime] = {}
        names = sorted(flags)
        with reader(self.engine).connect() as conn:
            for start in range(0, len(names), 500):
                query = (
                    select(c.flag, func.max(c.minute).label("last"))
                    .where(
                        c.environment_id == environment_id,
                        c.metric == metric,
                        c.flag.in_(names[start : start + 500]),
                    )
                    .group_by(c.flag)
                )
                for row in conn.execute(query):
                    last = row.last
                    found[row.flag] = last if last.tzinfo else last.replace(tzinfo=UTC)
        return found

    def windows(
        self,
        environment_id: int,
        flag: str,
        metrics: Iterable[str],
        since: int,
        until: int,
        variants: Iterable[str] | None = None,
    ) -> list[Window]:
        """Stored windows of a flag's metrics starting in [since, until), oldest first.

        Both widths are read: where 10-second windows were rolled up, the hourly
        one stands for them (an hour is either fine or rolled, never both).
        """
        names = sorted(set(metrics))
        chosen = None if variants is None else sorted(set(variants))

        def where(table: Table) -> list[Any]:
            c = table.c
            found = [
                c.environment_id == environment_id,
                c.flag == flag,
                c.metric.in_(names),
                c.start >= since,
                c.start < until,
            ]
            return found if chosen is None else [*found, c.variant.in_(chosen)]

        w = t.metric_windows.c
        conditions, bucket_conditions = where(t.metric_windows), where(t.metric_buckets)
        rows: list[Any] = []
        buckets: dict[tuple[int, int, str, str], dict[int, int]] = {}
        with reader(self.engine).connect() as conn:
            rows = [
                r._mapping
                for r in conn.execute(
                    select(t.metric_windows)
                    .where(*conditions)
                    .order_by(w.start, w.variant, w.metric)
                )
            ]
            for r in conn.execute(select(t.metric_buckets).where(*bucket_conditions)):
                m = r._mapping
                key = (m["start"], m["seconds"], m["variant"], m["metric"])
                buckets.setdefault(key, {})[m["bucket"]] = m["count"]
        return [
            Window(
                r["start"],
                r["seconds"],
                r["variant"],
                r["metric"],
                r["count"],
                r["total"],
                buckets.get((r["start"], r["seconds"], r["variant"], r["metric"]), {}),
            )
            for r in rows
        ]

    def add_examples(self, examples: Sequence[Example]) -> None:
        """Store mismatch examples and trim each experiment to its latest ``EXAMPLES_KEPT``.

        One short transaction, like ``add``, with the same two errors.
        """
        if not examples:
            return
        e = t.experiment_examples.c
        rows = [
            {
                "environment_id": x.environment_id,
                "experiment": x.experiment,
                "at": x.at,
                "context": x.context,
                "control": x.control,
                "candidate": x.candidate,
            }
            for x in examples
        ]
        touched = sorted({(x.environment_id, x.experiment) for x in examples})
        with self._short_write() as conn:
            conn.execute(t.experiment_examples.insert(), rows)
            for env, experiment in touched:
                mine = [e.environment_id == env, e.experiment == experiment]
                oldest_kept = conn.execute(
                    select(e.id)
                    .where(*mine)
                    .order_by(e.id.desc())
                    .offset(EXAMPLES_KEPT - 1)
                    .limit(1)
                ).scalar()
                if oldest_kept is not None:
                    conn.execute(delete(t.experiment_examples).where(*mine, e.id < oldest_kept))

    def examples(
        self, environment_id: int, experiment: str, since: float, until: float
    ) -> list[Example]:
        """The kept examples of an experiment whose time lies in [since, until), latest first."""
        e = t.experiment_examples.c
        query = (
            select(t.experiment_examples)
            .where(
                e.environment_id == environment_id,
                e.experiment == experiment,
                e.at >= since,
                e.at < until,
            )
            .order_by(e.at.desc(), e.id.desc())
            .limit(EXAMPLES_KEPT)
        )
        with reader(self.engine).connect() as conn:
            return [
                Example(r.environment_id, r.experiment, r.at, r.context, r.control, r.candidate)
                for r in conn.execute(query)
            ]

    def has_windows(self, environment_id: int, flag: str, metrics: Iterable[str]) -> bool:
        """Whether any window of these metrics of the flag is kept (one row read at most)."""
        w = t.metric_windows.c
        query = (
            select(w.start)
            .where(
                w.environment_id == environment_id,
                w.flag == flag,
                w.metric.in_(sorted(set(metrics))),
            )
            .limit(1)
        )
        with reader(self.engine).connect() as conn:
            return conn.execute(query).first() is not None

    def totals_by_flag(
        self, environment_id: int, metrics: Iterable[str], since: int
    ) -> list[tuple[str, str, int, int]]:
        """Per flag and metric (of ``metrics``), from ``since`` on: the summed count and
        the end of the latest window (epoch seconds); what a list of experiments shows."""
        w = t.metric_windows.c
        query = (
            select(w.flag, w.metric, func.sum(w["count"]), func.max(w.start + w.seconds))
            .where(
                w.environment_id == environment_id,
                w.metric.in_(sorted(set(metrics))),
                w.start >= since,
            )
            .group_by(w.flag, w.metric)
            .order_by(w.flag, w.metric)
        )
        with reader(self.engine).connect() as conn:
            return [
                (str(flag), str(metric), int(count), int(last))
                for flag, metric, count, last in conn.execute(query)
            ]

    def roll_up(self, before: int, hours: int = 24) -> int:
        """Roll the 10-second windows of whole hours before ``before`` into hourly windows.

        Up to ``hours`` hours, each in its own transaction that deletes the fine
        rows (taking what the delete returns) and adds their sums to the hourly
        rows. What a retried or concurrent roll-up finds is only what is still
        there, so no window is ever counted twice. How many fine rows it rolled.
        """
        before -= before % HOUR
        rolled = 0
        for _ in range(hours):
            w = t.metric_windows.c
            with reader(self.engine).connect() as conn:
                first = conn.execute(
                    select(func.min(w.start)).where(w.seconds == FINE, w.start < before)
                ).scalar()
            if first is None:
                break
            hour = int(first) - int(first) % HOUR
            rolled += self._roll_hour(hour)
        return rolled

    def _roll_hour(self, hour: int) -> int:
        end = hour + HOUR
        with self.engine.begin() as conn:
            rolled = 0
            for table, summed in (
                (t.metric_windows, ("count", "total")),
                (t.metric_buckets, ("count",)),
            ):
                c = table.c
                extra = ("bucket",) if table is t.metric_buckets else ()
                key_names = ["environment_id", "flag", "metric", "variant", *extra]
                gone = conn.execute(
                    delete(table)
                    .where(c.seconds == FINE, c.start >= hour, c.start < end)
                    .returning(*(c[n] for n in key_names), *(c[n] for n in summed))
                ).all()
                folded: dict[tuple[Any, ...], list[float]] = {}
                for row in gone:
                    key = tuple(row[: len(key_names)])
                    values = folded.setdefault(key, [0] * len(summed))
                    for i, v in enumerate(row[len(key_names) :]):
                        values[i] += v
                if table is t.metric_windows:
                    rolled = len(gone)
                if not folded:
                    continue
                rows = [
                    {
                        **dict(zip(key_names, key, strict=True)),
                        "seconds": HOUR,
                        "start": hour,
                        **{
                            n: (int(v) if n == "count" else float(v))
                            for n, v in zip(summed, values, strict=True)
                        },
                    }
                    for key, values in sorted(folded.items())
                ]
                conn.execute(self._upsert(table, [*_WINDOW_KEY, *extra], summed), rows)
            return rolled

    def prune(self, before: int) -> int:
        """Drop hourly windows that start before ``before``; how many were dropped."""
        with self.engine.begin() as conn:
            dropped = 0
            for table in (t.metric_windows, t.metric_buckets):
                c = table.c
                result = conn.execute(delete(table).where(c.seconds == HOUR, c.start < before))
                if table is t.metric_windows:
                    dropped = result.rowcount
            return dropped


def _prepare(engine: Engine) -> None:
    """Create the events file's tables, or check that it is of a version we know."""
    with engine.begin() as conn:
        version = int(conn.exec_driver_sql("PRAGMA user_version").scalar_one())
        if version > _EVENTS_SCHEMA:
            raise RuntimeError(
                f"{engine.url.database} was written by a newer unveil (schema {version})"
            )
        # 0: a new file; 1: counts only; 2: no examples. What is missing is created.
        if version < _EVENTS_SCHEMA:
            for table in _TABLES:
                table.create(conn, checkfirst=True)
                for index in table.indexes:  # an older file's table lacks the newer indexes
                    index.create(conn, checkfirst=True)
            conn.exec_driver_sql(f"PRAGMA user_version = {_EVENTS_SCHEMA}")


def _move_old_counts(events: Engine, main: Path) -> None:
    """Counts an older version wrote into the flags database move to the events file.

    One transaction over both files (ATTACH, on the driver's connection: SQLite
    refuses ATTACH inside a transaction): added here, deleted there.
    """
    if not main.exists():
        return
    raw = events.raw_connection()
    try:
        db: Any = raw.driver_connection  # sqlite3, in autocommit (we issue BEGIN ourselves)
        db.execute("ATTACH DATABASE ? AS flagsdb", (str(main),))
        try:
            if _has_old_counts(db):
                columns = ", ".join([*_KEY, "count", "total"])
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.execute(
                        f"INSERT INTO main.event_counts ({columns}) "  # noqa: S608 - our own names
                        f"SELECT {columns} FROM flagsdb.event_counts WHERE true "
                        f"ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET "
                        "count = count + excluded.count, total = total + excluded.total"
                    )
                    moved = db.execute("DELETE FROM flagsdb.event_counts").rowcount
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                log.info("moved %s event counts to %s", moved, events.url.database)
        finally:
            db.execute("DETACH DATABASE flagsdb")
    finally:
        raw.close()


def _has_old_counts(db: Any) -> bool:
    table = db.execute(
        "SELECT 1 FROM flagsdb.sqlite_master WHERE type = 'table' AND name = 'event_counts'"
    ).fetchone()
    if table is None:
        return False
    return db.execute("SELECT 1 FROM flagsdb.event_counts LIMIT 1").fetchone() is not None
