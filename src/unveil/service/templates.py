"""Release templates per project: save, read, replace and remove named plans without a flag.

A template is checked as a plan is (``unveil.release.templates``) when it
is saved, so a bad one is refused with every problem and never stored.
Saving and removing are changes of the project, audited outside any
environment (``template.saved``, ``template.removed``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from unveil.release.templates import check_template, plan_from_template
from unveil.service.errors import Conflict, NotFound, PreconditionFailed
from unveil.service.scope import require_project
from unveil.service.text import check_key
from unveil.store.launches import TemplateRow
from unveil.store.unit import Reading, Store, UnitOfWork

__all__ = ["Template", "TemplateService"]

_Clock = Callable[[], datetime]


def _iso(value: datetime) -> str:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


@dataclass(frozen=True, slots=True)
class Template:
    """A template as the API shows it."""

    row: TemplateRow
    project: str

    def as_data(self) -> dict[str, Any]:
        r = self.row
        return {
            "name": r.name,
            "project": self.project,
            "description": r.description,
            "plan": r.plan,
            "version": r.version,
            "created_by": r.created_by,
            "created_at": _iso(r.created_at),
            "updated_at": _iso(r.updated_at),
        }


class TemplateService:
    """A project's release templates."""

    def __init__(self, store: Store, clock: _Clock = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self._clock = clock

    def list(self, project: str) -> list[Template]:
        with self.store.reading() as r:
            return [Template(row, project) for row in r.templates.all(require_project(r, project))]

    def get(self, project: str, name: str) -> Template:
        with self.store.reading() as r:
            return Template(self._row(r, project, name), project)

    def plan_for(
        self,
        reading: Reading,
        project: str,
        name: str,
        flag: str,
        environment: str,
        control: str | None = None,
        treatment: str | None = None,
    ) -> dict[str, Any]:
        """The plan template ``name`` makes for a flag (checked when the release starts)."""
        row = self._row(reading, project, name)
        return plan_from_template(row.plan, flag, environment, control, treatment)

    def save(
        self,
        project: str,
        name: str,
        plan: Mapping[str, Any],
        description: str | None,
        actor: str,
        if_match: int | None = None,
        within: UnitOfWork | None = None,
    ) -> Template:
        """Create or replace a template; refused whole (every problem) if it is not a plan."""
        check_key(name, "name")
        written = check_template(plan)
        with self.store.unit_of_work(within) as work:
            project_id = require_project(work, project)
            before = work.templates.get(project_id, name)
            if if_match is not None and (before is None or before.version != if_match):
                raise PreconditionFailed(before.version if before else 0)
            now = self._clock()
            if not work.templates.put(project_id, name, description, written, actor, now, before):
                raise Conflict(f"template '{name}' changed meanwhile; read it again")
            work.record(
                actor=actor,
                action="template.saved",
                target=f"{project}/templates/{name}",
                before=None if before is None else before.plan,
                after=written,
            )
            row = work.templates.get(project_id, name)
            assert row is not None  # just written
            return Template(row, project)

    def remove(self, project: str, name: str, actor: str) -> None:
        with self.store.unit_of_work() as work:
            row = self._row(work, project, name)
            work.templates.remove(row.project_id, name)
            work.record(
                actor=actor,
                action="template.removed",
                target=f"{project}/templates/{name}",
                before=row.plan,
            )

    @staticmethod
    def _row(reading: Reading, project: str, name: str) -> TemplateRow:
        found = reading.templates.get(require_project(reading, project), name)
        if found is None:
            raise NotFound(f"no release template '{name}' in project '{project}'")
        return found
