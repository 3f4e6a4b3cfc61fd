"""One node at a time does the background work: a PostgreSQL advisory lock.

Every node tries ``pg_try_advisory_lock`` on a connection of its own. The
lock belongs to that connection's session, so when the holder dies (even by
kill -9) PostgreSQL ends the session, frees the lock, and the next node to
try takes it. With SQLite there is one process, and it always leads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import Engine

from unveil.store.database import libpq_url

__all__ = ["LOCK_KEY", "Leadership"]

#: The advisory lock's key: "unveil" in ASCII, as a bigint.
LOCK_KEY = 0x756E7665696C
log = logging.getLogger("unveil.store.leadership")


class Leadership:
    """Runs ``work()`` every ``interval`` seconds while this node holds the lock."""

    def __init__(self, engine: Engine, work: Callable[[], object], interval: float = 1.0) -> None:
        self._engine = engine
        self._work = work
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="unveil-leader", daemon=True)
        self.leading = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        if self._engine.dialect.name != "postgresql":
            self.leading.set()
            while not self._stop.wait(self._interval):
                self._safely(self._work)
            return
        import psycopg

        url = libpq_url(self._engine)
        while not self._stop.is_set():
            try:
                with psycopg.connect(url, autocommit=True) as conn:
                    while not self._stop.is_set():
                        if not self.leading.is_set():
                            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
                            got = row.fetchone()
                            if got is not None and got[0]:
                                log.info("this node now does the background work")
                                self.leading.set()
                        else:
                            conn.execute("SELECT 1")  # still holding: the session is alive
                            self._safely(self._work)
                        self._stop.wait(self._interval)
            except Exception as exc:  # lost the connection, and with it the lock
                self.leading.clear()
                log.warning("leadership connection lost: %s", exc)
                self._stop.wait(self._interval)
        self.leading.clear()

    @staticmethod
    def _safely(work: Callable[[], object]) -> None:
        try:
            work()
        except Exception:  # one failed round of work must not stop the next
            log.exception("background work failed")
