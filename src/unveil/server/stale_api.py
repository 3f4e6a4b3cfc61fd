"""Stale flags over HTTP: a project's setting N, and an environment's clean-up candidates.

``GET /api/v1/projects/{project}/settings`` and ``PUT`` (admin) hold N;
``GET .../environments/{env}/stale-flags`` lists the candidates with their
reasons and where deployed code still refers to them. The rules live in
``unveil.service.stale``.
"""

# No "from __future__ import annotations": FastAPI must see the annotations evaluated.
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from starlette.concurrency import run_in_threadpool

from unveil.server.auth import Admin, Viewer
from unveil.server.services import Services, services

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/projects/{project}")
Svc = Annotated[Services, Depends(services)]


@router.get("/settings", tags=["projects"])
async def get_project_settings(project: str, _who: Viewer, svc: Svc) -> dict[str, Any]:
    """The project's settings: ``stale_after_days`` (N of the stale-flag criteria)."""
    return await run_in_threadpool(svc.stale.settings, project)


@router.put("/settings", tags=["projects"])
async def put_project_settings(
    project: str,
    who: Admin,
    svc: Svc,
    body: Annotated[dict[str, Any], Body(description="stale_after_days: 1 to 3650")],
) -> dict[str, Any]:
    """Set the project's settings (admin); audited as ``project.settings``."""
    return await run_in_threadpool(svc.stale.set_settings, project, body, who.name)


@router.get("/environments/{env}/stale-flags", tags=["flags"])
async def stale_flags(project: str, env: str, _who: Viewer, svc: Svc) -> dict[str, Any]:
    """The environment's clean-up candidates now, each with its reasons and references."""
    return await run_in_threadpool(svc.stale.report, project, env)
