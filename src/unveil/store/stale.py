"""Stale flags: the project setting N, and the flags found stale per environment."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, func, select

from unveil.store import tables as t
from unveil.store.dialect import insert_or_ignore, insert_or_update

__all__ = ["FlagWrite", "StaleMark", "StaleRepository"]


@dataclass(frozen=True, slots=True)
class StaleMark:
    """A flag the leader found stale (and announced) at ``found_at``, with its reasons then."""

    flag: str
    reasons: list[dict[str, Any]]
    found_at: datetime


@dataclass(frozen=True, slots=True)
class FlagWrite:
    """One audited write of a single flag: what it was before and after, and when."""

    action: str
    at: datetime
    environment_version: int | None
    before: Any
    after: Any


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class StaleRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def stale_after_days(self, project_id: int) -> int | None:
        """The project's N, or None where it never set one (the service's default holds)."""
        found = self._conn.execute(
            select(t.project_settings.c.stale_after_days).where(
                t.project_settings.c.project_id == project_id
            )
        ).scalar_one_or_none()
        return None if found is None else int(found)

    def set_stale_after_days(self, project_id: int, days: int) -> None:
        insert_or_update(
            self._conn,
            t.project_settings,
            {"project_id": project_id, "stale_after_days": days},
            ["project_id"],
            {"stale_after_days": days},
        )

    def marks(self, environment_id: int) -> dict[str, StaleMark]:
        """The flags of an environment marked stale, by key."""
        rows = self._conn.execute(
            select(t.stale_flags).where(t.stale_flags.c.environment_id == environment_id)
        )
        return {r.flag: StaleMark(r.flag, json.loads(r.reasons), _utc(r.found_at)) for r in rows}

    def mark(
        self, environment_id: int, flag: str, reasons: list[dict[str, Any]], at: datetime
    ) -> bool:
        """Mark a flag stale; False if it was marked already (by this node or another)."""
        return insert_or_ignore(
            self._conn,
            t.stale_flags,
            {
                "environment_id": environment_id,
                "flag": flag,
                "reasons": json.dumps(reasons, separators=(",", ":")),
                "found_at": at,
            },
        )

    def clear(self, environment_id: int, flag: str) -> bool:
        """The flag is no longer stale; True if a mark was removed."""
        result = self._conn.execute(
            delete(t.stale_flags).where(
                t.stale_flags.c.environment_id == environment_id, t.stale_flags.c.flag == flag
            )
        )
        return bool(result.rowcount)

    # -- the history the criteria read --------------------------------------------------

    def written_at(self, environment_id: int, versions: Collection[int]) -> dict[int, datetime]:
        """When the environment reached each of ``versions`` (a flag's version is one)."""
        a = t.audit.c
        found: dict[int, datetime] = {}
        wanted = sorted(set(versions))
        for start in range(0, len(wanted), 500):
            rows = self._conn.execute(
                select(a.environment_version, a.at).where(
                    a.environment_id == environment_id,
                    a.environment_version.in_(wanted[start : start + 500]),
                )
            )
            found.update({int(r.environment_version): _utc(r.at) for r in rows})
        return found

    def created_at(self, environment_id: int) -> dict[str, datetime]:
        """When each flag was first created in the environment by a write of its own."""
        a = t.audit.c
        rows = self._conn.execute(
            select(a.target, func.min(a.at).label("first"))
            .where(a.environment_id == environment_id, a.action == "flag.create")
            .group_by(a.target)
        )
        return {r.target: _utc(r.first) for r in rows}

    def flag_writes(
        self, environment_id: int, flags: Collection[str], limit: int = 50
    ) -> dict[str, list[FlagWrite]]:
        """Each flag's own writes (create, update), newest first, at most ``limit`` a flag.

        One query per 500 flags (a window function numbers each flag's writes),
        not one per flag.
        """
        a = t.audit.c
        found: dict[str, list[FlagWrite]] = {}
        names = sorted(set(flags))
        for start in range(0, len(names), 500):
            numbered = (
                select(
                    a.target,
                    a.action,
                    a.at,
                    a.environment_version,
                    a.before,
                    a.after,
                    a.id,
                    func.row_number().over(partition_by=a.target, order_by=a.id.desc()).label("n"),
                )
                .where(
                    a.environment_id == environment_id,
                    a.target.in_(names[start : start + 500]),
                    a.action.in_(("flag.create", "flag.update")),
                )
                .subquery()
            )
            rows = self._conn.execute(
                select(numbered).where(numbered.c.n <= limit).order_by(numbered.c.id.desc())
            )
            for r in rows:
                found.setdefault(r.target, []).append(
                    FlagWrite(
                        r.action,
                        _utc(r.at),
                        r.environment_version,
                        json.loads(r.before) if r.before else None,
                        json.loads(r.after) if r.after else None,
                    )
                )
        return found

    def metadata(self, project_id: int) -> dict[str, tuple[str, int | None, datetime]]:
        """Every flag's type, expected lifetime in days and metadata creation, by key."""
        m = t.flag_meta.c
        rows = self._conn.execute(
            select(m.key, m.type, m.lifetime_days, m.created_at).where(m.project_id == project_id)
        )
        return {r.key: (r.type, r.lifetime_days, _utc(r.created_at)) for r in rows}
