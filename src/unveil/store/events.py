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

A write either goes in whole or raises one of two errors: ``Unavailable``
(the database is away or busy: try the same counts again later) or
``Refused`` (the database will not take these rows: retrying them as they
are can never succeed).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from unveil.store import tables as t
from unveil.store.database import make_engine, reader

__all__ = ["Cell", "EventCounts", "Refused", "Unavailable", "events_path"]

log = logging.getLogger("unveil.store.events")

#: environment id, minute (epoch seconds, a multiple of 60), flag, variant, metric
Cell = tuple[int, int, str, str, str]
#: the schema version of a SQLite events file (PRAGMA user_version)
_EVENTS_SCHEMA = 1
_KEY = ["environment_id", "minute", "flag", "variant", "metric"]


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

    def add(self, cells: Sequence[tuple[Cell, int, float]]) -> None:
        """Add each cell's count and total to what is stored, in one short transaction."""
        if not cells:
            return
        rows = [
            {
                "environment_id": env,
                "minute": datetime.fromtimestamp(minute, UTC),
                "flag": flag,
                "variant": variant,
                "metric": metric,
                "count": count,
                "total": total,
            }
            for (env, minute, flag, variant, metric), count, total in cells
        ]
        postgres = self.engine.dialect.name == "postgresql"
        statement = (postgresql.insert if postgres else sqlite.insert)(t.event_counts)
        upsert = statement.on_conflict_do_update(
            index_elements=_KEY,
            set_={
                "count": t.event_counts.c.count + statement.excluded.count,
                "total": t.event_counts.c.total + statement.excluded.total,
            },
        )
        try:
            with self.engine.begin() as conn:
                if postgres:  # a write of counts never waits long, nor makes others wait
                    conn.execute(text("SET LOCAL lock_timeout = '2s'"))
                    conn.execute(text("SET LOCAL statement_timeout = '10s'"))
                conn.execute(upsert, rows)
        except (OperationalError, InterfaceError) as exc:
            raise Unavailable(str(exc)) from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise Unavailable(str(exc)) from exc
            raise Refused(str(exc.orig or exc)) from exc
        except (ValueError, TypeError) as exc:  # refused by the driver before the database
            raise Refused(str(exc)) from exc

    def read(self, environment_id: int, flag: str | None = None) -> list[dict[str, Any]]:
        """Stored counts of an environment, oldest minute first."""
        c = t.event_counts.c
        query = (
            select(t.event_counts)
            .where(c.environment_id == environment_id)
            .order_by(c.minute, c.flag, c.variant, c.metric)
        )
        if flag is not None:
            query = query.where(c.flag == flag)
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


def _prepare(engine: Engine) -> None:
    """Create the events file's one table, or check that it is of a version we know."""
    with engine.begin() as conn:
        version = int(conn.exec_driver_sql("PRAGMA user_version").scalar_one())
        if version > _EVENTS_SCHEMA:
            raise RuntimeError(
                f"{engine.url.database} was written by a newer unveil (schema {version})"
            )
        if version == 0:
            t.event_counts.create(conn, checkfirst=True)
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
