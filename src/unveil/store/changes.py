"""Change notification across server processes: PostgreSQL LISTEN/NOTIFY.

A write sends ``NOTIFY unveil_changes, '<environment id>'`` inside its own
transaction, so the notice goes out exactly when the change commits (and
never for a change rolled back). Every server process listens on one
dedicated connection and refreshes that environment's snapshot. SQLite has
one process, which learns of its own writes directly.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import Connection, Engine, text

from unveil.store.database import libpq_url

__all__ = ["CHANNEL", "ChangeListener", "announce_change"]

CHANNEL = "unveil_changes"
log = logging.getLogger("unveil.store.changes")


def announce_change(conn: Connection, environment_id: int) -> None:
    """Tell every node, once this transaction commits, that an environment changed."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {
                "channel": CHANNEL,
                "payload": str(environment_id),
            },
        )


class ChangeListener:
    """Calls ``on_change(environment_id)`` for every change any node commits.

    After losing its connection it reconnects and calls ``on_change(None)``:
    notices may have been missed, so everything must be checked again.
    """

    def __init__(self, engine: Engine, on_change: Callable[[int | None], None]) -> None:
        self._engine = engine
        self._on_change = on_change
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="unveil-listen", daemon=True)
        self.connected = threading.Event()

    def start(self) -> None:
        if self._engine.dialect.name == "postgresql":
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        import psycopg

        url = libpq_url(self._engine)
        backoff = 0.1
        while not self._stop.is_set():
            try:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.connected.set()
                    self._on_change(None)  # anything before LISTEN: check all
                    backoff = 0.1
                    while not self._stop.is_set():
                        for notice in conn.notifies(timeout=0.5):
                            if notice.payload.isdigit():
                                self._on_change(int(notice.payload))
            except Exception as exc:  # the database went away: wait, reconnect
                self.connected.clear()
                log.warning("change listener lost its connection: %s", exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
