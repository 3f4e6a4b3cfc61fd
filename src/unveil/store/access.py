"""Projects, environments, tokens and users."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select, update

from unveil.store import tables as t
from unveil.store.dialect import insert_or_ignore, locked

__all__ = [
    "EnvironmentRepository",
    "ProjectRepository",
    "TokenRecord",
    "TokenRepository",
    "UserRepository",
    "named_environment",
]


class ProjectRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def id_of(self, key: str) -> int | None:
        found = self._conn.execute(
            select(t.projects.c.id).where(t.projects.c.key == key)
        ).scalar_one_or_none()
        return None if found is None else int(found)

    def add(self, key: str, name: str) -> bool:
        """Create the project; False if one with that key exists already."""
        return insert_or_ignore(self._conn, t.projects, {"key": key, "name": name})

    def all(self) -> list[dict[str, Any]]:
        projects = self._conn.execute(select(t.projects).order_by(t.projects.c.key)).all()
        envs = self._conn.execute(
            select(
                t.environments.c.project_id, t.environments.c.key, t.environments.c.version
            ).order_by(t.environments.c.key)
        ).all()
        return [
            {
                "key": p.key,
                "name": p.name,
                "environments": [
                    {"key": e.key, "version": e.version} for e in envs if e.project_id == p.id
                ],
            }
            for p in projects
        ]


def named_environment(project: str, env: str) -> tuple[Any, ...]:
    """The conditions of the environment ``env`` of project ``project``.

    The project is found by a subquery, not a join: a locking statement locks
    every row of its FROM (``locked``), and a joined project row held by one
    environment's writer would make the writers of all its other environments wait.
    """
    in_project = select(t.projects.c.id).where(t.projects.c.key == project).scalar_subquery()
    return (t.environments.c.project_id == in_project, t.environments.c.key == env)


class EnvironmentRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def id_of(self, project: str, env: str, lock: bool = False) -> int | None:
        """The environment's id; with ``lock`` its row is held until the transaction ends."""
        query = select(t.environments.c.id).where(*named_environment(project, env))
        if lock:
            query = locked(self._conn, query)
        found = self._conn.execute(query).scalar_one_or_none()
        return None if found is None else int(found)

    def held(self, project: str, env: str) -> tuple[int, int] | None:
        """The environment's id and version, its row held until the transaction ends.

        One statement where a writer would otherwise take the row and then
        read its version: the version cannot move while the row is held.
        """
        query = select(t.environments.c.id, t.environments.c.version).where(
            *named_environment(project, env)
        )
        found = self._conn.execute(locked(self._conn, query)).one_or_none()
        return None if found is None else (int(found.id), int(found.version))

    def keys_of(self, environment_id: int) -> tuple[str, str] | None:
        """The project's and the environment's keys of an environment id."""
        row = self._conn.execute(
            select(t.projects.c.key.label("project"), t.environments.c.key.label("env"))
            .join(t.projects, t.projects.c.id == t.environments.c.project_id)
            .where(t.environments.c.id == environment_id)
        ).one_or_none()
        return None if row is None else (row.project, row.env)

    def lock(self, environment_id: int) -> None:
        """Hold the environment's row: writers of one environment go one at a time."""
        self._conn.execute(
            locked(
                self._conn,
                select(t.environments.c.id).where(t.environments.c.id == environment_id),
            )
        )

    def add(self, project_id: int, key: str) -> bool:
        """Create the environment at version 0; False if it exists already."""
        return insert_or_ignore(
            self._conn, t.environments, {"project_id": project_id, "key": key, "version": 0}
        )

    def version(self, environment_id: int) -> int | None:
        found = self._conn.execute(
            select(t.environments.c.version).where(t.environments.c.id == environment_id)
        ).scalar_one_or_none()
        return None if found is None else int(found)

    def bump(self, environment_id: int, announce_on: str | None = None) -> int:
        """One more version; the new one.

        With ``announce_on`` (PostgreSQL) the same statement also sends the
        environment's id on that channel, delivered to listeners when the
        transaction commits: one round trip for what every write does.
        """
        query = (
            update(t.environments)
            .where(t.environments.c.id == environment_id)
            .values(version=t.environments.c.version + 1)
        )
        if announce_on is None:
            query = query.returning(t.environments.c.version)
        else:
            notice = func.pg_notify(announce_on, str(environment_id))
            query = query.returning(t.environments.c.version, notice)
        return int(self._conn.execute(query).scalar_one())


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: int
    name: str
    kind: str
    role: str | None
    environment_id: int | None


class TokenRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def by_hash(self, secret_hash: str) -> TokenRecord | None:
        """The live (not revoked) token with this secret."""
        row = self._conn.execute(
            select(
                t.tokens.c.id,
                t.tokens.c.name,
                t.tokens.c.kind,
                t.tokens.c.role,
                t.tokens.c.environment_id,
            ).where(t.tokens.c.secret_hash == secret_hash, t.tokens.c.revoked_at.is_(None))
        ).one_or_none()
        if row is None:
            return None
        return TokenRecord(row.id, row.name, row.kind, row.role, row.environment_id)

    def id_of_name(self, name: str) -> int | None:
        found = self._conn.execute(
            select(t.tokens.c.id).where(t.tokens.c.name == name)
        ).scalar_one_or_none()
        return None if found is None else int(found)

    def by_id(self, token_id: int) -> TokenRecord | None:
        row = self._conn.execute(
            select(t.tokens).where(t.tokens.c.id == token_id, t.tokens.c.revoked_at.is_(None))
        ).one_or_none()
        if row is None:
            return None
        return TokenRecord(row.id, row.name, row.kind, row.role, row.environment_id)

    def add(
        self,
        *,
        name: str,
        kind: str,
        role: str | None,
        environment_id: int | None,
        secret_hash: str,
        at: datetime,
    ) -> bool:
        """False if a token (live or revoked) has this name already."""
        return insert_or_ignore(
            self._conn,
            t.tokens,
            {
                "name": name,
                "kind": kind,
                "role": role,
                "environment_id": environment_id,
                "secret_hash": secret_hash,
                "created_at": at,
            },
        )

    def live_ids(self, token_ids: Collection[int]) -> set[int]:
        """Which of these tokens are live (not revoked)."""
        found = self._conn.execute(
            select(t.tokens.c.id).where(
                t.tokens.c.id.in_(list(token_ids)), t.tokens.c.revoked_at.is_(None)
            )
        )
        return {int(token_id) for (token_id,) in found}

    def revoke(self, token_id: int, at: datetime) -> None:
        self._conn.execute(update(t.tokens).where(t.tokens.c.id == token_id).values(revoked_at=at))

    def any_admin(self) -> bool:
        return (
            self._conn.execute(
                select(t.tokens.c.id)
                .where(t.tokens.c.kind == "admin", t.tokens.c.revoked_at.is_(None))
                .limit(1)
            ).first()
            is not None
        )

    def all(self) -> list[dict[str, Any]]:
        rows = self._conn.execute(
            select(t.tokens).where(t.tokens.c.revoked_at.is_(None)).order_by(t.tokens.c.id)
        ).all()
        return [
            {
                "id": r.id,
                "name": r.name,
                "kind": r.kind,
                "role": r.role,
                "environment_id": r.environment_id,
                "created_at": t.utc_text(r.created_at),
            }
            for r in rows
        ]


class UserRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(self, *, name: str, role: str, password_hash: str, at: datetime) -> bool:
        """False if a user has this name already."""
        return insert_or_ignore(
            self._conn,
            t.users,
            {"name": name, "role": role, "password_hash": password_hash, "created_at": at},
        )

    def all(self) -> list[dict[str, Any]]:
        rows = self._conn.execute(select(t.users).order_by(t.users.c.name)).all()
        return [
            {"name": r.name, "role": r.role, "created_at": t.utc_text(r.created_at)} for r in rows
        ]

    def password_hash(self, name: str) -> tuple[str, str] | None:
        """The user's role and password hash, for signing in."""
        row = self._conn.execute(
            select(t.users.c.role, t.users.c.password_hash).where(t.users.c.name == name)
        ).one_or_none()
        return None if row is None else (row.role, row.password_hash)
