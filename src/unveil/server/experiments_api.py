"""GET .../experiments: dark-launch experiments, listed and reported (issue 14)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from unveil.server.auth import Viewer
from unveil.server.services import Services, services
from unveil.service.experiments import ExperimentReports

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")
Svc = Annotated[Services, Depends(services)]


@router.get("/projects/{project}/environments/{env}/experiments", tags=["experiments"])
async def experiments(project: str, env: str, _who: Viewer, svc: Svc) -> dict[str, Any]:
    """Every experiment with data still kept: runs by outcome, mismatch rate, last seen."""
    env_id = await run_in_threadpool(svc.access.environment_of, project, env)
    return await run_in_threadpool(ExperimentReports(svc.intake.store).list, env_id)


@router.get("/projects/{project}/environments/{env}/experiments/{name}", tags=["experiments"])
async def experiment(
    project: str,
    env: str,
    name: str,
    _who: Viewer,
    svc: Svc,
    since: str | None = None,
    until: str | None = None,
) -> dict[str, Any]:
    """One experiment's report over [since, until) (default: the last hour, at most 7 days).

    Runs by outcome, the mismatch rate with its 95% Wilson interval, both
    paths' p50/p95/p99 with intervals and the candidate's difference, the
    candidate's errors by type, the latest mismatch examples and a series
    per window for charts. See docs/api.md.
    """
    env_id = await run_in_threadpool(svc.access.environment_of, project, env)
    reports = ExperimentReports(svc.intake.store)
    return await run_in_threadpool(reports.report, env_id, name, since, until)
