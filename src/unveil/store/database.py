"""Connecting to the database and bringing its schema up to date.

SQLite is the default: a file in the data folder, in WAL mode, with write
transactions that take the write lock at once (BEGIN IMMEDIATE) so that
concurrent writers queue instead of failing half way. PostgreSQL is chosen
by URL (``postgresql+psycopg://...``).
"""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event

__all__ = ["default_url", "libpq_url", "make_engine", "reader", "upgrade"]

_MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def default_url(data_dir: Path) -> str:
    """The zero-setup database: a SQLite file in the data folder."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{data_dir / 'unveil.db'}"


def make_engine(url: str) -> Engine:
    """An engine for the URL, with SQLite set up for safe concurrent writes."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_on_connect)
        _queue_writers(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")  # an acknowledged write survives power loss
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _queue_writers(engine: Engine) -> None:
    """Writers of this process wait their turn on a lock of ours, not in SQLite.

    SQLite's own busy handler sleeps in growing steps (up to 100 ms) when the
    write lock is taken; a Python lock hands over the moment it is free.
    Reads (see ``reader``) begin without the write lock and run side by side
    under WAL; anything else takes it at once (BEGIN IMMEDIATE), so that it
    never fails half way upgrading to it.
    """
    turn = threading.Lock()

    def begin(connection: Any) -> None:
        if connection.get_execution_options().get("unveil_read_only"):
            connection.exec_driver_sql("BEGIN")
            return
        turn.acquire()
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            turn.release()
            raise
        connection.info["unveil_writing"] = True

    def end(connection: Any) -> None:
        if connection.info.pop("unveil_writing", False):
            turn.release()

    event.listen(engine, "begin", begin)
    event.listen(engine, "commit", end)
    event.listen(engine, "rollback", end)


@lru_cache(maxsize=64)
def reader(engine: Engine) -> Engine:
    """The same database, for transactions that only read.

    On SQLite they begin without taking the write lock, so reads never wait
    for writers, and WAL gives each one snapshot of the database. On
    PostgreSQL they read one snapshot too (REPEATABLE READ; a transaction
    that only reads never fails for it): what the several statements of one
    reading see belongs together, as a write committed between two of them
    would otherwise show in the second only.
    """
    if engine.dialect.name == "postgresql":
        return engine.execution_options(unveil_read_only=True, isolation_level="REPEATABLE READ")
    return engine.execution_options(unveil_read_only=True)


def libpq_url(engine: Engine) -> str:
    """The engine's PostgreSQL URL as psycopg takes it, for connections of our own."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def upgrade(url: str) -> None:
    """Apply every migration not yet applied."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "head")
