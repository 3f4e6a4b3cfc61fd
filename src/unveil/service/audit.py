"""Reading the audit log (it is written only by ``UnitOfWork.record``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from unveil.core import Problem
from unveil.core.timestamps import parse_instant
from unveil.service.errors import Invalid
from unveil.service.scope import require_environment
from unveil.service.text import check_text
from unveil.store.unit import Store

__all__ = ["AuditService"]


def _instant(text: str, name: str) -> datetime:
    check_text(text, name, 100)
    seconds = parse_instant(text, require_offset=True)
    if seconds is None:
        raise Invalid((Problem(name, "must be an RFC 3339 timestamp with an offset"),))
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise Invalid((Problem(name, "is out of range"),)) from None


class AuditService:
    def __init__(self, store: Store) -> None:
        self.store = store

    def entries(
        self,
        project: str | None,
        env: str | None,
        target: str | None = None,
        actor: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> list[dict[str, Any]]:
        """An environment's entries (or, without one, those outside any), oldest first."""
        for value, name in ((target, "target"), (actor, "actor")):
            if value is not None:
                check_text(value, name, 300)
        start = None if since is None else _instant(since, "since")
        end = None if until is None else _instant(until, "until")
        with self.store.reading() as r:
            env_id = (
                None if project is None or env is None else require_environment(r, project, env)
            )
            return r.audit.read(env_id, target, actor, start, end)
