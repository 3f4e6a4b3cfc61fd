"""The audit log: append-only, one entry per change, in the change's own transaction."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, literal, select

from unveil.store import tables as t
from unveil.store.dialect import is_postgresql
from unveil.store.outbox import outbox_row

__all__ = ["AuditEntry", "AuditRepository"]

AuditEntry = dict[str, Any]


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


class AuditRepository:
    """Entries of the audit log, on one connection."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def append(
        self,
        *,
        at: datetime,
        actor: str,
        action: str,
        target: str,
        environment_id: int | None,
        environment_version: int | None,
        reason: str | None,
        before: Any,
        after: Any,
        announcement: dict[str, Any] | None = None,
    ) -> int:
        """One entry; its id. With ``announcement``, its outbox row too (that payload).

        On PostgreSQL the two are one statement (the entry's insert feeds the
        outbox's): every change writes both, and a round trip is most of what
        a row costs.
        """
        entry = (
            insert(t.audit)
            .values(
                environment_id=environment_id,
                at=at,
                actor=actor,
                action=action,
                target=target,
                reason=reason,
                before=_dumps(before),
                after=_dumps(after),
                environment_version=environment_version,
            )
            .returning(t.audit.c.id)
        )
        if announcement is None:
            return int(self._conn.execute(entry).scalar_one())
        row = outbox_row(at, action, environment_id, announcement)
        if is_postgresql(self._conn):
            written = entry.cte("entry")
            values = [literal(value, t.outbox.c[name].type) for name, value in row.items()]
            both = (
                insert(t.outbox)
                .from_select(["audit_id", *row], select(written.c.id, *values))
                .returning(t.outbox.c.audit_id)
            )
            return int(self._conn.execute(both).scalar_one())
        audit_id = int(self._conn.execute(entry).scalar_one())
        self._conn.execute(insert(t.outbox).values(audit_id=audit_id, **row))
        return audit_id

    def last_change_of(self, environment_id: int, flag: str) -> tuple[str, str | None] | None:
        """Who last changed a flag of an environment, and why (a release's hand-edit check)."""
        row = self._conn.execute(
            select(t.audit.c.actor, t.audit.c.reason)
            .where(
                t.audit.c.environment_id == environment_id,
                t.audit.c.target == flag,
                t.audit.c.action.like("flag.%"),
            )
            .order_by(t.audit.c.id.desc())
            .limit(1)
        ).one_or_none()
        return None if row is None else (row.actor, row.reason)

    def actor_of(self, environment_id: int, action: str, target: str, subject: str) -> str | None:
        """Who made the entry of ``action`` on ``target`` whose ``after`` names ``subject``."""
        rows = self._conn.execute(
            select(t.audit.c.actor, t.audit.c.after)
            .where(
                t.audit.c.environment_id == environment_id,
                t.audit.c.action == action,
                t.audit.c.target == target,
            )
            .order_by(t.audit.c.id.desc())
        )
        for row in rows:
            after = json.loads(row.after) if row.after else {}
            if isinstance(after, dict) and subject in after.values():
                return str(row.actor)
        return None

    def read(
        self,
        environment_id: int | None,
        target: str | None = None,
        actor: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[AuditEntry]:
        """Entries of one environment (or, for None, those outside any), oldest first."""
        where = (
            t.audit.c.environment_id.is_(None)
            if environment_id is None
            else t.audit.c.environment_id == environment_id
        )
        query = select(t.audit).where(where).order_by(t.audit.c.id)
        if target is not None:
            query = query.where(t.audit.c.target == target)
        if actor is not None:
            query = query.where(t.audit.c.actor == actor)
        if since is not None:
            query = query.where(t.audit.c.at >= since)
        if until is not None:
            query = query.where(t.audit.c.at < until)
        return [
            {
                "id": r.id,
                "at": t.utc_text(r.at),
                "actor": r.actor,
                "action": r.action,
                "target": r.target,
                "reason": r.reason,
                "before": r.before,
                "after": r.after,
                "environment_version": r.environment_version,
            }
            for r in self._conn.execute(query)
        ]
