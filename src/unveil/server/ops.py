"""Operations: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from unveil.server.services import Services, services

__all__ = ["router"]

router = APIRouter(tags=["operations"])
Svc = Annotated[Services, Depends(services)]


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(svc: Svc) -> JSONResponse:
    """The database answers (503 if not)."""

    def ping() -> None:
        with svc.store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    try:
        await run_in_threadpool(ping)
    except Exception as exc:  # any database failure means "not ready"
        return JSONResponse({"status": "unavailable", "error": str(exc)}, 503)
    return JSONResponse({"status": "ready"})


@router.get("/metrics")
async def metrics(svc: Svc) -> Response:
    """Prometheus metrics of this process."""
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)
