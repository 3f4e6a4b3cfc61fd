"""Projects, environments, tokens and users: who may do what, where.

Secrets are random 32-byte tokens shown once; only their SHA-256 is stored
(a slow password hash buys nothing for secrets with 256 bits of entropy,
and every request checks one). A token's name is unique for ever (a
revoked token keeps its row), so the audit's actor names one token.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from unveil.core import Problem
from unveil.service.errors import Conflict, Forbidden, Invalid, NotFound, Unauthenticated
from unveil.service.scope import require_environment, require_project
from unveil.service.text import check_key, check_text
from unveil.store.unit import Store, UnitOfWork

__all__ = [
    "DEPLOYER",
    "ROLES",
    "TOKEN_ROLES",
    "TOKEN_CACHE_SECONDS",
    "AccessService",
    "Principal",
    "check_password",
    "hash_password",
]

#: Roles, weakest first: each may do what the ones before it may.
ROLES = ("viewer", "editor", "releaser", "admin")
#: The narrow role of a CI pipeline's token: what a viewer may, and record and verify
#: deploys (and their services). Editors and stronger roles may do that too.
DEPLOYER = "deployer"
#: The roles an admin token may have.
TOKEN_ROLES = (*ROLES, DEPLOYER)
#: The shortest password a user may choose.
MIN_PASSWORD = 12


@dataclass(frozen=True, slots=True)
class Principal:
    """Whoever presented a token."""

    name: str
    kind: str  # admin | sdk
    role: str | None
    environment_id: int | None
    token_id: int | None = None

    def may(self, role: str) -> bool:
        if self.kind != "admin":
            return False
        if self.role == DEPLOYER:  # reads, and deploys; nothing else
            return role in ("viewer", DEPLOYER)
        if role == DEPLOYER:
            role = "editor"
        return ROLES.index(self.role or "viewer") >= ROLES.index(role)

    def require(self, role: str) -> Principal:
        """Itself if it has ``role`` or a stronger one; ``Forbidden`` otherwise."""
        if not self.may(role):
            raise Forbidden(f"this needs an admin token with the {role} role")
        return self

    def require_sdk_key(self) -> Principal:
        if self.kind != "sdk" or self.environment_id is None:
            raise Forbidden("this needs an SDK key")
        return self


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


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
_MAX_SECRET = 500


class AccessService:
    """Creating projects, environments, tokens and users; checking tokens."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._known: dict[str, tuple[float, Principal]] = {}
        #: called with a token's id after its revocation commits (its streams end)
        self.revoked: list[Callable[[int], None]] = []

    # -- checking tokens --------------------------------------------------------------

    def recall(self, secret: str) -> Principal | None:
        """A token checked in the last moments, without touching the database."""
        found = self._known.get(_hash(secret))
        if found is None or found[0] < time.monotonic():
            return None
        return found[1]

    def authenticate(self, secret: str) -> Principal | None:
        """The principal of a token, or None if it is not a live token."""
        if not secret or len(secret) > _MAX_SECRET:
            return None
        with self.store.reading() as r:
            row = r.tokens.by_hash(_hash(secret))
        if row is None:
            return None
        principal = Principal(row.name, row.kind, row.role, row.environment_id, row.id)
        if len(self._known) >= _TOKEN_CACHE_LIMIT:
            self._known.clear()
        self._known[_hash(secret)] = (time.monotonic() + TOKEN_CACHE_SECONDS, principal)
        return principal

    def principal(self, authorization: str | None) -> Principal:
        """Whoever an Authorization header names; ``Unauthenticated`` if nobody valid."""
        secret = bearer_secret(authorization)
        found = self.recall(secret) or self.authenticate(secret)
        if found is None:
            raise Unauthenticated("the token is not valid")
        return found

    def has_admin(self) -> bool:
        with self.store.reading() as r:
            return r.tokens.any_admin()

    # -- projects and environments ----------------------------------------------------

    def projects(self) -> list[dict[str, Any]]:
        with self.store.reading() as r:
            return r.projects.all()

    def environment_of(self, project: str, env: str) -> int:
        with self.store.reading() as r:
            return require_environment(r, project, env)

    def create_project(self, key: str, name: str | None = None, actor: str = "system") -> None:
        check_key(key, "key")
        name = check_text(name, "name") if name is not None else key
        with self.store.unit_of_work() as work:
            if not _add_project(work, key, name, actor):
                raise Conflict(f"project '{key}' exists already")

    def create_environment(self, project: str, env: str, actor: str = "system") -> int:
        check_key(env, "key")
        with self.store.unit_of_work() as work:
            if not _add_environment(work, project, env, actor):
                raise Conflict(f"environment '{env}' exists already in '{project}'")
            return require_environment(work, project, env)

    def ensure_environment(self, project: str, env: str, actor: str = "system") -> int:
        """The environment's id, creating it (and its project) if need be; safe to race."""
        check_key(project, "project")
        check_key(env, "environment")
        with self.store.unit_of_work() as work:
            _add_project(work, project, project, actor)
            _add_environment(work, project, env, actor)
            return require_environment(work, project, env)

    # -- tokens -------------------------------------------------------------------------

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
        check_text(name, "name")
        if kind == "sdk":
            if environment_id is None:
                raise Invalid((Problem("environment", "an SDK key needs its environment"),))
            if role is not None:
                raise Invalid((Problem("role", "an SDK key has no role"),))
        elif kind == "admin":
            if role not in TOKEN_ROLES:
                raise Invalid(
                    (Problem("role", f"an admin token needs a role: {', '.join(TOKEN_ROLES)}"),)
                )
            if environment_id is not None:
                raise Invalid(
                    (Problem("environment", "an admin token is not for one environment"),)
                )
        else:
            raise Invalid((Problem("kind", "must be 'admin' or 'sdk'"),))
        prefix = "unveil-sdk-" if kind == "sdk" else "unveil-admin-"
        secret = secret or prefix + secrets.token_urlsafe(32)
        with self.store.unit_of_work() as work:
            added = work.tokens.add(
                name=name,
                kind=kind,
                role=role,
                environment_id=environment_id,
                secret_hash=_hash(secret),
                at=datetime.now(UTC),
            )
            if not added:
                raise Conflict(f"a token named '{name}' exists already (names are never reused)")
            work.record(
                actor=actor,
                action="token.create",
                target=name,
                after={"name": name, "kind": kind, "role": role, "environment_id": environment_id},
            )
        return secret

    def create_token_for(
        self,
        name: str,
        kind: str,
        role: str | None,
        project: str | None,
        env: str | None,
        actor: str,
    ) -> dict[str, Any]:
        """A token as the API asks for one (an SDK key names its project and environment):
        its id, name and secret (shown this once)."""
        environment_id = None
        if kind == "sdk":
            if project is None or env is None:
                raise Invalid(
                    (Problem("environment", "an SDK key needs its project and environment"),)
                )
            check_key(project, "project")
            check_key(env, "environment")
            environment_id = self.environment_of(project, env)
        elif project is not None or env is not None:
            raise Invalid((Problem("environment", "an admin token is not for one environment"),))
        secret = self.create_token(name, kind, role, environment_id, None, actor)
        with self.store.reading() as r:
            token_id = r.tokens.id_of_name(name)
        return {"id": token_id, "name": name, "secret": secret}

    def tokens(self) -> list[dict[str, Any]]:
        with self.store.reading() as r:
            return r.tokens.all()

    def revoke_token(self, token_id: int, actor: str = "system") -> None:
        if not 0 < token_id < 2**63:  # no row has such an id, and no column holds it
            raise NotFound(f"no token {token_id}")
        with self.store.unit_of_work() as work:
            row = work.tokens.by_id(token_id)
            if row is None:
                raise NotFound(f"no token {token_id}")
            work.tokens.revoke(token_id, datetime.now(UTC))
            work.record(
                actor=actor,
                action="token.revoke",
                target=row.name,
                before={"id": token_id, "name": row.name, "kind": row.kind},
            )
        self._known.clear()
        for listener in self.revoked:
            listener(token_id)

    def tokens_alive(self, token_ids: Collection[int]) -> set[int]:
        """Which of these tokens are still live (not revoked): one query for all of them."""
        with self.store.reading() as r:
            return r.tokens.live_ids(token_ids)

    # -- users --------------------------------------------------------------------------

    def create_user(self, name: str, role: str, password: str, actor: str = "system") -> None:
        problems = []
        if role not in ROLES:
            problems.append(Problem("role", f"must be one of {', '.join(ROLES)}"))
        if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= 1000:
            problems.append(Problem("password", f"must be {MIN_PASSWORD} to 1000 characters"))
        if problems:
            raise Invalid(tuple(problems))
        check_text(name, "name")
        with self.store.unit_of_work() as work:
            added = work.users.add(
                name=name, role=role, password_hash=hash_password(password), at=datetime.now(UTC)
            )
            if not added:
                raise Conflict(f"user '{name}' exists already")
            work.record(
                actor=actor, action="user.create", target=name, after={"name": name, "role": role}
            )

    def users(self) -> list[dict[str, Any]]:
        with self.store.reading() as r:
            return r.users.all()


def _add_project(work: UnitOfWork, key: str, name: str, actor: str) -> bool:
    """Create and record a project; False (and nothing recorded) if it exists."""
    if not work.projects.add(key, name):
        return False
    work.record(actor=actor, action="project.create", target=key, after={"key": key, "name": name})
    return True


def _add_environment(work: UnitOfWork, project: str, env: str, actor: str) -> bool:
    """Create and record an environment of a project; False if it exists."""
    if not work.environments.add(require_project(work, project), env):
        return False
    after = {"project": project, "key": env}
    work.record(actor=actor, action="environment.create", target=f"{project}/{env}", after=after)
    return True


def bearer_secret(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header (the scheme in any case)."""
    if not authorization:
        raise Unauthenticated("an Authorization header with a token is required")
    scheme, _, secret = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    return secret.strip()
