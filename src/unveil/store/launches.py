"""Release templates and launches as rows.

A template is a project's named plan without a flag; saving it again
replaces it and grows its version (its ETag). A launch moves
``planned -> waiting_for_approval -> in_progress -> done | rolled_back`` by
compare-and-set on its version, so that the job starting it at its time and
a person stopping it cannot both win.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from unveil.store import tables as t
from unveil.store.dialect import insert_or_ignore, is_postgresql
from unveil.store.ids import row_number

__all__ = [
    "LAUNCH_STATES",
    "LaunchRepository",
    "LaunchRow",
    "TemplateRepository",
    "TemplateRow",
]

PLANNED, WAITING, IN_PROGRESS, DONE, ROLLED_BACK = (
    "planned",
    "waiting_for_approval",
    "in_progress",
    "done",
    "rolled_back",
)
LAUNCH_STATES = (PLANNED, WAITING, IN_PROGRESS, DONE, ROLLED_BACK)
_PREFIX = "l"


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class TemplateRow:
    """One release template as stored."""

    name: str
    project_id: int
    description: str | None
    plan: dict[str, Any]
    version: int
    created_by: str
    created_at: datetime
    updated_at: datetime


class TemplateRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def all(self, project_id: int) -> list[TemplateRow]:
        query = (
            select(t.release_templates)
            .where(t.release_templates.c.project_id == project_id)
            .order_by(t.release_templates.c.name)
        )
        return [self._row(r) for r in self._conn.execute(query)]

    def get(self, project_id: int, name: str) -> TemplateRow | None:
        query = select(t.release_templates).where(
            t.release_templates.c.project_id == project_id, t.release_templates.c.name == name
        )
        row = self._conn.execute(query).one_or_none()
        return None if row is None else self._row(row)

    def put(
        self,
        project_id: int,
        name: str,
        description: str | None,
        plan: dict[str, Any],
        actor: str,
        now: datetime,
        before: TemplateRow | None,
    ) -> bool:
        """Create it (``before`` None) or replace it if still at ``before``'s version."""
        if before is None:  # another may be creating it at this moment: then not this one
            return insert_or_ignore(
                self._conn,
                t.release_templates,
                {
                    "project_id": project_id,
                    "name": name,
                    "description": description,
                    "plan": _dumps(plan),
                    "version": 1,
                    "created_by": actor,
                    "created_at": now,
                    "updated_at": now,
                },
            )
        moved = self._conn.execute(
            update(t.release_templates)
            .where(
                t.release_templates.c.project_id == project_id,
                t.release_templates.c.name == name,
                t.release_templates.c.version == before.version,
            )
            .values(
                description=description,
                plan=_dumps(plan),
                version=t.release_templates.c.version + 1,
                updated_at=now,
            )
        )
        return moved.rowcount == 1

    def remove(self, project_id: int, name: str) -> None:
        self._conn.execute(
            delete(t.release_templates).where(
                t.release_templates.c.project_id == project_id,
                t.release_templates.c.name == name,
            )
        )

    @staticmethod
    def _row(row: Any) -> TemplateRow:
        return TemplateRow(
            row.name,
            row.project_id,
            row.description,
            json.loads(row.plan),
            int(row.version),
            row.created_by,
            row.created_at,
            row.updated_at,
        )


@dataclass(frozen=True, slots=True)
class LaunchRow:
    """One launch as stored."""

    id: str
    project_id: int
    name: str
    notes: str
    owner: str
    planned_at: datetime | None
    state: str
    changes: list[dict[str, Any]]
    effects: list[dict[str, Any]]
    approvals: dict[str, Any]
    outcome: str | None
    version: int
    created_by: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


def launch_number(launch_id: str) -> int | None:
    """The row of a public id, or None when the text is not one."""
    return row_number(launch_id, _PREFIX)


def _launch(row: Any) -> LaunchRow:
    return LaunchRow(
        f"{_PREFIX}{row.id}",
        row.project_id,
        row.name,
        row.notes,
        row.owner,
        row.planned_at,
        row.state,
        json.loads(row.changes),
        json.loads(row.effects),
        json.loads(row.approvals),
        row.outcome,
        int(row.version),
        row.created_by,
        row.created_at,
        row.updated_at,
        row.started_at,
        row.finished_at,
    )


class LaunchRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(
        self,
        *,
        project_id: int,
        name: str,
        notes: str,
        owner: str,
        planned_at: datetime | None,
        changes: list[dict[str, Any]],
        actor: str,
        now: datetime,
    ) -> LaunchRow:
        number = self._conn.execute(
            insert(t.launches)
            .values(
                project_id=project_id,
                name=name,
                notes=notes,
                owner=owner,
                planned_at=planned_at,
                state=PLANNED,
                changes=_dumps(changes),
                effects="[]",
                approvals="{}",
                outcome=None,
                version=1,
                created_by=actor,
                created_at=now,
                updated_at=now,
            )
            .returning(t.launches.c.id)
        ).scalar_one()
        found = self.get(f"{_PREFIX}{number}")
        assert found is not None  # just written in this transaction
        return found

    def get(self, launch_id: str, lock: bool = False) -> LaunchRow | None:
        number = launch_number(launch_id)
        if number is None:
            return None
        query = select(t.launches).where(t.launches.c.id == number)
        if lock and is_postgresql(self._conn):
            query = query.with_for_update()
        row = self._conn.execute(query).one_or_none()
        return None if row is None else _launch(row)

    def of_project(self, project_id: int) -> list[LaunchRow]:
        query = (
            select(t.launches)
            .where(t.launches.c.project_id == project_id)
            .order_by(t.launches.c.id.desc())
        )
        return [_launch(r) for r in self._conn.execute(query)]

    def move(self, launch: LaunchRow, now: datetime, **values: Any) -> bool:
        """Change a launch if it is still as read (its version); whether it was."""
        for name in ("changes", "effects", "approvals"):
            if name in values:
                values[name] = _dumps(values[name])
        moved = self._conn.execute(
            update(t.launches)
            .where(
                t.launches.c.id == launch_number(launch.id),
                t.launches.c.version == launch.version,
            )
            .values(version=t.launches.c.version + 1, updated_at=now, **values)
        )
        return moved.rowcount == 1
