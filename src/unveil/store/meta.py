"""Flag metadata per project: type, lifetime, tags, owner."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update

from unveil.store import tables as t
from unveil.store.dialect import insert_or_ignore, locked

__all__ = ["MetaRepository"]


class MetaRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def get(
        self, project_id: int, key: str, lock: bool = False
    ) -> tuple[dict[str, Any], datetime] | None:
        """The metadata and when it was created; with ``lock`` the row is held."""
        query = select(t.flag_meta).where(
            t.flag_meta.c.project_id == project_id, t.flag_meta.c.key == key
        )
        if lock:
            query = locked(self._conn, query)
        row = self._conn.execute(query).one_or_none()
        if row is None:
            return None
        return _meta(row), row.created_at

    def all(self, project_id: int) -> dict[str, dict[str, Any]]:
        """Every flag's metadata in the project, by flag key (one query for a whole list)."""
        rows = self._conn.execute(
            select(t.flag_meta).where(t.flag_meta.c.project_id == project_id)
        ).all()
        return {row.key: _meta(row) for row in rows}

    def add(self, project_id: int, key: str, meta: dict[str, Any], at: datetime) -> bool:
        """Create it; False if another writer created it first (nothing is overwritten)."""
        return insert_or_ignore(
            self._conn,
            t.flag_meta,
            {"project_id": project_id, "key": key, "created_at": at, **_columns(meta)},
        )

    def replace(self, project_id: int, key: str, meta: dict[str, Any]) -> None:
        self._conn.execute(
            update(t.flag_meta)
            .where(t.flag_meta.c.project_id == project_id, t.flag_meta.c.key == key)
            .values(**_columns(meta))
        )


def _meta(row: Any) -> dict[str, Any]:
    return {
        "type": row.type,
        "lifetime_days": row.lifetime_days,
        "tags": json.loads(row.tags),
        "owner": row.owner,
    }


def _columns(meta: dict[str, Any]) -> dict[str, Any]:
    return {**meta, "tags": json.dumps(meta["tags"])}
