"""Promotions under /api/v1/projects/{project}/promotions: compare two environments, copy.

``dry_run`` answers what would be copied (200) without writing; otherwise
the copy is made in the target environment (200), or, where the target
requires approval, a change request is opened (202). The rules live in
``unveil.service.promotions``.
"""

# No "from __future__ import annotations": FastAPI must see the annotations evaluated.
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from starlette.concurrency import run_in_threadpool

from unveil.server.auth import Editor
from unveil.server.changes_api import gated
from unveil.server.services import Services, services
from unveil.server.texts import Reason
from unveil.service.flags import Change
from unveil.service.promotions import PROMOTION, PromotionRequest

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/projects/{project}/promotions")
Svc = Annotated[Services, Depends(services)]


class NewPromotion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="The environment to copy from", max_length=200)
    target: str = Field(description="The environment to copy to", max_length=200)
    flags: list[Annotated[str, Field(max_length=200)]] = Field(
        default_factory=list, description="The flags to copy (none and no segments: all)"
    )
    segments: list[Annotated[str, Field(max_length=200)]] = Field(
        default_factory=list, description="The segments to copy"
    )
    keep_targets: StrictBool | list[Annotated[str, Field(max_length=200)]] = Field(
        False, description="Keep the target's individual targets (all flags, or these)"
    )
    dry_run: StrictBool = Field(False, description="Compare only; write nothing")
    reason: Reason | None = Field(None, description="Why, for the audit log")


@router.post("", tags=["promotions"])
async def promote(project: str, who: Editor, svc: Svc, body: NewPromotion) -> JSONResponse:
    """Copy flags and segments from one environment to another, as one change."""
    request = PromotionRequest.from_data(
        {
            "source": body.source,
            "flags": body.flags,
            "segments": body.segments,
            "keep_targets": body.keep_targets,
        }
    )
    preview = await run_in_threadpool(svc.promotions.compare, project, body.target, request)
    if body.dry_run:
        return JSONResponse(preview.as_data())
    pinned = request.pinned(preview.source_version)  # an approval copies what was compared
    opened, reason = await gated(
        svc, project, body.target, who, PROMOTION, "", {"promotion": pinned.as_data()}, body.reason
    )
    if opened is not None:
        return opened
    done = await run_in_threadpool(
        svc.promotions.apply, project, body.target, pinned, Change(who.name, reason)
    )
    return JSONResponse(done.as_data())
