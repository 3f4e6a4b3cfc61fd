"""The nodes of a deployment: who is alive, who does the background work.

Every node records itself every few seconds; the leader's recurring job
forgets nodes unseen for a minute.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from unveil.store.unit import Store, UnitOfWork

__all__ = ["STALE_AFTER", "Cluster"]

#: A node not seen for this long is forgotten.
STALE_AFTER = timedelta(minutes=1)


class Cluster:
    """This node's view of the deployment."""

    def __init__(self, store: Store, node: str | None = None) -> None:
        self.store = store
        self.node = node or secrets.token_hex(6)
        self.started_at = datetime.now(UTC)

    def heartbeat(self, leading: bool) -> None:
        with self.store.unit_of_work() as work:  # bookkeeping: no audit entry
            work.nodes.report(self.node, self.started_at, datetime.now(UTC), leading)

    def forget_stale(self, work: UnitOfWork) -> int:
        """Background work of the leader: drop nodes that stopped reporting."""
        return work.nodes.forget_older_than(datetime.now(UTC) - STALE_AFTER)

    def nodes(self) -> list[dict[str, Any]]:
        with self.store.reading() as r:
            return r.nodes.all()
