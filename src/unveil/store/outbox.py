"""What must be announced (webhooks, notifications), written with the change it announces.

A row is written in the same transaction as the change and its audit entry,
so an announcement exists exactly when its change does: never for a change
rolled back, never missing for one committed. Deliverers (webhooks) read
rows in order and mark them delivered; undelivered rows are kept for a
while and then pruned.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, select, update

from unveil.store import tables as t

__all__ = ["Announcement", "OutboxRepository"]


@dataclass(frozen=True, slots=True)
class Announcement:
    """One row of the outbox."""

    id: int
    audit_id: int
    at: datetime
    action: str
    environment_id: int | None
    payload: dict[str, Any]


def outbox_row(
    at: datetime, action: str, environment_id: int | None, payload: dict[str, Any]
) -> dict[str, Any]:
    """An outbox row's columns but its audit entry's id (written with the entry: see
    ``AuditRepository.append``)."""
    return {
        "at": at,
        "action": action,
        "environment_id": environment_id,
        "payload": json.dumps(payload, separators=(",", ":")),
    }


class OutboxRepository:
    """The outbox, on one connection."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def pending(self, after_id: int = 0, limit: int = 100) -> list[Announcement]:
        rows = self._conn.execute(
            select(t.outbox)
            .where(t.outbox.c.delivered_at.is_(None), t.outbox.c.id > after_id)
            .order_by(t.outbox.c.id)
            .limit(limit)
        )
        return [
            Announcement(r.id, r.audit_id, r.at, r.action, r.environment_id, json.loads(r.payload))
            for r in rows
        ]

    def mark_delivered(self, ids: list[int], at: datetime) -> None:
        if ids:
            self._conn.execute(
                update(t.outbox).where(t.outbox.c.id.in_(ids)).values(delivered_at=at)
            )

    def prune(self, before: datetime) -> int:
        """Forget rows older than ``before``; how many."""
        result = self._conn.execute(delete(t.outbox).where(t.outbox.c.at < before))
        return int(result.rowcount)
