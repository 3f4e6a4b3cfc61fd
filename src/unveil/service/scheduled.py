"""A change to a flag or segment made later, by a job: the first kind of scheduled work.

The job's payload says what to write (``data``, or ``null`` to delete),
where, by whom and why. The change goes through ``FlagService`` inside the
job's own unit of work, so it is validated, versioned, audited and
announced like any other, and fenced with the job: it is written exactly
once even if two nodes believe they lead.
"""

from __future__ import annotations

from typing import Any

from unveil.service.flags import Change, FlagService
from unveil.service.jobs import Handler
from unveil.store.jobs import Job
from unveil.store.unit import UnitOfWork

__all__ = ["FLAG_CHANGE", "flag_change", "flag_change_payload"]

FLAG_CHANGE = "flag.change"


def flag_change_payload(
    project: str,
    env: str,
    key: str,
    data: dict[str, Any] | None,
    actor: str,
    reason: str | None = None,
    part: str = "flags",
) -> dict[str, Any]:
    return {
        "project": project,
        "env": env,
        "part": part,
        "key": key,
        "data": data,
        "actor": actor,
        "reason": reason,
    }


def flag_change(flags: FlagService) -> Handler:
    """The handler that applies a scheduled flag or segment change."""

    def handle(job: Job, work: UnitOfWork) -> None:
        p = job.payload
        part = p.get("part", "flags")
        change = Change(str(p["actor"]), p.get("reason"))
        project, env, key = str(p["project"]), str(p["env"]), str(p["key"])
        environment = work.environments.id_of(project, env, lock=True)
        current = None if environment is None else work.items(part).get(environment, key)
        if p.get("data") is None:
            if current is not None:
                flags.delete_item(part, project, env, key, change, current.version, within=work)
            return
        flags.put_item(
            part,
            project,
            env,
            key,
            p["data"],
            change,
            None if current is None else current.version,
            within=work,
        )

    return handle
