"""Dashboard sessions: started at sign-in, ended at sign-out or when they expire."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, insert, select, update

from unveil.store import tables as t

__all__ = ["SessionRepository", "SessionRow"]


@dataclass(frozen=True, slots=True)
class SessionRow:
    """A live session and whose it is."""

    id: int
    user: str
    role: str
    expires_at: datetime


class SessionRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def user_id(self, name: str) -> int | None:
        return self._conn.execute(
            select(t.users.c.id).where(t.users.c.name == name)
        ).scalar_one_or_none()

    def add(self, *, user_id: int, secret_hash: str, at: datetime, expires_at: datetime) -> None:
        self._conn.execute(
            insert(t.sessions).values(
                user_id=user_id, secret_hash=secret_hash, created_at=at, expires_at=expires_at
            )
        )

    def live(self, secret_hash: str, now: datetime) -> SessionRow | None:
        """The session of this cookie, if it has neither ended nor expired."""
        s, u = t.sessions, t.users
        row = self._conn.execute(
            select(s.c.id, u.c.name, u.c.role, s.c.expires_at)
            .join(u, u.c.id == s.c.user_id)
            .where(s.c.secret_hash == secret_hash, s.c.ended_at.is_(None), s.c.expires_at > now)
        ).one_or_none()
        if row is None:
            return None
        return SessionRow(row.id, row.name, row.role, t.as_utc(row.expires_at))

    def end(self, secret_hash: str, at: datetime) -> bool:
        """End a session (signing out); False if there was none to end."""
        done = self._conn.execute(
            update(t.sessions)
            .where(t.sessions.c.secret_hash == secret_hash, t.sessions.c.ended_at.is_(None))
            .values(ended_at=at)
        )
        return bool(done.rowcount)

    def forget_before(self, before: datetime) -> int:
        """Drop sessions that expired or ended before ``before``; how many."""
        s = t.sessions
        done = self._conn.execute(
            delete(s).where((s.c.expires_at < before) | (s.c.ended_at < before))
        )
        return int(done.rowcount or 0)
