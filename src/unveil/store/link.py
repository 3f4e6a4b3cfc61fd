"""A node's link to the others: who leads the background work, and what changed.

On PostgreSQL one dedicated connection does both: it LISTENs for the
changes other nodes commit and holds the advisory lock that makes one node
the leader. The lock belongs to that connection's session, so when the
holder dies (even by kill -9), or its connection is lost, PostgreSQL frees
it and another node takes it. Each taking of the lead starts a new epoch
(a row in ``leadership``); jobs are claimed under an epoch and their
effects commit only while it is still the current one, so a node that lost
the lock without noticing yet cannot apply anything twice.

On SQLite one process of a data folder leads: it holds an exclusive lock on
a file beside the database. Other processes on the same folder serve
requests as followers and do no background work; when the leader exits
they take over. They learn of changes from the hub's periodic check.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Protocol

from sqlalchemy import Engine

from unveil.store.database import libpq_url
from unveil.store.unit import CHANNEL, Store

__all__ = ["LOCK_KEY", "FileLink", "Link", "PostgresLink", "link_for"]

#: The advisory lock's key: "unveil" in ASCII, as a bigint.
LOCK_KEY = 0x756E7665696C
log = logging.getLogger("unveil.store.link")


class Link(Protocol):
    """What the rest of a node needs to know of the others."""

    #: set while this node leads the background work
    leading: threading.Event
    #: the epoch of this node's leadership while it leads
    epoch: int | None

    def start(self) -> None: ...

    def stop(self) -> None: ...


class _Thread:
    def __init__(self, name: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.leading = threading.Event()
        self.epoch: int | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        raise NotImplementedError

    def _lead(self, store: Store, node: str) -> None:
        with store.unit_of_work() as work:
            self.epoch = work.leadership.take(node, datetime.now(UTC))
        self.leading.set()
        log.info("this node now does the background work (epoch %s)", self.epoch)

    def _follow(self) -> None:
        if self.leading.is_set():
            log.warning("this node no longer does the background work")
        self.leading.clear()
        self.epoch = None


class PostgresLink(_Thread):
    """One connection: LISTEN for changes, hold the advisory lock, reconnect on loss.

    ``on_change(environment_id)`` hears of every change any node commits;
    ``on_change(None)`` after (re)connecting, since notices may have been missed.
    """

    def __init__(
        self,
        store: Store,
        node: str,
        on_change: Callable[[int | None], None],
        interval: float = 1.0,
    ) -> None:
        super().__init__("unveil-link")
        self._store = store
        self._node = node
        self._on_change = on_change
        self._interval = interval
        self.connected = threading.Event()

    def _run(self) -> None:
        import psycopg

        url = libpq_url(self._store.engine)
        backoff = 0.1
        while not self._stop.is_set():
            try:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.connected.set()
                    self._on_change(None)  # anything before LISTEN: check all
                    backoff = 0.1
                    while not self._stop.is_set():
                        if not self.leading.is_set():
                            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
                            got = row.fetchone()
                            if got is not None and got[0]:
                                self._lead(self._store, self._node)
                        else:
                            conn.execute("SELECT 1")  # the session, and so the lock, is alive
                        for notice in conn.notifies(timeout=self._interval):
                            if notice.payload.isdigit():
                                self._on_change(int(notice.payload))
            except Exception as exc:  # the connection went, and the lock with it
                self.connected.clear()
                self._follow()
                log.warning("link to the database lost: %s", exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
        self._follow()


class FileLink(_Thread):
    """SQLite: lead while holding an exclusive lock on a file beside the database."""

    def __init__(self, store: Store, node: str, path: Path | None, interval: float = 1.0) -> None:
        super().__init__("unveil-lead")
        self._store = store
        self._node = node
        self._path = path
        self._interval = interval
        self._file: IO[bytes] | None = None

    def _try_lock(self) -> bool:
        if self._path is None:  # a database in memory: only this process can see it
            return True
        try:
            import fcntl
        except ImportError:  # no advisory file locks here: one process is assumed
            return True
        handle = self._path.open("ab")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._file = handle
        return True

    def _run(self) -> None:
        announced = False
        while not self._stop.is_set():
            if not self.leading.is_set():
                try:
                    if self._try_lock():
                        self._lead(self._store, self._node)
                    elif not announced:
                        log.warning(
                            "another unveil process leads this data folder (%s): this one "
                            "serves requests and does no background work until it exits",
                            self._path,
                        )
                        announced = True
                except Exception:
                    log.exception("taking the lead failed; trying again")
                    self._release()
            self._stop.wait(self._interval)
        self._follow()
        self._release()

    def _release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing frees the lock
            self._file = None


def link_for(
    store: Store, node: str, on_change: Callable[[int | None], None], interval: float = 1.0
) -> PostgresLink | FileLink:
    """The link that fits the store's database."""
    engine: Engine = store.engine
    if engine.dialect.name == "postgresql":
        return PostgresLink(store, node, on_change, interval)
    database = engine.url.database
    path = None if not database or database == ":memory:" else Path(database + ".lock")
    return FileLink(store, node, path, interval)
