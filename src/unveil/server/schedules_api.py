"""Scheduled changes under /api/v1/projects/{project}/environments/{env}/schedules.

Make a schedule (an editor may schedule what an editor may change; a
release start needs a releaser, as starting one now does), list and show
schedules with what came of them, cancel one that has not run. The rules
live in ``unveil.service.schedules``.
"""

# No "from __future__ import annotations": FastAPI must see the annotations evaluated.
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from unveil.server.auth import Editor, Viewer
from unveil.server.changes_api import gated
from unveil.server.services import Services, services
from unveil.server.texts import Reason
from unveil.service.schedules import ScheduleRequest

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/projects/{project}/environments/{env}/schedules")
Svc = Annotated[Services, Depends(services)]


class NewSchedule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: str = Field(
        description="flag.put, flag.delete, segment.put, segment.delete, document.apply, "
        "release.start or promotion.apply",
        max_length=40,
    )
    at: str = Field(description="When: RFC 3339 with offset, or a wall-clock time with time_zone")
    until: str | None = Field(None, description="When to undo it (put and apply only)")
    time_zone: str | None = Field(None, description="An IANA zone, e.g. Europe/Amsterdam")
    key: str | None = Field(None, description="The flag or segment", max_length=200)
    data: dict[str, Any] | None = Field(None, description="The flag or segment to write")
    document: dict[str, Any] | None = Field(None, description="The flags file to apply")
    plan: dict[str, Any] | None = Field(None, description="The release plan to start")
    promotion: dict[str, Any] | None = Field(
        None, description="The promotion to make (promotion.apply: source, flags, segments...)"
    )
    reason: Reason | None = Field(None, description="Why, for the audit log")


class Cancel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason | None = None


@router.post("", tags=["schedules"], status_code=201)
async def create_schedule(
    project: str, env: str, who: Editor, svc: Svc, body: NewSchedule
) -> JSONResponse:
    """Schedule a change; refused (422, every problem) if it could not be applied now."""
    if body.action == "release.start":
        who.require("releaser")
    asked = body.model_dump()
    target = body.key or ""
    opened, _ = await gated(
        svc, project, env, who, "schedule.create", target, {"schedule": asked}, body.reason
    )
    if opened is not None:
        return opened
    request = ScheduleRequest(**asked)
    made = await run_in_threadpool(svc.schedules.create, project, env, request, who.name)
    return JSONResponse(made.as_data(), status_code=201)


@router.get("", tags=["schedules"])
async def list_schedules(
    project: str, env: str, _who: Viewer, svc: Svc, state: str | None = None
) -> dict[str, Any]:
    """The environment's schedules, soonest first; ``state``: pending, applied, failed..."""
    found = await run_in_threadpool(svc.schedules.list, project, env, state)
    return {"schedules": [s.as_data() for s in found]}


@router.get("/{schedule_id}", tags=["schedules"])
async def show_schedule(
    project: str, env: str, schedule_id: str, _who: Viewer, svc: Svc
) -> dict[str, Any]:
    """One schedule, with what came of it."""
    return (await run_in_threadpool(svc.schedules.get, project, env, schedule_id)).as_data()


@router.post("/{schedule_id}/cancel", tags=["schedules"])
async def cancel_schedule(
    project: str,
    env: str,
    schedule_id: str,
    who: Editor,
    svc: Svc,
    body: Annotated[Cancel | None, Body()] = None,
) -> dict[str, Any]:
    """Cancel a schedule that has not run (409 once it has)."""
    reason = body.reason if body else None
    found = await run_in_threadpool(
        svc.schedules.cancel, project, env, schedule_id, who.name, reason
    )
    return found.as_data()
