"""Connecting to the database and bringing its schema up to date.

SQLite is the default: a file in the data folder, in WAL mode, with write
transactions that take the write lock at once (BEGIN IMMEDIATE) so that
concurrent writers queue instead of failing half way. PostgreSQL is chosen
by URL (``postgresql+psycopg://...``).
"""

from __future__ import annotations

import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError

__all__ = ["default_url", "glancer", "libpq_url", "make_engine", "reader", "upgrade"]

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
    engine = create_engine(url, pool_size=10, max_overflow=20)
    _ping_when_idle(engine)
    return engine


#: A pooled connection unused for this long is checked before it is handed out (seconds).
PING_AFTER_IDLE = 5.0


def _ping_when_idle(engine: Engine) -> None:
    """Check a pooled connection before use only if it sat idle a while.

    Pinging every checkout (SQLAlchemy's ``pool_pre_ping``) costs a round
    trip on every reading and every write. A connection used moments ago is
    alive unless the database restarted in those moments; then its first use
    fails, is answered 503, and the pool replaces all its connections. A
    connection idle longer (the database may have restarted, or a proxy cut
    it) is pinged, and if the ping fails the pool quietly opens another.
    """

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_connection: Any, record: Any) -> None:
        record.info["unveil_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _handed_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("unveil_idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE:
            return  # new, or in use a moment ago
        try:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            if not dbapi_connection.autocommit:
                dbapi_connection.rollback()
        except Exception as exc:  # gone: the pool throws it away and opens another
            raise DisconnectionError("the connection was closed while idle") from exc


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


@lru_cache(maxsize=64)
def glancer(engine: Engine) -> Engine:
    """The same database, for a read of one statement (``Store.glance``).

    On PostgreSQL outside a transaction (autocommit); on SQLite, where a
    read transaction costs no round trip, a reader's.
    """
    if engine.dialect.name == "postgresql":
        return engine.execution_options(unveil_read_only=True, isolation_level="AUTOCOMMIT")
    return reader(engine)


def libpq_url(engine: Engine) -> str:
    """The engine's PostgreSQL URL as psycopg takes it, for connections of our own."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)


def upgrade(url: str) -> None:
    """Apply every migration not yet applied."""
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "head")
