"""The nodes of a deployment, as each reports itself."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, select, update

from unveil.store import tables as t
from unveil.store.dialect import insert_or_update

__all__ = ["NodeRepository"]


class NodeRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def report(self, node: str, started_at: datetime, now: datetime, leading: bool) -> None:
        if leading:  # one leader at a time: whoever led before does not any more
            self._conn.execute(update(t.nodes).where(t.nodes.c.node != node).values(leading=False))
        insert_or_update(
            self._conn,
            t.nodes,
            {"node": node, "started_at": started_at, "seen_at": now, "leading": leading},
            ["node"],
            {"seen_at": now, "leading": leading},
        )

    def forget_older_than(self, cutoff: datetime) -> int:
        return int(self._conn.execute(delete(t.nodes).where(t.nodes.c.seen_at < cutoff)).rowcount)

    def all(self) -> list[dict[str, Any]]:
        return [
            {"node": r.node, "leading": r.leading, "seen_at": t.utc_text(r.seen_at)}
            for r in self._conn.execute(select(t.nodes).order_by(t.nodes.c.node))
        ]
