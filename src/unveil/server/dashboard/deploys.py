"""The dashboard's deploys and timeline: the two moments, deploy and release, on one line.

What the page shows is the deploys service's (``timeline`` and ``status``)
and the stale-flag report's: deploys and releases as two kinds of marks,
verification results, what is deployed dark, what is released without
code, and the clean-up candidates with where the code still refers to them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from unveil.server.dashboard.pages import _frame, _page, _services, _viewer

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


@router.get("/p/{project}/{env}/timeline")
async def timeline_page(request: Request, project: str, env: str) -> Response:
    who = await _viewer(request)
    if isinstance(who, Response):
        return who
    svc = _services(request)
    marks: list[dict[str, Any]] = await run_in_threadpool(svc.deploys.timeline, project, env, 200)
    status = await run_in_threadpool(svc.deploys.status, project, env)
    stale = await run_in_threadpool(svc.stale.report, project, env)
    return _page(
        request,
        "timeline.html",
        who=who,
        project=project,
        env=env,
        **await _frame(request, project),
        section="timeline",
        marks=list(reversed(marks)),
        deployed=status,
        stale=stale,
    )
