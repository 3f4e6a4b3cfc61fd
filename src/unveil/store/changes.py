"""Change requests and the environment setting that makes changes need one.

A request moves ``open -> applied | rejected | withdrawn | refused`` once, by
compare-and-set on its version, so that two people deciding at once cannot
both win; comments may be added while it is open.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from unveil.store import tables as t
from unveil.store.dialect import insert_or_ignore, is_postgresql
from unveil.store.ids import row_number

__all__ = ["OPEN", "ChangeRepository", "ChangeRow", "SettingsRepository", "change_number"]

OPEN = "open"
STATES = (OPEN, "applied", "rejected", "withdrawn", "refused")
_PREFIX = "c"


def change_number(change_id: str) -> int | None:
    """The row of a public id, or None when the text is not one."""
    return row_number(change_id, _PREFIX)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class ChangeRow:
    """One change request as stored."""

    id: str
    environment_id: int
    action: str
    target: str
    payload: dict[str, Any]
    diff: dict[str, Any]
    base_version: int | None
    state: str
    requester: str
    reason: str | None
    decided_by: str | None
    outcome: str | None
    comments: list[dict[str, Any]]
    version: int
    created_at: datetime
    updated_at: datetime


def _row(row: Any) -> ChangeRow:
    return ChangeRow(
        f"{_PREFIX}{row.id}",
        row.environment_id,
        row.action,
        row.target,
        json.loads(row.payload),
        json.loads(row.diff),
        None if row.base_version is None else int(row.base_version),
        row.state,
        row.requester,
        row.reason,
        row.decided_by,
        row.outcome,
        json.loads(row.comments),
        int(row.version),
        row.created_at,
        row.updated_at,
    )


class ChangeRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(
        self,
        *,
        environment_id: int,
        action: str,
        target: str,
        payload: dict[str, Any],
        diff: dict[str, Any],
        base_version: int | None,
        requester: str,
        reason: str | None,
        now: datetime,
    ) -> ChangeRow:
        number = self._conn.execute(
            insert(t.change_requests)
            .values(
                environment_id=environment_id,
                action=action,
                target=target,
                payload=_dumps(payload),
                diff=_dumps(diff),
                base_version=base_version,
                state=OPEN,
                requester=requester,
                reason=reason,
                comments="[]",
                version=1,
                created_at=now,
                updated_at=now,
            )
            .returning(t.change_requests.c.id)
        ).scalar_one()
        found = self.get(f"{_PREFIX}{number}")
        assert found is not None  # just written in this transaction
        return found

    def get(self, change_id: str, lock: bool = False) -> ChangeRow | None:
        number = change_number(change_id)
        if number is None:
            return None
        query = select(t.change_requests).where(t.change_requests.c.id == number)
        if lock and is_postgresql(self._conn):
            query = query.with_for_update()
        row = self._conn.execute(query).one_or_none()
        return None if row is None else _row(row)

    def in_environment(self, environment_id: int, state: str | None = None) -> list[ChangeRow]:
        """An environment's requests, newest first."""
        query = select(t.change_requests).where(
            t.change_requests.c.environment_id == environment_id
        )
        if state is not None:
            query = query.where(t.change_requests.c.state == state)
        return [_row(r) for r in self._conn.execute(query.order_by(t.change_requests.c.id.desc()))]

    def move(
        self,
        change: ChangeRow,
        now: datetime,
        *,
        state: str | None = None,
        decided_by: str | None = None,
        outcome: str | None = None,
        comments: list[dict[str, Any]] | None = None,
    ) -> bool:
        """Store the request's next state, if it is still open at the version read."""
        values: dict[str, Any] = {"version": t.change_requests.c.version + 1, "updated_at": now}
        if state is not None:
            values["state"] = state
        if decided_by is not None:
            values["decided_by"] = decided_by
        if outcome is not None:
            values["outcome"] = outcome
        if comments is not None:
            values["comments"] = _dumps(comments)
        moved = self._conn.execute(
            update(t.change_requests)
            .where(
                t.change_requests.c.id == change_number(change.id),
                t.change_requests.c.version == change.version,
                t.change_requests.c.state == OPEN,
            )
            .values(**values)
        )
        return moved.rowcount == 1


class SettingsRepository:
    """Per-environment settings (today: whether changes need approval)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def requires_approval(self, environment_id: int) -> bool:
        found = self._conn.execute(
            select(t.environment_settings.c.requires_approval).where(
                t.environment_settings.c.environment_id == environment_id
            )
        ).scalar_one_or_none()
        return bool(found)

    def requires_approval_in(self, project: str, env: str) -> bool | None:
        """Whether changes to the environment named so wait for approval; None: no such one.

        One statement for what every write through the API asks first.
        """
        settings = t.environment_settings
        found = self._conn.execute(
            select(t.environments.c.id, settings.c.requires_approval)
            .join(t.projects, t.projects.c.id == t.environments.c.project_id)
            .outerjoin(settings, settings.c.environment_id == t.environments.c.id)
            .where(t.projects.c.key == project, t.environments.c.key == env)
        ).one_or_none()
        return None if found is None else bool(found.requires_approval)

    def on_deploy_rollback(self, environment_id: int) -> str | None:
        """What a deploy rollback does to a flag it takes the code of (None: the default)."""
        found = self._conn.execute(
            select(t.environment_settings.c.on_deploy_rollback).where(
                t.environment_settings.c.environment_id == environment_id
            )
        ).scalar_one_or_none()
        return None if found is None else str(found)

    def set_on_deploy_rollback(self, environment_id: int, value: str) -> None:
        values = {
            "environment_id": environment_id,
            "requires_approval": False,
            "on_deploy_rollback": value,
        }
        if not insert_or_ignore(self._conn, t.environment_settings, values):
            self._conn.execute(
                update(t.environment_settings)
                .where(t.environment_settings.c.environment_id == environment_id)
                .values(on_deploy_rollback=value)
            )

    def set_requires_approval(self, environment_id: int, value: bool) -> None:
        values = {"environment_id": environment_id, "requires_approval": value}
        if not insert_or_ignore(self._conn, t.environment_settings, values):
            self._conn.execute(
                update(t.environment_settings)
                .where(t.environment_settings.c.environment_id == environment_id)
                .values(requires_approval=value)
            )
