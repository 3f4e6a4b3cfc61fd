"""The nodes of a deployment: who is alive, who does the background work.

Every node records itself each second; the node that holds the leadership
(see ``unveil.store.leadership``) also forgets nodes unseen for a minute.
Releases and schedules join that background work as they arrive.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from unveil.store import tables as t

__all__ = ["STALE_AFTER", "Cluster"]

#: A node not seen for this long is forgotten.
STALE_AFTER = timedelta(minutes=1)


class Cluster:
    """This node's view of the deployment."""

    def __init__(self, engine: Engine, node: str | None = None) -> None:
        self.engine = engine
        self.node = node or secrets.token_hex(6)
        self.started_at = datetime.now(UTC)

    def heartbeat(self, leading: bool) -> None:
        dialect = self.engine.dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        now = datetime.now(UTC)
        statement = insert(t.nodes).values(
            node=self.node, started_at=self.started_at, seen_at=now, leading=leading
        )
        with self.engine.begin() as conn:
            if leading:  # one leader at a time: whoever led before does not any more
                conn.execute(
                    update(t.nodes).where(t.nodes.c.node != self.node).values(leading=False)
                )
            conn.execute(
                statement.on_conflict_do_update(
                    index_elements=["node"], set_={"seen_at": now, "leading": leading}
                )
            )

    def forget_stale(self) -> int:
        """Background work of the leader: drop nodes that stopped reporting."""
        cutoff = datetime.now(UTC) - STALE_AFTER
        with self.engine.begin() as conn:
            return int(conn.execute(delete(t.nodes).where(t.nodes.c.seen_at < cutoff)).rowcount)

    def nodes(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [
                {"node": r.node, "leading": r.leading, "seen_at": t.utc_text(r.seen_at)}
                for r in conn.execute(select(t.nodes).order_by(t.nodes.c.node))
            ]
