"""GET .../metrics: a flag's metric per variant per window, as the judge sees it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from unveil.server.auth import Viewer
from unveil.server.services import Services, services
from unveil.service.metrics import GuardReader

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")
Svc = Annotated[Services, Depends(services)]


@router.get("/projects/{project}/environments/{env}/metrics", tags=["events"])
async def metrics(
    project: str,
    env: str,
    _who: Viewer,
    svc: Svc,
    flag: str | None = None,
    metric: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> dict[str, Any]:
    """Per variant and window: exposures, the metric's count, sum, quantiles and histogram.

    ``since`` and ``until`` are RFC 3339 times or epoch seconds (default: the
    last hour), at most a day apart; windows are 10 seconds wide, or an hour
    for data older than a week.
    """
    env_id = await run_in_threadpool(svc.access.environment_of, project, env)
    reader = GuardReader(svc.intake.store)
    return await run_in_threadpool(reader.series, env_id, flag, metric, since, until)
