"""Projects, environments and tokens: who may do what, where.

Secrets are random 32-byte tokens shown once; only their SHA-256 is stored
(a slow password hash buys nothing for secrets with 256 bits of entropy,
and every request checks one).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select
from sqlalchemy.exc import IntegrityError

from unveil.core import Problem
from unveil.service.audit import append_audit, read_audit
from unveil.service.errors import Conflict, Invalid, NotFound
from unveil.store import tables as t
from unveil.store.database import reader

__all__ = ["ROLES", "AccessService", "Principal", "environment_id_of", "project_id_of"]

#: Roles, weakest first: each may do what the ones before it may.
ROLES = ("viewer", "editor", "releaser", "admin")


@dataclass(frozen=True, slots=True)
class Principal:
    """Whoever presented a token."""

    name: str
    kind: str  # admin | sdk
    role: str | None
    environment_id: int | None

    def may(self, role: str) -> bool:
        return self.kind == "admin" and ROLES.index(self.role or "viewer") >= ROLES.index(role)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def environment_id_of(conn: Connection, project: str, env: str, lock: bool = False) -> int:
    """The environment's id (its row locked for the transaction on PostgreSQL if asked)."""
    query = (
        select(t.environments.c.id)
        .join(t.projects, t.projects.c.id == t.environments.c.project_id)
        .where(t.projects.c.key == project, t.environments.c.key == env)
    )
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    found = conn.execute(query).scalar_one_or_none()
    if found is None:
        raise NotFound(f"no environment '{env}' in project '{project}'")
    return int(found)


def project_id_of(conn: Connection, project: str) -> int:
    """The project's id; ``NotFound`` if there is none."""
    found = conn.execute(
        select(t.projects.c.id).where(t.projects.c.key == project)
    ).scalar_one_or_none()
    if found is None:
        raise NotFound(f"no project '{project}'")
    return int(found)


def hash_password(password: str, salt: bytes | None = None) -> str:
    """scrypt, for passwords people choose (unlike tokens, they can be guessed)."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    _, salt, _digest = stored.split("$")
    return secrets.compare_digest(hash_password(password, bytes.fromhex(salt)), stored)


#: How long a checked token is believed without asking the database again.
#: Revoking a token takes effect at once on the node that revoked it, and
#: within this long on the others.
TOKEN_CACHE_SECONDS = 2.0
_TOKEN_CACHE_LIMIT = 10_000


class AccessService:
    """Creating projects, environments and tokens; checking tokens."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._known: dict[str, tuple[float, Principal]] = {}

    def recall(self, secret: str) -> Principal | None:
        """A token checked in the last moments, without touching the database."""
        found = self._known.get(_hash(secret))
        if found is None or found[0] < time.monotonic():
            return None
        return found[1]

    def ensure_environment(self, project: str, env: str) -> int:
        """The environment's id, creating it (and its project) if need be."""
        with self.engine.begin() as conn:
            project_id = conn.execute(
                select(t.projects.c.id).where(t.projects.c.key == project)
            ).scalar_one_or_none()
            if project_id is None:
                project_id = conn.execute(
                    insert(t.projects).values(key=project, name=project).returning(t.projects.c.id)
                ).scalar_one()
            env_id = conn.execute(
                select(t.environments.c.id).where(
                    t.environments.c.project_id == project_id, t.environments.c.key == env
                )
            ).scalar_one_or_none()
            if env_id is None:
                env_id = conn.execute(
                    insert(t.environments)
                    .values(project_id=project_id, key=env, version=0)
                    .returning(t.environments.c.id)
                ).scalar_one()
            return int(env_id)

    def environment_of(self, project: str, env: str) -> int:
        with reader(self.engine).connect() as conn:
            return environment_id_of(conn, project, env)

    def create_token(
        self,
        name: str,
        kind: str,
        role: str | None = None,
        environment_id: int | None = None,
        secret: str | None = None,
        actor: str = "system",
    ) -> str:
        """A new token; its secret is returned once and never stored."""
        prefix = "unveil-sdk-" if kind == "sdk" else "unveil-admin-"
        secret = secret or prefix + secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            conn.execute(
                insert(t.tokens).values(
                    name=name,
                    kind=kind,
                    role=role,
                    environment_id=environment_id,
                    secret_hash=_hash(secret),
                    created_at=datetime.now(UTC),
                )
            )
            after = {"name": name, "kind": kind, "role": role, "environment_id": environment_id}
            append_audit(conn, actor=actor, action="token.create", target=name, after=after)
        return secret

    def has_admin(self) -> bool:
        with self.engine.connect() as conn:
            return (
                conn.execute(
                    select(t.tokens.c.id).where(t.tokens.c.kind == "admin").limit(1)
                ).first()
                is not None
            )

    def authenticate(self, secret: str) -> Principal | None:
        with reader(self.engine).connect() as conn:
            row = conn.execute(
                select(
                    t.tokens.c.name, t.tokens.c.kind, t.tokens.c.role, t.tokens.c.environment_id
                ).where(t.tokens.c.secret_hash == _hash(secret))
            ).one_or_none()
        if row is None:
            return None
        principal = Principal(row.name, row.kind, row.role, row.environment_id)
        if len(self._known) >= _TOKEN_CACHE_LIMIT:
            self._known.clear()
        self._known[_hash(secret)] = (time.monotonic() + TOKEN_CACHE_SECONDS, principal)
        return principal

    def audit(
        self,
        project: str | None,
        env: str | None,
        target: str | None = None,
        actor: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> list[dict[str, Any]]:
        """An environment's audit entries (or, without one, those outside any)."""
        env_id = None if project is None or env is None else self.environment_of(project, env)
        return read_audit(self.engine, env_id, target, actor, since, until)

    # -- projects and environments --------------------------------------------------------

    def projects(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            projects = conn.execute(select(t.projects).order_by(t.projects.c.key)).all()
            envs = conn.execute(
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

    def create_project(self, key: str, name: str | None = None, actor: str = "system") -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(t.projects).values(key=key, name=name or key))
                after = {"key": key, "name": name or key}
                append_audit(conn, actor=actor, action="project.create", target=key, after=after)
        except IntegrityError:
            raise Conflict(f"project '{key}' exists already") from None

    def create_environment(self, project: str, env: str, actor: str = "system") -> int:
        with self.engine.connect() as conn:
            project_id = project_id_of(conn, project)
        try:
            with self.engine.begin() as conn:
                env_id = conn.execute(
                    insert(t.environments)
                    .values(project_id=project_id, key=env, version=0)
                    .returning(t.environments.c.id)
                ).scalar_one()
                append_audit(
                    conn,
                    actor=actor,
                    action="environment.create",
                    target=f"{project}/{env}",
                    after={"project": project, "key": env},
                )
                return int(env_id)
        except IntegrityError:
            raise Conflict(f"environment '{env}' exists already in '{project}'") from None

    # -- tokens and users ---------------------------------------------------------------------

    def tokens(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.tokens).order_by(t.tokens.c.id)).all()
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

    def revoke_token(self, token_id: int, actor: str = "system") -> None:
        with self.engine.begin() as conn:
            row = conn.execute(
                select(t.tokens.c.name, t.tokens.c.kind).where(t.tokens.c.id == token_id)
            ).one_or_none()
            if row is None:
                raise NotFound(f"no token {token_id}")
            conn.execute(delete(t.tokens).where(t.tokens.c.id == token_id))
            before = {"id": token_id, "name": row.name, "kind": row.kind}
            append_audit(conn, actor=actor, action="token.revoke", target=row.name, before=before)
        self._known.clear()

    def create_user(self, name: str, role: str, password: str, actor: str = "system") -> None:
        if role not in ROLES:
            raise Invalid((Problem("role", f"must be one of {', '.join(ROLES)}"),))
        if len(password) < 12:
            raise Invalid((Problem("password", "must be at least 12 characters"),))
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(t.users).values(
                        name=name,
                        role=role,
                        password_hash=hash_password(password),
                        created_at=datetime.now(UTC),
                    )
                )
                after = {"name": name, "role": role}
                append_audit(conn, actor=actor, action="user.create", target=name, after=after)
        except IntegrityError:
            raise Conflict(f"user '{name}' exists already") from None

    def users(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.users).order_by(t.users.c.name)).all()
        return [
            {"name": r.name, "role": r.role, "created_at": t.utc_text(r.created_at)} for r in rows
        ]
