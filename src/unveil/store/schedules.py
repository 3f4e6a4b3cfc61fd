"""Scheduled changes as rows: what to write, when, against what, and what came of it.

A schedule moves ``pending -> applied | failed | cancelled`` once, by
compare-and-set on its version: the worker applying it and a person
cancelling it cannot both win. The job that runs it (``schedule.run``,
keyed by the schedule) is only the alarm clock; this row is the truth.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from unveil.store import tables as t
from unveil.store.dialect import is_postgresql
from unveil.store.ids import row_number

__all__ = ["PENDING", "ScheduleRepository", "ScheduleRow", "schedule_number"]

PENDING, APPLIED, FAILED, CANCELLED = "pending", "applied", "failed", "cancelled"
STATES = (PENDING, APPLIED, FAILED, CANCELLED)
_PREFIX = "s"


def schedule_number(schedule_id: str) -> int | None:
    """The row of a public id, or None when the text is not one."""
    return row_number(schedule_id, _PREFIX)


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """One scheduled change as stored."""

    id: str
    environment_id: int
    action: str
    target: str
    change: dict[str, Any]
    run_at: datetime
    until: datetime | None
    time_zone: str | None
    state: str
    undoes: str | None
    actor: str
    reason: str | None
    outcome: str | None
    version: int
    created_at: datetime
    updated_at: datetime


def _row(row: Any) -> ScheduleRow:
    return ScheduleRow(
        f"{_PREFIX}{row.id}",
        row.environment_id,
        row.action,
        row.target,
        json.loads(row.change),
        row.run_at,
        row.until,
        row.time_zone,
        row.state,
        None if row.undoes is None else f"{_PREFIX}{row.undoes}",
        row.actor,
        row.reason,
        row.outcome,
        int(row.version),
        row.created_at,
        row.updated_at,
    )


class ScheduleRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(
        self,
        *,
        environment_id: int,
        action: str,
        target: str,
        change: dict[str, Any],
        run_at: datetime,
        until: datetime | None,
        time_zone: str | None,
        actor: str,
        reason: str | None,
        now: datetime,
        undoes: str | None = None,
    ) -> ScheduleRow:
        number = self._conn.execute(
            insert(t.schedules)
            .values(
                environment_id=environment_id,
                action=action,
                target=target,
                change=json.dumps(change, separators=(",", ":"), ensure_ascii=False),
                run_at=run_at,
                until=until,
                time_zone=time_zone,
                state=PENDING,
                undoes=None if undoes is None else schedule_number(undoes),
                actor=actor,
                reason=reason,
                outcome=None,
                version=1,
                created_at=now,
                updated_at=now,
            )
            .returning(t.schedules.c.id)
        ).scalar_one()
        found = self.get(f"{_PREFIX}{number}")
        assert found is not None  # just written in this transaction
        return found

    def get(self, schedule_id: str, lock: bool = False) -> ScheduleRow | None:
        number = schedule_number(schedule_id)
        if number is None:
            return None
        query = select(t.schedules).where(t.schedules.c.id == number)
        if lock and is_postgresql(self._conn):
            query = query.with_for_update()
        row = self._conn.execute(query).one_or_none()
        return None if row is None else _row(row)

    def in_environment(self, environment_id: int, state: str | None = None) -> list[ScheduleRow]:
        """An environment's schedules, soonest first."""
        query = select(t.schedules).where(t.schedules.c.environment_id == environment_id)
        if state is not None:
            query = query.where(t.schedules.c.state == state)
        query = query.order_by(t.schedules.c.run_at, t.schedules.c.id)
        return [_row(r) for r in self._conn.execute(query)]

    def settle(self, schedule: ScheduleRow, state: str, outcome: str, now: datetime) -> bool:
        """Move a pending schedule to its end, if it is still as read."""
        moved = self._conn.execute(
            update(t.schedules)
            .where(
                t.schedules.c.id == schedule_number(schedule.id),
                t.schedules.c.version == schedule.version,
                t.schedules.c.state == PENDING,
            )
            .values(state=state, outcome=outcome, version=t.schedules.c.version + 1, updated_at=now)
        )
        return moved.rowcount == 1
