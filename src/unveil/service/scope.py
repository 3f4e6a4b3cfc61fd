"""Finding the project or environment a request names, or saying there is none."""

from __future__ import annotations

from unveil.service.errors import NotFound
from unveil.store.unit import Reading

__all__ = ["require_environment", "require_project"]


def require_environment(reading: Reading, project: str, env: str, lock: bool = False) -> int:
    """The environment's id (its row held for the transaction with ``lock``)."""
    found = reading.environments.id_of(project, env, lock=lock)
    if found is None:
        raise NotFound(f"no environment '{env}' in project '{project}'")
    return found


def require_project(reading: Reading, project: str) -> int:
    found = reading.projects.id_of(project)
    if found is None:
        raise NotFound(f"no project '{project}'")
    return found
