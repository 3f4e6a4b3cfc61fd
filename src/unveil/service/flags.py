"""Changing flags: validate through the core, version, audit, in one transaction.

Every write re-reads the environment's whole flags document inside the
transaction, applies the change, and parses the result with the core: a
change that would leave any flag invalid (a rule naming a segment that is
gone, a prerequisite on a deleted flag) is refused with every problem, and
nothing is written. The environment row is locked first, so writes to one
environment are serialised and its version counts them exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select, update

from unveil.core import InvalidDocument, document_to_data, parse_document
from unveil.service.errors import (
    Conflict,
    Invalid,
    NotFound,
    PreconditionFailed,
    PreconditionRequired,
)
from unveil.store import tables as t
from unveil.store.changes import announce_change

__all__ = ["Change", "FlagRecord", "FlagService", "Snapshot"]


@dataclass(frozen=True, slots=True)
class FlagRecord:
    """One flag of one environment, as stored."""

    key: str
    data: dict[str, Any]
    version: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An environment's whole flags document and the version it is at."""

    version: int
    document: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Change:
    """Who changes something, and why."""

    actor: str
    reason: str | None = None


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


class FlagService:
    """Flags and segments of environments."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        #: called with an environment's id after each change to it commits
        self.listeners: list[Callable[[int], None]] = []

    @contextmanager
    def _writing(self, project: str, env: str) -> Iterator[tuple[Connection, int]]:
        """One write transaction on an environment, its row locked; listeners told after."""
        with self.engine.begin() as conn:
            env_id = self.environment_id(conn, project, env, lock=True)
            yield conn, env_id
        for listener in self.listeners:
            listener(env_id)

    # -- reading ---------------------------------------------------------------------

    def environment_id(self, conn: Connection, project: str, env: str, lock: bool = False) -> int:
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

    def list_flags(self, project: str, env: str) -> list[FlagRecord]:
        with self.engine.connect() as conn:
            env_id = self.environment_id(conn, project, env)
            rows = conn.execute(
                select(t.flags.c.key, t.flags.c.data, t.flags.c.version)
                .where(t.flags.c.environment_id == env_id)
                .order_by(t.flags.c.key)
            )
            return [FlagRecord(r.key, json.loads(r.data), r.version) for r in rows]

    def get_flag(self, project: str, env: str, key: str) -> FlagRecord:
        with self.engine.connect() as conn:
            env_id = self.environment_id(conn, project, env)
            return self._flag(conn, env_id, key)

    def _flag(self, conn: Connection, env_id: int, key: str) -> FlagRecord:
        row = conn.execute(
            select(t.flags.c.data, t.flags.c.version).where(
                t.flags.c.environment_id == env_id, t.flags.c.key == key
            )
        ).one_or_none()
        if row is None:
            raise NotFound(f"no flag '{key}'")
        return FlagRecord(key, json.loads(row.data), row.version)

    def snapshot(self, project: str, env: str) -> Snapshot:
        """The environment's flags document in canonical form, at one version."""
        with self.engine.connect() as conn:
            env_id = self.environment_id(conn, project, env)
            return self._snapshot(conn, env_id)

    def snapshot_of(self, env_id: int) -> Snapshot:
        """The snapshot of an environment known by id (an SDK key's)."""
        with self.engine.connect() as conn:
            return self._snapshot(conn, env_id)

    def _snapshot(self, conn: Connection, env_id: int) -> Snapshot:
        version = conn.execute(
            select(t.environments.c.version).where(t.environments.c.id == env_id)
        ).scalar_one()
        document = self._document(conn, env_id)
        return Snapshot(int(version), document_to_data(parse_document(document)))

    def _document(self, conn: Connection, env_id: int) -> dict[str, Any]:
        flag_rows = conn.execute(
            select(t.flags.c.key, t.flags.c.data)
            .where(t.flags.c.environment_id == env_id)
            .order_by(t.flags.c.key)
        )
        segment_rows = conn.execute(
            select(t.segments.c.key, t.segments.c.data)
            .where(t.segments.c.environment_id == env_id)
            .order_by(t.segments.c.key)
        )
        return {
            "version": 1,
            "segments": {r.key: json.loads(r.data) for r in segment_rows},
            "flags": {r.key: json.loads(r.data) for r in flag_rows},
        }

    # -- writing ---------------------------------------------------------------------

    def put_flag(
        self,
        project: str,
        env: str,
        key: str,
        data: Mapping[str, Any],
        change: Change,
        if_match: int | None,
        create_only: bool = False,
    ) -> FlagRecord:
        """Create or replace a flag. Replacing needs the version it was read at."""
        with self._writing(project, env) as (conn, env_id):
            try:
                before: FlagRecord | None = self._flag(conn, env_id, key)
            except NotFound:
                before = None
            if before is not None:
                if create_only:
                    raise Conflict(f"flag '{key}' exists already")
                if if_match is None:
                    raise PreconditionRequired(f"changing flag '{key}' needs If-Match")
                if if_match != before.version:
                    raise PreconditionFailed(before.version)
            elif if_match is not None:
                raise NotFound(f"no flag '{key}'")
            document = self._document(conn, env_id)
            document["flags"][key] = dict(data)
            canonical = self._validated(document)["flags"][key]
            new_version = 1 if before is None else before.version + 1
            if before is None:
                conn.execute(
                    insert(t.flags).values(
                        environment_id=env_id,
                        key=key,
                        data=_dumps(canonical),
                        version=new_version,
                    )
                )
            else:
                conn.execute(
                    update(t.flags)
                    .where(t.flags.c.environment_id == env_id, t.flags.c.key == key)
                    .values(data=_dumps(canonical), version=new_version)
                )
            action = "flag.create" if before is None else "flag.update"
            self._record(conn, env_id, change, action, key, before and before.data, canonical)
            return FlagRecord(key, canonical, new_version)

    def put_document(self, project: str, env: str, data: Mapping[str, Any], change: Change) -> int:
        """Replace the environment's whole flags document at once (apply, seeding)."""
        with self._writing(project, env) as (conn, env_id):
            before = self._document(conn, env_id)
            canonical = self._validated(dict(data))
            old_flags = {
                r.key: r.version
                for r in conn.execute(
                    select(t.flags.c.key, t.flags.c.version).where(
                        t.flags.c.environment_id == env_id
                    )
                )
            }
            conn.execute(delete(t.flags).where(t.flags.c.environment_id == env_id))
            conn.execute(delete(t.segments).where(t.segments.c.environment_id == env_id))
            for key, body in canonical.get("segments", {}).items():
                conn.execute(
                    insert(t.segments).values(
                        environment_id=env_id, key=key, data=_dumps(body), version=1
                    )
                )
            for key, body in canonical["flags"].items():
                conn.execute(
                    insert(t.flags).values(
                        environment_id=env_id,
                        key=key,
                        data=_dumps(body),
                        version=old_flags.get(key, 0) + 1,
                    )
                )
            return self._record(conn, env_id, change, "document.apply", env, before, canonical)

    def delete_flag(
        self, project: str, env: str, key: str, change: Change, if_match: int | None
    ) -> None:
        with self._writing(project, env) as (conn, env_id):
            before = self._flag(conn, env_id, key)
            if if_match is None:
                raise PreconditionRequired(f"deleting flag '{key}' needs If-Match")
            if if_match != before.version:
                raise PreconditionFailed(before.version)
            document = self._document(conn, env_id)
            del document["flags"][key]
            self._validated(document)
            conn.execute(
                delete(t.flags).where(t.flags.c.environment_id == env_id, t.flags.c.key == key)
            )
            self._record(conn, env_id, change, "flag.delete", key, before.data, None)

    @staticmethod
    def _validated(document: dict[str, Any]) -> dict[str, Any]:
        try:
            return document_to_data(parse_document(document))
        except InvalidDocument as exc:
            raise Invalid(exc.problems) from None

    def _record(
        self,
        conn: Connection,
        env_id: int,
        change: Change,
        action: str,
        target: str,
        before: Any,
        after: Any,
    ) -> int:
        """Bump the environment's version and append the audit entry, in the caller's
        transaction: the state, the version and the audit entry land together or not at all."""
        version = conn.execute(
            update(t.environments)
            .where(t.environments.c.id == env_id)
            .values(version=t.environments.c.version + 1)
            .returning(t.environments.c.version)
        ).scalar_one()
        announce_change(conn, env_id)
        conn.execute(
            insert(t.audit).values(
                environment_id=env_id,
                at=datetime.now(UTC),
                actor=change.actor,
                action=action,
                target=target,
                reason=change.reason,
                before=None if before is None else _dumps(before),
                after=None if after is None else _dumps(after),
                environment_version=version,
            )
        )
        return int(version)
