"""Services and their deploys as rows: what runs where, since when, and what it carries.

A deploy is written once and then only gains its verification result
(``verify``); the order of the rows of one service in one environment is
the order the deploys were recorded in, which is what "the current
deploy" and "a version deployed before" mean when versions are not semver.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from unveil.store import tables as t
from unveil.store.ids import row_number

__all__ = [
    "DeployRepository",
    "DeployRow",
    "ServiceRow",
    "deploy_number",
    "latest_references",
]

_PREFIX = "d"


def deploy_number(deploy_id: str) -> int | None:
    """The row of a public deploy id (``d12``), or None when the text is not one."""
    return row_number(deploy_id, _PREFIX)


@dataclass(frozen=True, slots=True)
class ServiceRow:
    """A service of a project: a name and who owns it."""

    id: int
    project_id: int
    name: str
    owner: str | None
    created_by: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DeployRow:
    """One deploy of a service to an environment, as stored."""

    id: str
    environment_id: int
    service: str
    version: str
    commit: str | None
    link: str | None
    actor: str
    reason: str | None
    at: datetime
    references: dict[str, list[str]]  # empty when not scanned
    scanned: bool  # whether the references were given (a scan found these, maybe none)
    rollback: bool
    previous: str | None
    verification: dict[str, Any] | None
    verified: str | None
    created_at: datetime


def _service(row: Any) -> ServiceRow:
    return ServiceRow(row.id, row.project_id, row.name, row.owner, row.created_by, row.created_at)


def _deploy(row: Any) -> DeployRow:
    refs = json.loads(row.refs)
    return DeployRow(
        f"{_PREFIX}{row.id}",
        row.environment_id,
        row.service_name,
        row.version,
        row.commit,
        row.link,
        row.actor,
        row.reason,
        row.at,
        refs or {},
        refs is not None,
        bool(row.rollback),
        None if row.previous_id is None else f"{_PREFIX}{row.previous_id}",
        None if row.verification is None else json.loads(row.verification),
        row.verified,
        row.created_at,
    )


def _deploy_query() -> Any:
    return select(t.deploys, t.services.c.name.label("service_name")).join(
        t.services, t.services.c.id == t.deploys.c.service_id
    )


def _dumps(value: Any) -> str:
    # escaped to ASCII: evidence holds what a checked URL answered, whatever it was
    return json.dumps(value, separators=(",", ":"))


class DeployRepository:
    """Services and deploys on one connection."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    # -- services -----------------------------------------------------------------------

    def add_service(
        self, project_id: int, name: str, owner: str | None, actor: str, now: datetime
    ) -> ServiceRow:
        self._conn.execute(
            insert(t.services).values(
                project_id=project_id, name=name, owner=owner, created_by=actor, created_at=now
            )
        )
        found = self.service(project_id, name)
        assert found is not None  # just written in this transaction
        return found

    def set_owner(self, service_id: int, owner: str | None) -> None:
        self._conn.execute(
            update(t.services).where(t.services.c.id == service_id).values(owner=owner)
        )

    def service(self, project_id: int, name: str) -> ServiceRow | None:
        row = self._conn.execute(
            select(t.services).where(
                t.services.c.project_id == project_id, t.services.c.name == name
            )
        ).one_or_none()
        return None if row is None else _service(row)

    def services(self, project_id: int) -> list[ServiceRow]:
        rows = self._conn.execute(
            select(t.services)
            .where(t.services.c.project_id == project_id)
            .order_by(t.services.c.name)
        )
        return [_service(r) for r in rows]

    # -- deploys ------------------------------------------------------------------------

    def add(
        self,
        *,
        environment_id: int,
        service_id: int,
        version: str,
        commit: str | None,
        link: str | None,
        actor: str,
        reason: str | None,
        at: datetime,
        references: dict[str, list[str]] | None,
        rollback: bool,
        previous: str | None,
        now: datetime,
    ) -> DeployRow:
        number = self._conn.execute(
            insert(t.deploys)
            .values(
                environment_id=environment_id,
                service_id=service_id,
                version=version,
                commit=commit,
                link=link,
                actor=actor,
                reason=reason,
                at=at,
                refs=_dumps(references),
                rollback=rollback,
                previous_id=None if previous is None else deploy_number(previous),
                verification=None,
                verified=None,
                created_at=now,
            )
            .returning(t.deploys.c.id)
        ).scalar_one()
        found = self.get(f"{_PREFIX}{number}")
        assert found is not None  # just written in this transaction
        return found

    def get(self, deploy_id: str) -> DeployRow | None:
        number = deploy_number(deploy_id)
        if number is None:
            return None
        row = self._conn.execute(_deploy_query().where(t.deploys.c.id == number)).one_or_none()
        return None if row is None else _deploy(row)

    def latest(self, environment_id: int, service_id: int) -> DeployRow | None:
        """The service's current deploy in the environment: the last one recorded."""
        row = self._conn.execute(
            _deploy_query()
            .where(
                t.deploys.c.environment_id == environment_id,
                t.deploys.c.service_id == service_id,
            )
            .order_by(t.deploys.c.id.desc())
            .limit(1)
        ).one_or_none()
        return None if row is None else _deploy(row)

    def versions(self, environment_id: int, service_id: int) -> list[str]:
        """Every version of the service deployed here, in the order first recorded."""
        rows = self._conn.execute(
            select(t.deploys.c.version, func.min(t.deploys.c.id).label("first"))
            .where(
                t.deploys.c.environment_id == environment_id,
                t.deploys.c.service_id == service_id,
            )
            .group_by(t.deploys.c.version)
            .order_by("first")
        )
        return [r.version for r in rows]

    def in_environment(
        self, environment_id: int, service_id: int | None = None, limit: int = 100
    ) -> list[DeployRow]:
        """The environment's deploys (of one service), newest first."""
        query = _deploy_query().where(t.deploys.c.environment_id == environment_id)
        if service_id is not None:
            query = query.where(t.deploys.c.service_id == service_id)
        rows = self._conn.execute(query.order_by(t.deploys.c.id.desc()).limit(limit))
        return [_deploy(r) for r in rows]

    def current(self, environment_id: int) -> list[DeployRow]:
        """The latest deploy of every service deployed to the environment, by service name."""
        last = (
            select(func.max(t.deploys.c.id))
            .where(t.deploys.c.environment_id == environment_id)
            .group_by(t.deploys.c.service_id)
        )
        rows = self._conn.execute(
            _deploy_query().where(t.deploys.c.id.in_(last)).order_by(t.services.c.name)
        )
        return [_deploy(r) for r in rows]

    def timeline_entries(
        self,
        environment_id: int,
        actions: tuple[str, ...],
        limit: int,
        hidden_actor: str | None = None,
    ) -> list[dict[str, Any]]:
        """The environment's last ``limit`` audit entries of ``actions``, oldest first
        (without those of an actor starting with ``hidden_actor``)."""
        query = select(t.audit).where(
            t.audit.c.environment_id == environment_id, t.audit.c.action.in_(actions)
        )
        if hidden_actor is not None:
            query = query.where(~t.audit.c.actor.startswith(hidden_actor, autoescape=True))
        rows = self._conn.execute(query.order_by(t.audit.c.id.desc()).limit(limit)).all()
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
            }
            for r in reversed(rows)
        ]

    def verify(self, deploy_id: str, result: str, verification: dict[str, Any]) -> bool:
        """Store a verification result on the deploy (a later run replaces an earlier one)."""
        moved = self._conn.execute(
            update(t.deploys)
            .where(t.deploys.c.id == deploy_number(deploy_id))
            .values(verified=result, verification=_dumps(verification))
        )
        return moved.rowcount == 1


def latest_references(conn: Any, environment_id: int) -> dict[str, dict[str, list[str]]]:
    """Service name -> the references of that service's latest deploy in the environment.

    For the stale-flags view (a flag no latest deploy refers to any more).
    ``conn`` is a Connection, or a ``Reading``/``UnitOfWork`` (its connection is used).
    """
    connection: Connection = getattr(conn, "conn", conn)
    return {d.service: d.references for d in DeployRepository(connection).current(environment_id)}
