"""Release templates and launches under /api/v1/projects/{project}.

``/templates/{name}``: a project's named plans without a flag (viewer
reads; releaser saves and removes). ``/launches``: the calendar (upcoming,
in progress, recent), making a launch, starting it now and stopping it
(its kill switch). The rules live in ``unveil.service.templates`` and
``unveil.service.launches``.
"""

# No "from __future__ import annotations": FastAPI must see the annotations evaluated.
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from unveil.server.auth import Editor, Releaser, Viewer
from unveil.server.services import Services, services
from unveil.server.texts import Reason
from unveil.service.access import Principal

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/projects/{project}")
Svc = Annotated[Services, Depends(services)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SavedTemplate(_Strict):
    plan: dict[str, Any] = Field(description="Plan fields without flag and environment")
    description: Reason | None = Field(None, description="What it is for")


class NewLaunch(_Strict):
    name: str = Field(description="What people call it", max_length=200)
    notes: str = Field(description="Release notes, for people", max_length=20_000)
    owner: str | None = Field(None, description="Who answers for it (default: you)")
    planned_at: datetime | None = Field(None, description="When it starts, RFC 3339 with offset")
    changes: list[Any] = Field(description="The flag changes: environment, flag, and what")


class Stop(_Strict):
    reason: Reason | None = None


def _releases_in(changes: list[Any]) -> bool:
    return any(isinstance(c, dict) and "release" in c for c in changes)


# -- templates ----------------------------------------------------------------------------


@router.get("/templates", tags=["templates"])
async def list_templates(project: str, _who: Viewer, svc: Svc) -> dict[str, Any]:
    """The project's release templates, by name."""
    found = await run_in_threadpool(svc.templates.list, project)
    return {"templates": [t.as_data() for t in found]}


@router.get("/templates/{name}", tags=["templates"])
async def show_template(project: str, name: str, _who: Viewer, svc: Svc) -> dict[str, Any]:
    """One template."""
    return (await run_in_threadpool(svc.templates.get, project, name)).as_data()


@router.put("/templates/{name}", tags=["templates"])
async def save_template(
    project: str, name: str, who: Releaser, svc: Svc, body: SavedTemplate
) -> dict[str, Any]:
    """Create or replace a template; refused whole, every problem named, if it is no plan."""
    saved = await run_in_threadpool(
        svc.templates.save, project, name, body.plan, body.description, who.name
    )
    return saved.as_data()


@router.delete("/templates/{name}", tags=["templates"], status_code=204)
async def remove_template(project: str, name: str, who: Releaser, svc: Svc) -> Response:
    """Remove a template (releases already started from it keep their plan)."""
    await run_in_threadpool(svc.templates.remove, project, name, who.name)
    return Response(status_code=204)


# -- launches -----------------------------------------------------------------------------


@router.get("/launches", tags=["launches"])
async def launch_calendar(project: str, _who: Viewer, svc: Svc) -> dict[str, Any]:
    """Upcoming (soonest first), in progress, and recent launches (latest first)."""
    return await run_in_threadpool(svc.launches.calendar, project)


@router.post("/launches", tags=["launches"], status_code=201)
async def make_launch(project: str, who: Editor, svc: Svc, body: NewLaunch) -> JSONResponse:
    """Plan a launch; refused with every problem (by field) if it could not start now."""
    _may_release(who, body.changes)
    made = await run_in_threadpool(
        svc.launches.create,
        project,
        body.name,
        body.notes,
        body.owner,
        body.planned_at,
        body.changes,
        who.name,
    )
    return JSONResponse(made.as_data(), status_code=201)


@router.get("/launches/{launch_id}", tags=["launches"])
async def show_launch(project: str, launch_id: str, _who: Viewer, svc: Svc) -> dict[str, Any]:
    """One launch: its changes, what starting them did, its state."""
    return (await run_in_threadpool(svc.launches.get, project, launch_id)).as_data()


@router.post("/launches/{launch_id}/start", tags=["launches"])
async def start_launch(project: str, launch_id: str, who: Editor, svc: Svc) -> dict[str, Any]:
    """Start it now (or, where approval is required, ask for it: waiting_for_approval)."""
    found = await run_in_threadpool(svc.launches.get, project, launch_id)
    _may_release(who, found.row.changes)
    started = await run_in_threadpool(svc.launches.start, project, launch_id, who.name)
    return started.as_data()


@router.post("/launches/{launch_id}/stop", tags=["launches"])
async def stop_launch(
    project: str,
    launch_id: str,
    who: Editor,
    svc: Svc,
    body: Annotated[Stop | None, Body()] = None,
) -> dict[str, Any]:
    """The kill switch: every flag of the launch turned back; never waits for approval."""
    reason = body.reason if body else None
    stopped = await run_in_threadpool(svc.launches.stop, project, launch_id, who.name, reason)
    return stopped.as_data()


def _may_release(who: Principal, changes: list[Any]) -> None:
    """A launch that runs guarded releases needs the releaser role, as starting one does."""
    if _releases_in(changes):
        who.require("releaser")
