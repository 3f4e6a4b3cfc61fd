"""Approvals: the environment setting, change requests, and the gate every change passes.

``gated`` is what the routes that change things call first: where the
environment requires approval it opens a change request (202, with the
request) instead of the change; a change that only turns a flag off goes
ahead at once, its reason marked as an emergency. The rules live in
``unveil.service.changes``.
"""

# No "from __future__ import annotations": FastAPI must see the annotations evaluated.
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from starlette.concurrency import run_in_threadpool

from unveil.server.auth import Admin, Editor, Releaser, Viewer
from unveil.server.services import Services, services
from unveil.server.texts import Comment as CommentText
from unveil.service.access import Principal
from unveil.service.changes import EMERGENCY, ChangeRequest, Expect

__all__ = ["gated", "router"]

ENV = "/api/v1/projects/{project}/environments/{env}"
router = APIRouter(prefix=ENV)
Svc = Annotated[Services, Depends(services)]
ONE = "/changes/{change_id}"


async def gated(
    svc: Services,
    project: str,
    env: str,
    who: Principal,
    action: str,
    target: str,
    payload: dict[str, Any],
    reason: str | None,
    expect: Expect | None = None,
) -> tuple[JSONResponse | None, str | None]:
    """The 202 answer of an opened change request, or None and the reason to write with."""
    outcome = await run_in_threadpool(
        svc.changes.gate, project, env, action, target, payload, who.name, reason, expect
    )
    if isinstance(outcome, ChangeRequest):
        return JSONResponse({"change_request": outcome.as_data()}, status_code=202), reason
    if outcome == EMERGENCY:
        return None, f"{EMERGENCY}: {reason}" if reason else EMERGENCY
    return None, reason


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Settings(_Strict):
    requires_approval: StrictBool = Field(description="Changes become change requests")


class Comment(_Strict):
    comment: CommentText | None = None


class Note(_Strict):
    text: CommentText = Field(min_length=1)


@router.get("/settings", tags=["approvals"])
async def get_settings(project: str, env: str, _who: Viewer, svc: Svc) -> dict[str, Any]:
    """The environment's settings."""
    value = await run_in_threadpool(svc.changes.requires_approval, project, env)
    return {"requires_approval": value}


@router.put("/settings", tags=["approvals"])
async def put_settings(
    project: str, env: str, who: Admin, svc: Svc, body: Settings
) -> dict[str, Any]:
    """Require approval of changes here (or not)."""
    value = await run_in_threadpool(
        svc.changes.set_requires_approval, project, env, body.requires_approval, who.name
    )
    return {"requires_approval": value}


@router.get("/changes", tags=["approvals"])
async def list_changes(
    project: str, env: str, _who: Viewer, svc: Svc, state: str | None = None
) -> dict[str, Any]:
    """Change requests, newest first; ``state``: open, applied, rejected, withdrawn, refused."""
    found = await run_in_threadpool(svc.changes.list, project, env, state)
    return {"changes": [c.as_data() for c in found]}


@router.get(ONE, tags=["approvals"])
async def show_change(
    project: str, env: str, change_id: str, _who: Viewer, svc: Svc
) -> dict[str, Any]:
    """One change request: what was asked, its diff, and what came of it."""
    return (await run_in_threadpool(svc.changes.get, project, env, change_id)).as_data()


def _answer(found: ChangeRequest) -> JSONResponse:
    refused = found.row.state == "refused"
    body: dict[str, Any] = found.as_data()
    if refused:
        body = {"error": found.row.outcome, "change_request": body}
    return JSONResponse(body, status_code=409 if refused else 200)


@router.post(ONE + "/approve", tags=["approvals"])
async def approve_change(
    project: str,
    env: str,
    change_id: str,
    who: Releaser,
    svc: Svc,
    body: Annotated[Comment | None, Body()] = None,
) -> JSONResponse:
    """Apply it as asked (409 and state refused if what it changes moved on since)."""
    comment = body.comment if body else None
    found = await run_in_threadpool(svc.changes.approve, project, env, change_id, who.name, comment)
    return _answer(found)


@router.post(ONE + "/reject", tags=["approvals"])
async def reject_change(
    project: str,
    env: str,
    change_id: str,
    who: Releaser,
    svc: Svc,
    body: Annotated[Comment | None, Body()] = None,
) -> JSONResponse:
    """Refuse it, with a comment."""
    comment = body.comment if body else None
    return _answer(
        await run_in_threadpool(svc.changes.reject, project, env, change_id, who.name, comment)
    )


@router.post(ONE + "/withdraw", tags=["approvals"])
async def withdraw_change(
    project: str, env: str, change_id: str, who: Editor, svc: Svc
) -> JSONResponse:
    """Take back one's own request."""
    return _answer(await run_in_threadpool(svc.changes.withdraw, project, env, change_id, who.name))


@router.post(ONE + "/comments", tags=["approvals"])
async def comment_change(
    project: str, env: str, change_id: str, who: Editor, svc: Svc, body: Note
) -> JSONResponse:
    """Add a comment to an open request."""
    return _answer(
        await run_in_threadpool(svc.changes.comment, project, env, change_id, who.name, body.text)
    )
