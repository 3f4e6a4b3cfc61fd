"""The releases API under /api/v1/projects/{project}/environments/{env}/releases.

Start a release from a plan, list and show releases (with their decisions
and the judge's explanations), and command them. Starting, advancing,
resuming, approving and restarting need the releaser role (or admin);
pausing and aborting need only what editing the flag needs: stopping is
never harder than starting. The rules live in ``unveil.service.releases``.
"""

# No "from __future__ import annotations": FastAPI must see the annotations evaluated.
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from starlette.concurrency import run_in_threadpool

from unveil.core import Problem
from unveil.release.machine import Abort, Advance, Approve, Command, Pause, Resume, Start
from unveil.server.auth import Editor, Releaser, Viewer
from unveil.server.changes_api import gated
from unveil.server.services import Services, services
from unveil.server.texts import Reason
from unveil.service.errors import Invalid
from unveil.service.releases import Release

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/projects/{project}/environments/{env}/releases")
Svc = Annotated[Services, Depends(services)]
ONE = "/{release_id}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewRelease(_Strict):
    plan: dict[str, Any] = Field(description="A release plan (docs/release-plans.md)")
    start_at: datetime | None = Field(
        None, description="RFC 3339 time with its offset; the release waits for it"
    )


class Reasoned(_Strict):
    reason: Reason = Field("", description="Why, for the audit log")


class Stop(Reasoned):
    keep_share: StrictBool = Field(False, description="Leave the flag at its current share")


class Nothing(_Strict):
    """A command that takes no fields: an empty object, or no body at all."""


class Again(_Strict):
    start_at: datetime | None = None


def _aware(value: datetime | None, path: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise Invalid((Problem(path, "needs its offset from UTC, e.g. 2026-12-01T09:00:00Z"),))
    return value


def _answer(release: Release, status: int = 200) -> JSONResponse:
    return JSONResponse(release.as_data(), status_code=status)


@router.get("", tags=["releases"])
async def list_releases(
    project: str,
    env: str,
    _who: Viewer,
    svc: Svc,
    flag: str | None = None,
    active: bool | None = None,
) -> dict[str, Any]:
    """The environment's releases, newest first (without their history)."""
    found = await run_in_threadpool(svc.releases.list, project, env, flag, active)
    return {"releases": [r.as_data(history=False) for r in found]}


@router.post("", tags=["releases"], status_code=201)
async def start_release(
    project: str, env: str, who: Releaser, svc: Svc, body: NewRelease
) -> JSONResponse:
    """Start a release of a plan; refused whole, naming every problem, if the plan is bad."""
    start_at = _aware(body.start_at, "start_at")
    payload: dict[str, Any] = {"plan": body.plan}
    if start_at is not None:
        payload["start_at"] = start_at.isoformat()
    plan_flag = body.plan.get("flag")
    target = plan_flag if isinstance(plan_flag, str) else ""
    request, _ = await gated(svc, project, env, who, "release.start", target, payload, None)
    if request is not None:
        return request
    release = await run_in_threadpool(
        svc.releases.start, project, env, body.plan, who.name, start_at
    )
    return _answer(release, 201)


@router.get(ONE, tags=["releases"])
async def show_release(
    project: str, env: str, release_id: str, _who: Viewer, svc: Svc
) -> JSONResponse:
    """One release with its history, and its latest decisions with their explanations."""
    release, decisions = await run_in_threadpool(svc.releases.show, project, env, release_id)
    return JSONResponse({**release.as_data(), "decisions": decisions})


async def _command(
    svc: Services, project: str, env: str, release_id: str, command: Command
) -> JSONResponse:
    release = await run_in_threadpool(svc.releases.command, project, env, release_id, command)
    return _answer(release)


@router.post(ONE + "/pause", tags=["releases"])
async def pause_release(
    project: str,
    env: str,
    release_id: str,
    who: Editor,
    svc: Svc,
    body: Annotated[Reasoned | None, Body()] = None,
) -> JSONResponse:
    """Stop taking decisions; the flag stays at its share."""
    reason = body.reason if body else ""
    return await _command(svc, project, env, release_id, Pause(who.name, reason))


@router.post(ONE + "/abort", tags=["releases"])
async def abort_release(
    project: str,
    env: str,
    release_id: str,
    who: Editor,
    svc: Svc,
    body: Annotated[Stop | None, Body()] = None,
) -> JSONResponse:
    """Stop for good: control for everyone, unless keep_share."""
    stop = body or Stop(reason="", keep_share=False)
    return await _command(
        svc, project, env, release_id, Abort(who.name, stop.reason, stop.keep_share)
    )


@router.post(ONE + "/resume", tags=["releases"])
async def resume_release(
    project: str,
    env: str,
    release_id: str,
    who: Releaser,
    svc: Svc,
    _body: Annotated[Nothing | None, Body()] = None,
) -> JSONResponse:
    """Take decisions again; the step's hold starts anew and the share is set again."""
    request, _ = await gated(svc, project, env, who, "release.resume", release_id, {}, None)
    if request is not None:
        return request
    return await _command(svc, project, env, release_id, Resume(who.name))


@router.post(ONE + "/advance", tags=["releases"])
async def advance_release(
    project: str,
    env: str,
    release_id: str,
    who: Releaser,
    svc: Svc,
    _body: Annotated[Nothing | None, Body()] = None,
) -> JSONResponse:
    """Go to the next step now, whatever the hold, the data or the window."""
    request, _ = await gated(svc, project, env, who, "release.advance", release_id, {}, None)
    if request is not None:
        return request
    return await _command(svc, project, env, release_id, Advance(who.name))


@router.post(ONE + "/approve", tags=["releases"])
async def approve_release(
    project: str,
    env: str,
    release_id: str,
    who: Releaser,
    svc: Svc,
    _body: Annotated[Nothing | None, Body()] = None,
) -> JSONResponse:
    """Approve a release that waits for approval."""
    return await _command(svc, project, env, release_id, Approve(who.name))


@router.post(ONE + "/start", tags=["releases"])
async def start_now(
    project: str,
    env: str,
    release_id: str,
    who: Releaser,
    svc: Svc,
    _body: Annotated[Nothing | None, Body()] = None,
) -> JSONResponse:
    """Start a scheduled release now, without waiting for its time or window."""
    return await _command(svc, project, env, release_id, Start(who.name))


@router.post(ONE + "/restart", tags=["releases"], status_code=201)
async def restart_release(
    project: str,
    env: str,
    release_id: str,
    who: Releaser,
    svc: Svc,
    body: Annotated[Again | None, Body()] = None,
) -> JSONResponse:
    """A new release of a rolled-back or aborted one's plan, keeping its history."""
    start_at = _aware(body.start_at if body else None, "start_at")
    payload = {} if start_at is None else {"start_at": start_at.isoformat()}
    request, _ = await gated(svc, project, env, who, "release.restart", release_id, payload, None)
    if request is not None:
        return request
    release = await run_in_threadpool(
        svc.releases.restart, project, env, release_id, who.name, start_at
    )
    return _answer(release, 201)
