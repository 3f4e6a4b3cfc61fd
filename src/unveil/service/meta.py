"""What a flag is for, across a project's environments: type, lifetime, tags, owner.

The type says how long a flag is expected to live: release and experiment
flags are temporary (40 days unless told otherwise) and become stale after
that; operational, kill-switch and permission flags are meant to stay.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from unveil.core import Problem
from unveil.service.access import project_id_of
from unveil.service.audit import append_audit
from unveil.service.errors import Invalid, NotFound, PreconditionFailed, PreconditionRequired
from unveil.store import tables as t

__all__ = ["DEFAULT_LIFETIME_DAYS", "FLAG_TYPES", "MetaService", "check_meta"]

FLAG_TYPES = ("release", "experiment", "operational", "kill-switch", "permission")
DEFAULT_LIFETIME_DAYS = {"release": 40, "experiment": 40}
_FIELDS = {"type", "lifetime_days", "tags", "owner"}


def check_meta(data: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata, completed with defaults; ``Invalid`` names every bad field."""
    problems = [Problem(k, "unknown field") for k in data if k not in _FIELDS]
    kind = data.get("type", "release")
    if kind not in FLAG_TYPES:
        problems.append(Problem("type", f"must be one of {', '.join(FLAG_TYPES)}"))
    lifetime = data.get("lifetime_days", DEFAULT_LIFETIME_DAYS.get(str(kind)))
    if lifetime is not None and (
        not isinstance(lifetime, int) or isinstance(lifetime, bool) or not 1 <= lifetime <= 3650
    ):
        problems.append(Problem("lifetime_days", "must be a whole number of days, 1 to 3650"))
    tags = data.get("tags", [])
    if (
        not isinstance(tags, list)
        or len(tags) > 20
        or not all(isinstance(tag, str) and 0 < len(tag) <= 50 for tag in tags)
    ):
        problems.append(Problem("tags", "must be at most 20 strings of 1 to 50 characters"))
    owner = data.get("owner")
    if owner is not None and (not isinstance(owner, str) or not 0 < len(owner) <= 200):
        problems.append(Problem("owner", "must be a string of 1 to 200 characters"))
    if problems:
        raise Invalid(tuple(problems))
    return {"type": kind, "lifetime_days": lifetime, "tags": list(tags), "owner": owner}


class MetaService:
    """Reading and writing flag metadata."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _project_id(self, project: str) -> int:
        with self.engine.connect() as conn:
            return project_id_of(conn, project)

    def get(self, project: str, key: str) -> dict[str, Any]:
        """The flag's metadata, with ``etag`` to send back in If-Match."""
        project_id = self._project_id(project)
        with self.engine.connect() as conn:
            found = self._read(conn, project_id, key)
        if found is None:
            raise NotFound(f"no metadata for flag '{key}'")
        return found

    @staticmethod
    def _read(
        conn: Connection, project_id: int, key: str, lock: bool = False
    ) -> dict[str, Any] | None:
        query = select(t.flag_meta).where(
            t.flag_meta.c.project_id == project_id, t.flag_meta.c.key == key
        )
        if lock and conn.dialect.name == "postgresql":
            query = query.with_for_update()
        row = conn.execute(query).one_or_none()
        if row is None:
            return None
        meta = {
            "type": row.type,
            "lifetime_days": row.lifetime_days,
            "tags": json.loads(row.tags),
            "owner": row.owner,
        }
        return {
            "key": key,
            **meta,
            "created_at": t.utc_text(row.created_at),
            "etag": meta_etag(meta),
        }

    def put(
        self,
        project: str,
        key: str,
        data: Mapping[str, Any],
        actor: str = "system",
        if_match: str | None = None,
    ) -> dict[str, Any]:
        """Create, or replace with the ETag read before (If-Match), the flag's metadata."""
        meta = check_meta(data)
        project_id = self._project_id(project)
        dialect = self.engine.dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        values = {**meta, "tags": json.dumps(meta["tags"])}
        statement = insert(t.flag_meta).values(
            project_id=project_id, key=key, created_at=datetime.now(UTC), **values
        )
        with self.engine.begin() as conn:
            before = self._read(conn, project_id, key, lock=True)
            if before is not None:
                if if_match is None:
                    raise PreconditionRequired(f"changing the metadata of '{key}' needs If-Match")
                if if_match != before["etag"]:
                    raise PreconditionFailed(before["etag"])
            elif if_match is not None:
                raise NotFound(f"no metadata for flag '{key}'")
            conn.execute(
                statement.on_conflict_do_update(index_elements=["project_id", "key"], set_=values)
            )
            append_audit(
                conn,
                actor=actor,
                action="flag.meta",
                target=f"{project}/{key}",
                before=before,
                after={"key": key, **meta},
            )
        return self.get(project, key)


def meta_etag(meta: Mapping[str, Any]) -> str:
    """An ETag for metadata: a digest of its content (it has no version of its own)."""
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
    return f'"m-{digest}"'
