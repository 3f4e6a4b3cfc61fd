"""The unit of work: every change is one transaction that writes it whole.

``Store.unit_of_work()`` opens one transaction and hands out the
repositories on it. A use case changes state through them and then calls
``record`` once: that bumps the environment's version (where the change is
in one), appends the audit entry, writes the outbox row that announces it,
and sends the cross-node notice (PostgreSQL NOTIFY, delivered only if the
transaction commits). All of it commits together or not at all: there is no
moment, and no kill -9, at which a change exists without its audit entry or
its announcement. After the commit, this node's own listeners hear of the
environments that changed (so a node serves its own writes at once).

``Store.reading()`` is the same repositories on a read-only transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine

from unveil.store.access import (
    EnvironmentRepository,
    ProjectRepository,
    TokenRepository,
    UserRepository,
)
from unveil.store.audit import AuditRepository
from unveil.store.changes import ChangeRepository, SettingsRepository
from unveil.store.database import glancer, reader
from unveil.store.deploys import DeployRepository
from unveil.store.items import ItemRepository, Part
from unveil.store.jobs import JobRepository, LeadershipRepository
from unveil.store.launches import LaunchRepository, TemplateRepository
from unveil.store.meta import MetaRepository
from unveil.store.nodes import NodeRepository
from unveil.store.outbox import OutboxRepository
from unveil.store.releases import ReleaseRepository
from unveil.store.schedules import ScheduleRepository
from unveil.store.sessions import SessionRepository
from unveil.store.stale import StaleRepository
from unveil.store.webhooks import WebhookRepository

__all__ = ["CHANNEL", "Reading", "Recorded", "Store", "UnitOfWork"]

#: The PostgreSQL channel on which committed changes are announced to every node.
CHANNEL = "unveil_changes"
log = logging.getLogger("unveil.store")


class Reading:
    """The repositories on one connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.projects = ProjectRepository(conn)
        self.environments = EnvironmentRepository(conn)
        self.flags = ItemRepository(conn, "flags")
        self.segments = ItemRepository(conn, "segments")
        self.tokens = TokenRepository(conn)
        self.users = UserRepository(conn)
        self.meta = MetaRepository(conn)
        self.audit = AuditRepository(conn)
        self.outbox = OutboxRepository(conn)
        self.jobs = JobRepository(conn)
        self.leadership = LeadershipRepository(conn)
        self.nodes = NodeRepository(conn)
        self.releases = ReleaseRepository(conn)
        self.schedules = ScheduleRepository(conn)
        self.changes = ChangeRepository(conn)
        self.settings = SettingsRepository(conn)
        self.webhooks = WebhookRepository(conn)
        self.sessions = SessionRepository(conn)
        self.templates = TemplateRepository(conn)
        self.launches = LaunchRepository(conn)
        self.stale = StaleRepository(conn)
        self.deploys = DeployRepository(conn)

    def items(self, part: Part) -> ItemRepository:
        return self.flags if part == "flags" else self.segments


@dataclass(frozen=True, slots=True)
class Recorded:
    """What ``record`` wrote: the audit entry, and the environment's new version."""

    audit_id: int
    environment_version: int | None


class UnitOfWork(Reading):
    """One write transaction, and the one way to record the change made in it."""

    def __init__(self, conn: Connection) -> None:
        super().__init__(conn)
        self.changed_environments: set[int] = set()
        self.records: list[Recorded] = []
        self.committed: list[Callable[[], None]] = []

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once this transaction has committed; never if it rolls back.

        For what a node keeps in memory about the state it just wrote (the
        flags it validates writes against): kept before the commit, it would
        outlive a rollback. Callbacks run before the ``after_commit`` listeners.
        """
        self.committed.append(callback)

    @contextmanager
    def savepoint(self, keep: bool = True) -> Iterator[None]:
        """A part of the transaction that is undone whole if its block raises (or, with
        ``keep=False``, always: to try a change and keep nothing of it).

        Undone means everything the part did: its rows, and what it asked to
        happen on commit (a node's memory of the state it wrote, the notices
        of changed environments), which must not outlive its rows.
        """
        marks = (len(self.committed), set(self.changed_environments), len(self.records))
        nested = self.conn.begin_nested()
        try:
            yield
        except BaseException:
            nested.rollback()
            self._undo_to(marks)
            raise
        if keep:
            nested.commit()
        else:
            nested.rollback()
            self._undo_to(marks)

    def _undo_to(self, marks: tuple[int, set[int], int]) -> None:
        committed, changed, records = marks
        del self.committed[committed:]
        self.changed_environments = changed
        del self.records[records:]

    def record(
        self,
        *,
        actor: str,
        action: str,
        target: str,
        reason: str | None = None,
        before: Any = None,
        after: Any = None,
        environment_id: int | None = None,
        versioned: bool = True,
    ) -> Recorded:
        """Version, audit, outbox and notice of one change, in this transaction.

        ``versioned=False`` is for a change that belongs to an environment but
        leaves what its SDKs are served alone (a release's own decisions): it
        is audited and announced, and the environment's version stays.
        """
        now = datetime.now(UTC)
        version = None
        if environment_id is not None and versioned:
            announce_on = CHANNEL if self.conn.dialect.name == "postgresql" else None
            version = self.environments.bump(environment_id, announce_on)
            self.changed_environments.add(environment_id)
        audit_id = self.audit.append(
            at=now,
            actor=actor,
            action=action,
            target=target,
            environment_id=environment_id,
            environment_version=version,
            reason=reason,
            before=before,
            after=after,
            announcement={  # the outbox row, written with the entry
                "action": action,
                "target": target,
                "actor": actor,
                "reason": reason,
                "environment_version": version,
                "at": now.isoformat(),
            },
        )
        recorded = Recorded(audit_id, version)
        self.records.append(recorded)
        return recorded


class Store:
    """The database, and the listeners told of each committed change to an environment."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        #: called with an environment's id after each change to it commits on this node
        self.after_commit: list[Callable[[int], None]] = []

    @contextmanager
    def unit_of_work(self, within: UnitOfWork | None = None) -> Iterator[UnitOfWork]:
        """A new transaction, or ``within`` when the caller already has one open.

        A use case that takes ``within`` becomes part of its caller's change
        (a job's effect and its finish, a release step and its flag change).
        """
        if within is not None:
            yield within
            return
        with self.engine.begin() as conn:
            work = UnitOfWork(conn)
            yield work
        for callback in work.committed:
            try:
                callback()
            except Exception:  # like a listener, it must not undo a committed change
                log.exception("on-commit callback failed")
        for environment_id in sorted(work.changed_environments):
            for listener in self.after_commit:
                try:
                    listener(environment_id)
                except Exception:  # a listener must not undo a committed change
                    log.exception("after-commit listener failed for %s", environment_id)

    @contextmanager
    def reading(self) -> Iterator[Reading]:
        with reader(self.engine).connect() as conn:
            yield Reading(conn)

    @contextmanager
    def glance(self) -> Iterator[Reading]:
        """A reading of one statement, which needs no transaction of its own.

        On PostgreSQL it runs outside one (autocommit): one round trip, not
        three (BEGIN, the statement, ROLLBACK), for what every write through
        the API asks first. A single statement sees one snapshot either way.
        Use ``reading`` for anything of more than one statement.
        """
        with glancer(self.engine).connect() as conn:
            yield Reading(conn)
