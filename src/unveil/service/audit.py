"""The audit log: append-only, written in the same transaction as the change it records."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select

from unveil.core import Problem
from unveil.core.timestamps import parse_instant
from unveil.service.errors import Invalid
from unveil.store import tables as t
from unveil.store.database import reader

__all__ = ["append_audit", "read_audit"]


def _dumps(value: Any) -> str | None:
    return (
        None if value is None else json.dumps(value, separators=(",", ":"))
    )  # key order is meaning: rollouts follow variant order


def append_audit(
    conn: Connection,
    *,
    actor: str,
    action: str,
    target: str,
    environment_id: int | None = None,
    environment_version: int | None = None,
    reason: str | None = None,
    before: Any = None,
    after: Any = None,
) -> None:
    """One entry; ``environment_id`` None for changes outside any environment."""
    conn.execute(
        insert(t.audit).values(
            environment_id=environment_id,
            at=datetime.now(UTC),
            actor=actor,
            action=action,
            target=target,
            reason=reason,
            before=_dumps(before),
            after=_dumps(after),
            environment_version=environment_version,
        )
    )


def _instant(text: str, name: str) -> datetime:
    seconds = parse_instant(text, require_offset=True)
    if seconds is None:
        raise Invalid((Problem(name, "must be an RFC 3339 timestamp with an offset"),))
    return datetime.fromtimestamp(seconds, UTC)


def read_audit(
    engine: Engine,
    environment_id: int | None,
    target: str | None = None,
    actor: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> list[dict[str, Any]]:
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
        query = query.where(t.audit.c.at >= _instant(since, "since"))
    if until is not None:
        query = query.where(t.audit.c.at < _instant(until, "until"))
    with reader(engine).connect() as conn:
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
            for r in conn.execute(query)
        ]
