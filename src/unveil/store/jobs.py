"""Background work as rows: jobs, claimed and finished by compare-and-set.

A job moves ``pending -> running -> done`` (or back to ``pending`` to run
again later, or to ``failed`` or ``cancelled``). Every move checks the
version it read and bumps it, and finishing also checks that the epoch of
the leadership that claimed the job is still the current one. So when two
nodes both believe they lead (one of them has lost the lock and not yet
noticed), the job's effect, written in the same transaction as its finish,
commits for at most one of them: the other's finish matches no row and its
whole transaction is rolled back.

A job's ``key`` keeps one job per key while it is unfinished (one clean-up
of each kind, one step of one release); finishing frees the key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, exists, insert, or_, select, update

from unveil.store import tables as t
from unveil.store.dialect import insert_or_ignore, is_postgresql

__all__ = ["Job", "JobRepository", "LeadershipRepository"]

PENDING, RUNNING, DONE, FAILED, CANCELLED = "pending", "running", "done", "failed", "cancelled"


@dataclass(frozen=True, slots=True)
class Job:
    """A job as claimed (or read): what to do, and the version to compare against."""

    id: int
    kind: str
    key: str | None
    payload: dict[str, Any]
    state: str
    run_at: datetime
    attempts: int
    version: int
    epoch: int | None
    owner: str | None
    last_error: str | None


def _job(row: Any) -> Job:
    return Job(
        row.id,
        row.kind,
        row.key,
        json.loads(row.payload),
        row.state,
        row.run_at,
        row.attempts,
        int(row.version),
        None if row.epoch is None else int(row.epoch),
        row.owner,
        row.last_error,
    )


class JobRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def add(
        self,
        kind: str,
        payload: dict[str, Any],
        run_at: datetime,
        now: datetime,
        key: str | None = None,
    ) -> int | None:
        """A new pending job; None if an unfinished job holds ``key`` already."""
        values = {
            "kind": kind,
            "key": key,
            "payload": json.dumps(payload, separators=(",", ":")),
            "state": PENDING,
            "run_at": run_at,
            "attempts": 0,
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
        if key is None:
            return int(
                self._conn.execute(
                    insert(t.jobs).values(**values).returning(t.jobs.c.id)
                ).scalar_one()
            )
        if not insert_or_ignore(self._conn, t.jobs, values):
            return None
        return int(self._conn.execute(select(t.jobs.c.id).where(t.jobs.c.key == key)).scalar_one())

    def get(self, job_id: int) -> Job | None:
        row = self._conn.execute(select(t.jobs).where(t.jobs.c.id == job_id)).one_or_none()
        return None if row is None else _job(row)

    def by_kind(self, kind: str) -> list[Job]:
        rows = self._conn.execute(select(t.jobs).where(t.jobs.c.kind == kind).order_by(t.jobs.c.id))
        return [_job(r) for r in rows]

    def claim(self, now: datetime, node: str, epoch: int, limit: int = 20) -> list[Job]:
        """Take due jobs, and jobs left running by an earlier leadership, for this one."""
        query = (
            select(t.jobs)
            .where(
                or_(
                    and_(t.jobs.c.state == PENDING, t.jobs.c.run_at <= now),
                    and_(
                        t.jobs.c.state == RUNNING,
                        or_(t.jobs.c.epoch.is_(None), t.jobs.c.epoch < epoch),
                    ),
                )
            )
            .order_by(t.jobs.c.run_at, t.jobs.c.id)
            .limit(limit)
        )
        if is_postgresql(self._conn):
            # wait for a row another transaction holds, never skip it: that row may be
            # an earlier job the last leader is finishing, and skipping it would apply
            # the later ones first (an older scheduled change landing last)
            query = query.with_for_update()
        claimed = []
        for row in self._conn.execute(query).all():
            moved = self._conn.execute(
                update(t.jobs)
                .where(t.jobs.c.id == row.id, t.jobs.c.version == row.version)
                .values(
                    state=RUNNING,
                    owner=node,
                    epoch=epoch,
                    attempts=t.jobs.c.attempts + 1,
                    version=t.jobs.c.version + 1,
                    updated_at=now,
                )
            )
            if moved.rowcount == 1:
                claimed.append(
                    Job(
                        row.id,
                        row.kind,
                        row.key,
                        json.loads(row.payload),
                        RUNNING,
                        row.run_at,
                        row.attempts + 1,
                        int(row.version) + 1,
                        epoch,
                        node,
                        row.last_error,
                    )
                )
        return claimed

    def _settle(self, job: Job, now: datetime, **values: Any) -> bool:
        """Move a running job on, if it is still as claimed and its leadership current."""
        current_epoch = exists().where(t.leadership.c.id == 1, t.leadership.c.epoch == job.epoch)
        moved = self._conn.execute(
            update(t.jobs)
            .where(
                t.jobs.c.id == job.id,
                t.jobs.c.version == job.version,
                t.jobs.c.state == RUNNING,
                current_epoch,
            )
            .values(version=t.jobs.c.version + 1, updated_at=now, **values)
        )
        return moved.rowcount == 1

    def finish(self, job: Job, now: datetime, again_at: datetime | None = None) -> bool:
        """Done (or pending again at ``again_at``); False if fenced off."""
        if again_at is not None:
            return self._settle(job, now, state=PENDING, run_at=again_at, last_error=None)
        return self._settle(job, now, state=DONE, key=None)

    def fail(self, job: Job, now: datetime, error: str, retry_at: datetime | None) -> bool:
        """Failed for good, or pending again at ``retry_at``; False if fenced off."""
        if retry_at is not None:
            return self._settle(job, now, state=PENDING, run_at=retry_at, last_error=error)
        return self._settle(job, now, state=FAILED, key=None, last_error=error)

    def cancel(self, job_id: int, now: datetime) -> bool:
        """Cancel a job that has not finished; False if it had."""
        moved = self._conn.execute(
            update(t.jobs)
            .where(t.jobs.c.id == job_id, t.jobs.c.state.in_((PENDING, RUNNING)))
            .values(state=CANCELLED, key=None, version=t.jobs.c.version + 1, updated_at=now)
        )
        return moved.rowcount == 1


class LeadershipRepository:
    """The one row that counts leaderships: its epoch fences jobs."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def take(self, node: str, now: datetime) -> int:
        """A new epoch for ``node``, which has just taken the lead."""
        insert_or_ignore(
            self._conn, t.leadership, {"id": 1, "epoch": 0, "node": node, "since": now}
        )
        return int(
            self._conn.execute(
                update(t.leadership)
                .where(t.leadership.c.id == 1)
                .values(epoch=t.leadership.c.epoch + 1, node=node, since=now)
                .returning(t.leadership.c.epoch)
            ).scalar_one()
        )

    def current(self) -> tuple[int, str] | None:
        row = self._conn.execute(
            select(t.leadership.c.epoch, t.leadership.c.node).where(t.leadership.c.id == 1)
        ).one_or_none()
        return None if row is None else (int(row.epoch), row.node)
