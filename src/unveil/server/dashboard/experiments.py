"""The dashboard's dark launches: every experiment, and one experiment's report.

The report is the API's (``ExperimentReports.report``) drawn for people: the
mismatch rate over time with its interval, both paths' latency, errors by
type and the latest examples, which arrive already redacted by the
application.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool

from unveil.server.dashboard.charts import Line, line_chart
from unveil.server.dashboard.pages import _frame, _page, _services, _viewer
from unveil.service.experiments import ExperimentReports

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


def _when(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _charts(report: dict[str, Any]) -> dict[str, Markup]:
    """The mismatch rate, and both paths' p50 and p99, over the report's range."""
    points = report.get("series", {}).get("points", [])
    rate = [
        (_when(p["start"]), p["mismatch_rate"] * 100)
        for p in points
        if p.get("mismatch_rate") is not None
    ]
    lines = []
    for path in ("control", "candidate"):
        for q in ("p50", "p99"):
            found = [
                (_when(p["start"]), p[path][q])
                for p in points
                if p.get(path) and p[path].get(q) is not None
            ]
            lines.append(Line(f"{path} {q}", found))
    # line_chart escapes every text it is given: its markup is safe to place as it is
    return {
        "rate": Markup(line_chart("Mismatch rate per window", [Line("mismatch rate", rate)], "%")),  # noqa: S704
        "latency": Markup(line_chart("Latency of both paths", lines, " ms")),  # noqa: S704
    }


@router.get("/p/{project}/{env}/experiments")
async def experiments_page(request: Request, project: str, env: str) -> Response:
    who = await _viewer(request)
    if isinstance(who, Response):
        return who
    svc = _services(request)
    environment_id = await run_in_threadpool(svc.access.environment_of, project, env)
    found = await run_in_threadpool(ExperimentReports(svc.intake.store).list, environment_id)
    return _page(
        request,
        "experiments.html",
        who=who,
        project=project,
        env=env,
        **await _frame(request, project),
        section="experiments",
        rows=found["experiments"],
    )


@router.get("/p/{project}/{env}/experiments/{name}")
async def experiment_page(
    request: Request, project: str, env: str, name: str, since: str | None = None
) -> Response:
    who = await _viewer(request)
    if isinstance(who, Response):
        return who
    svc = _services(request)
    environment_id = await run_in_threadpool(svc.access.environment_of, project, env)
    report = await run_in_threadpool(
        ExperimentReports(svc.intake.store).report, environment_id, name, since, None
    )
    return _page(
        request,
        "experiment.html",
        who=who,
        project=project,
        env=env,
        **await _frame(request, project),
        section="experiments",
        name=name,
        report=report,
        charts=_charts(report),
        shown=lambda value: json.dumps(value, ensure_ascii=False),
    )
