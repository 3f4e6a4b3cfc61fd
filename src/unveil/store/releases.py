"""Releases as rows: the state machine's plain data, moved on by compare-and-set.

A release's row holds its whole state (``release/state.py``'s plain data:
plan, phase, step, when the step began, history) as JSON, plus what the
worker needs to find and fence it: whether it is still active, a version
every move checks and bumps, the version of the flag the release last wrote
or accepted (any other version means someone edited the flag by hand), and
the end of the last window of metrics the judge has seen.

A move that finds the row at another version than it read matches nothing
(``move`` returns False): the caller's unit of work is then rolled back
whole, so an API command and a worker tick that race cannot both apply.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from unveil.store import tables as t
from unveil.store.dialect import is_postgresql
from unveil.store.ids import row_number

__all__ = ["ReleaseRepository", "ReleaseRow", "public_id", "row_id"]

_PREFIX = "r"


def public_id(row_id: int) -> str:
    """The id people see and type: ``r17``."""
    return f"{_PREFIX}{row_id}"


def row_id(release_id: str) -> int | None:
    """The row of a public id, or None when the text is not one."""
    return row_number(release_id, _PREFIX)


@dataclass(frozen=True, slots=True)
class ReleaseRow:
    """One release as stored."""

    id: str
    environment_id: int
    flag: str
    phase: str
    active: bool
    state: dict[str, Any]
    version: int
    flag_version: int | None
    judged_until: datetime | None
    created_at: datetime
    updated_at: datetime


def _row(row: Any) -> ReleaseRow:
    return ReleaseRow(
        public_id(row.id),
        row.environment_id,
        row.flag,
        row.phase,
        bool(row.active),
        json.loads(row.state),
        int(row.version),
        None if row.flag_version is None else int(row.flag_version),
        row.judged_until,
        row.created_at,
        row.updated_at,
    )


def _text(state: dict[str, Any]) -> str:
    return json.dumps(state, separators=(",", ":"), ensure_ascii=False)


class ReleaseRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def next_id(self) -> str:
        """The id the next release will get (call with the environment row locked)."""
        top = self._conn.execute(select(func.max(t.releases.c.id))).scalar_one()
        return public_id(int(top or 0) + 1)

    def add(
        self,
        release_id: str,
        environment_id: int,
        flag: str,
        phase: str,
        active: bool,
        state: dict[str, Any],
        flag_version: int | None,
        now: datetime,
    ) -> ReleaseRow:
        number = row_id(release_id)
        if number is None:
            raise ValueError(f"not a release id: {release_id!r}")
        self._conn.execute(
            insert(t.releases).values(
                id=number,
                environment_id=environment_id,
                flag=flag,
                phase=phase,
                active=active,
                state=_text(state),
                version=1,
                flag_version=flag_version,
                judged_until=None,
                created_at=now,
                updated_at=now,
            )
        )
        found = self.get(release_id)
        assert found is not None  # just written in this transaction
        return found

    def get(self, release_id: str, lock: bool = False) -> ReleaseRow | None:
        number = row_id(release_id)
        if number is None:
            return None
        query = select(t.releases).where(t.releases.c.id == number)
        if lock and is_postgresql(self._conn):
            query = query.with_for_update()
        row = self._conn.execute(query).one_or_none()
        return None if row is None else _row(row)

    def in_environment(
        self, environment_id: int, flag: str | None = None, active: bool | None = None
    ) -> list[ReleaseRow]:
        """An environment's releases, newest first."""
        query = select(t.releases).where(t.releases.c.environment_id == environment_id)
        if flag is not None:
            query = query.where(t.releases.c.flag == flag)
        if active is not None:
            query = query.where(t.releases.c.active == active)
        return [_row(r) for r in self._conn.execute(query.order_by(t.releases.c.id.desc()))]

    def all_active(self) -> list[ReleaseRow]:
        """Every release the worker still looks at, in every environment."""
        query = select(t.releases).where(t.releases.c.active.is_(True)).order_by(t.releases.c.id)
        return [_row(r) for r in self._conn.execute(query)]

    def active_of(self, environment_id: int, flag: str) -> ReleaseRow | None:
        """The release that drives ``flag`` now, if any (at most one does)."""
        found = self.in_environment(environment_id, flag, active=True)
        return found[0] if found else None

    def move(
        self,
        release: ReleaseRow,
        *,
        phase: str,
        active: bool,
        state: dict[str, Any],
        flag_version: int | None,
        judged_until: datetime | None,
        now: datetime,
    ) -> bool:
        """Store the release's next state, if it is still at the version read."""
        moved = self._conn.execute(
            update(t.releases)
            .where(t.releases.c.id == row_id(release.id), t.releases.c.version == release.version)
            .values(
                phase=phase,
                active=active,
                state=_text(state),
                flag_version=flag_version,
                judged_until=judged_until,
                version=t.releases.c.version + 1,
                updated_at=now,
            )
        )
        return moved.rowcount == 1
