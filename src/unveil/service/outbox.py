"""The outbox's upkeep: announcements are kept for a while, then forgotten.

Rows are written by ``UnitOfWork.record`` with every change. Deliverers
(webhooks) mark what they have sent; whatever is older than the retention
is pruned by a recurring job of the leader, delivered or not.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from unveil.store.unit import UnitOfWork

__all__ = ["OUTBOX_RETENTION", "prune_outbox"]

OUTBOX_RETENTION = timedelta(days=7)


def prune_outbox(work: UnitOfWork) -> int:
    """Forget announcements older than the retention; how many."""
    return work.outbox.prune(datetime.now(UTC) - OUTBOX_RETENTION)
