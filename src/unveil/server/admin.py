"""The admin API under /api/v1: flags, audit, event counts, the cluster."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from unveil.server.auth import Denied, Editor, Viewer
from unveil.server.services import Services, services
from unveil.service.flags import Change, FlagRecord

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")
ENV = "/projects/{project}/environments/{env}"
Svc = Annotated[Services, Depends(services)]
Reason = Annotated[str | None, Query(max_length=1000, description="Why, for the audit log")]


def _etag(version: int) -> str:
    return f'"{version}"'


def _version_from(value: str | None) -> int | None:
    if value is None:
        return None
    raw = value.strip().removeprefix("W/").strip('"')
    if not raw.isdigit() or len(raw) > 18:
        raise Denied(400, f"If-Match must be an ETag this server gave, not {value!r}")
    return int(raw)


def _flag_response(record: FlagRecord, status: int = 200) -> JSONResponse:
    return JSONResponse(
        {"key": record.key, "version": record.version, "flag": record.data},
        status_code=status,
        headers={"ETag": _etag(record.version)},
    )


@router.get(ENV + "/flags", tags=["flags"])
async def list_flags(project: str, env: str, _who: Viewer, svc: Svc) -> dict[str, Any]:
    """Every flag of the environment, with its version."""
    records = await run_in_threadpool(svc.flags.list_flags, project, env)
    return {"flags": [{"key": r.key, "version": r.version, "flag": r.data} for r in records]}


@router.get(ENV + "/flags/{key:path}", tags=["flags"])
async def get_flag(project: str, env: str, key: str, _who: Viewer, svc: Svc) -> JSONResponse:
    """One flag; its ETag is the version to send back in If-Match."""
    return _flag_response(await run_in_threadpool(svc.flags.get_flag, project, env, key))


@router.put(ENV + "/flags/{key:path}", tags=["flags"])
async def put_flag(
    project: str,
    env: str,
    key: str,
    who: Editor,
    svc: Svc,
    flag: Annotated[dict[str, Any], Body(description="The flag in its flags-file form")],
    if_match: Annotated[str | None, Header()] = None,
    if_none_match: Annotated[str | None, Header()] = None,
    reason: Reason = None,
) -> JSONResponse:
    """Create (201) or replace (200, needs If-Match) a flag."""
    record = await run_in_threadpool(
        svc.flags.put_flag,
        project,
        env,
        key,
        flag,
        Change(who.name, reason),
        _version_from(if_match),
        if_none_match == "*",
    )
    return _flag_response(record, 201 if record.version == 1 else 200)


@router.delete(ENV + "/flags/{key:path}", tags=["flags"], status_code=204)
async def delete_flag(
    project: str,
    env: str,
    key: str,
    who: Editor,
    svc: Svc,
    if_match: Annotated[str | None, Header()] = None,
    reason: Reason = None,
) -> Response:
    """Delete a flag (needs If-Match)."""
    await run_in_threadpool(
        svc.flags.delete_flag, project, env, key, Change(who.name, reason), _version_from(if_match)
    )
    return Response(status_code=204)


@router.get(ENV + "/audit", tags=["audit"])
async def audit(
    project: str,
    env: str,
    _who: Viewer,
    svc: Svc,
    target: str | None = None,
    actor: str | None = None,
) -> dict[str, Any]:
    """The environment's audit entries, oldest first."""
    entries = await run_in_threadpool(svc.access.audit, project, env, target, actor)
    return {"entries": entries}


@router.get(ENV + "/events", tags=["events"])
async def event_counts(
    project: str, env: str, _who: Viewer, svc: Svc, flag: str | None = None
) -> dict[str, Any]:
    """Exposures and metrics counted per minute, flag, variant and metric."""
    env_id = await run_in_threadpool(svc.access.environment_of, project, env)
    return {"counts": await run_in_threadpool(svc.intake.counts, env_id, flag)}


@router.get("/cluster", tags=["operations"])
async def cluster(_who: Viewer, svc: Svc) -> dict[str, Any]:
    """This node, whether it does the background work, and every node seen lately."""
    nodes = await run_in_threadpool(svc.cluster.nodes)
    return {"node": svc.cluster.node, "leading": svc.leadership.leading.is_set(), "nodes": nodes}
