"""Changing flags and segments: validate through the core, version, audit, in one transaction.

Every write re-reads the environment's whole flags document inside the
transaction, applies the change, and parses the result with the core: a
change that would leave anything invalid (a rule naming a segment that is
gone, a prerequisite on a deleted flag) is refused with every problem, and
nothing is written. The environment row is locked first, so writes to one
environment are serialised and its version counts them exactly. Each write
also announces itself (``announce_change``) so that every node refreshes.

Flags and segments are stored alike ("parts" of the document), so one set
of operations serves both.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection, Engine, Table, delete, insert, select, update

from unveil.core import InvalidDocument, document_to_data, parse_document
from unveil.service.access import environment_id_of
from unveil.service.audit import append_audit
from unveil.service.errors import (
    Conflict,
    Invalid,
    NotFound,
    PreconditionFailed,
    PreconditionRequired,
)
from unveil.store import tables as t
from unveil.store.changes import announce_change
from unveil.store.database import reader

__all__ = ["Change", "DocumentDiff", "FlagRecord", "FlagService", "Part", "Snapshot"]

Part = Literal["flags", "segments"]
_TABLES: dict[str, Table] = {"flags": t.flags, "segments": t.segments}
_SINGULAR = {"flags": "flag", "segments": "segment"}


@dataclass(frozen=True, slots=True)
class FlagRecord:
    """One flag or segment of one environment, as stored."""

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


@dataclass(frozen=True, slots=True)
class DocumentDiff:
    """What applying a document would add, change and remove, per part."""

    added: dict[str, list[str]]
    changed: dict[str, list[str]]
    removed: dict[str, list[str]]

    @property
    def empty(self) -> bool:
        return not any(
            keys for d in (self.added, self.changed, self.removed) for keys in d.values()
        )

    def as_data(self) -> dict[str, Any]:
        return {"added": self.added, "changed": self.changed, "removed": self.removed}


def _dumps(value: Any) -> str:
    return json.dumps(
        value, separators=(",", ":")
    )  # key order is meaning: rollouts follow variant order


def diff_parts(before: Mapping[str, Any], after: Mapping[str, Any]) -> DocumentDiff:
    """Which flags and segments differ between two canonical documents."""
    added: dict[str, list[str]] = {}
    changed: dict[str, list[str]] = {}
    removed: dict[str, list[str]] = {}
    for part in _TABLES:
        old, new = before.get(part, {}), after.get(part, {})
        added[part] = sorted(k for k in new if k not in old)
        changed[part] = sorted(k for k in new if k in old and old[k] != new[k])
        removed[part] = sorted(k for k in old if k not in new)
    return DocumentDiff(added, changed, removed)


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
            env_id = environment_id_of(conn, project, env, lock=True)
            yield conn, env_id
        for listener in self.listeners:
            listener(env_id)

    # -- reading ---------------------------------------------------------------------

    def list_items(self, part: Part, project: str, env: str) -> list[FlagRecord]:
        table = _TABLES[part]
        with reader(self.engine).connect() as conn:
            env_id = environment_id_of(conn, project, env)
            rows = conn.execute(
                select(table.c.key, table.c.data, table.c.version)
                .where(table.c.environment_id == env_id)
                .order_by(table.c.key)
            )
            return [FlagRecord(r.key, json.loads(r.data), r.version) for r in rows]

    def get_item(self, part: Part, project: str, env: str, key: str) -> FlagRecord:
        with reader(self.engine).connect() as conn:
            env_id = environment_id_of(conn, project, env)
            return self._item(conn, part, env_id, key)

    def _item(self, conn: Connection, part: Part, env_id: int, key: str) -> FlagRecord:
        table = _TABLES[part]
        row = conn.execute(
            select(table.c.data, table.c.version).where(
                table.c.environment_id == env_id, table.c.key == key
            )
        ).one_or_none()
        if row is None:
            raise NotFound(f"no {_SINGULAR[part]} '{key}'")
        return FlagRecord(key, json.loads(row.data), row.version)

    def snapshot(self, project: str, env: str) -> Snapshot:
        """The environment's flags document in canonical form, at one version."""
        with reader(self.engine).connect() as conn:
            env_id = environment_id_of(conn, project, env)
            return self._snapshot(conn, env_id)

    def version_of(self, env_id: int) -> int:
        """The environment's version alone: cheap to ask often."""
        with reader(self.engine).connect() as conn:
            return int(
                conn.execute(
                    select(t.environments.c.version).where(t.environments.c.id == env_id)
                ).scalar_one()
            )

    def snapshot_of(self, env_id: int) -> Snapshot:
        """The snapshot of an environment known by id (an SDK key's)."""
        with reader(self.engine).connect() as conn:
            return self._snapshot(conn, env_id)

    def _snapshot(self, conn: Connection, env_id: int) -> Snapshot:
        version = conn.execute(
            select(t.environments.c.version).where(t.environments.c.id == env_id)
        ).scalar_one()
        document = self._document(conn, env_id)
        return Snapshot(int(version), document_to_data(parse_document(document)))

    def _document(self, conn: Connection, env_id: int) -> dict[str, Any]:
        document: dict[str, Any] = {"version": 1}
        for part, table in _TABLES.items():
            rows = conn.execute(
                select(table.c.key, table.c.data)
                .where(table.c.environment_id == env_id)
                .order_by(table.c.key)
            )
            document[part] = {r.key: json.loads(r.data) for r in rows}
        return document

    # -- writing ---------------------------------------------------------------------

    def put_item(
        self,
        part: Part,
        project: str,
        env: str,
        key: str,
        data: Mapping[str, Any],
        change: Change,
        if_match: int | None,
        create_only: bool = False,
    ) -> FlagRecord:
        """Create or replace a flag or segment. Replacing needs the version it was read at."""
        what = f"{_SINGULAR[part]} '{key}'"
        table = _TABLES[part]
        with self._writing(project, env) as (conn, env_id):
            try:
                before: FlagRecord | None = self._item(conn, part, env_id, key)
            except NotFound:
                before = None
            if before is not None:
                if create_only:
                    raise Conflict(f"{what} exists already")
                if if_match is None:
                    raise PreconditionRequired(f"changing {what} needs If-Match")
                if if_match != before.version:
                    raise PreconditionFailed(before.version)
            elif if_match is not None:
                raise NotFound(f"no {what}")
            document = self._document(conn, env_id)
            document[part][key] = dict(data)
            canonical = self._validated(document)[part][key]
            version = 1 if before is None else before.version + 1
            if before is None:
                conn.execute(
                    insert(table).values(
                        environment_id=env_id, key=key, data=_dumps(canonical), version=version
                    )
                )
            else:
                conn.execute(
                    update(table)
                    .where(table.c.environment_id == env_id, table.c.key == key)
                    .values(data=_dumps(canonical), version=version)
                )
            action = f"{_SINGULAR[part]}.{'create' if before is None else 'update'}"
            self._record(conn, env_id, change, action, key, before and before.data, canonical)
            return FlagRecord(key, canonical, version)

    def delete_item(
        self, part: Part, project: str, env: str, key: str, change: Change, if_match: int | None
    ) -> None:
        table = _TABLES[part]
        with self._writing(project, env) as (conn, env_id):
            before = self._item(conn, part, env_id, key)
            if if_match is None:
                raise PreconditionRequired(f"deleting {_SINGULAR[part]} '{key}' needs If-Match")
            if if_match != before.version:
                raise PreconditionFailed(before.version)
            document = self._document(conn, env_id)
            del document[part][key]
            self._validated(document)
            conn.execute(delete(table).where(table.c.environment_id == env_id, table.c.key == key))
            self._record(conn, env_id, change, f"{_SINGULAR[part]}.delete", key, before.data, None)

    def apply_document(
        self,
        project: str,
        env: str,
        data: Mapping[str, Any],
        change: Change,
        dry_run: bool = False,
        if_match: int | None = None,
    ) -> tuple[DocumentDiff, int]:
        """Make the environment's flags and segments exactly the document's.

        Idempotent: applying what is already there writes nothing and keeps
        the version. With ``if_match`` (an environment version, from export)
        it applies only if nothing changed since. Returns what differed and
        the version after.
        """
        with self._writing(project, env) as (conn, env_id):
            current = document_to_data(parse_document(self._document(conn, env_id)))
            wanted = self._validated(dict(data))
            diff = diff_parts(current, wanted)
            version = conn.execute(
                select(t.environments.c.version).where(t.environments.c.id == env_id)
            ).scalar_one()
            if if_match is not None and if_match != version:
                raise PreconditionFailed(int(version))
            if dry_run or diff.empty:
                return diff, int(version)
            for part, table in _TABLES.items():
                new = wanted.get(part, {})
                for key in diff.removed[part]:
                    conn.execute(
                        delete(table).where(table.c.environment_id == env_id, table.c.key == key)
                    )
                for key in diff.changed[part]:
                    conn.execute(
                        update(table)
                        .where(table.c.environment_id == env_id, table.c.key == key)
                        .values(data=_dumps(new[key]), version=table.c.version + 1)
                    )
                for key in diff.added[part]:
                    conn.execute(
                        insert(table).values(
                            environment_id=env_id, key=key, data=_dumps(new[key]), version=1
                        )
                    )
            version = self._record(conn, env_id, change, "document.apply", env, current, wanted)
            return diff, version

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
        append_audit(
            conn,
            actor=change.actor,
            action=action,
            target=target,
            environment_id=env_id,
            environment_version=version,
            reason=change.reason,
            before=before,
            after=after,
        )
        return int(version)
