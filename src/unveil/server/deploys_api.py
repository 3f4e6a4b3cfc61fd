"""Deploys under /api/v1/projects/{project}/...: services, deploys, the timeline, the status.

Recording a deploy or its verification needs a deployer token (the narrow
role of a CI pipeline) or an editor or stronger; reading needs a viewer.
The rules live in ``unveil.service.deploys``.
"""

# No "from __future__ import annotations": FastAPI must see the annotations evaluated.
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool
from starlette.concurrency import run_in_threadpool

from unveil.server.auth import Admin, Deployer, Viewer
from unveil.server.services import Services, services
from unveil.server.texts import Reason
from unveil.service.deploys import DeployRequest, Verification

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/projects/{project}")
ENV = "/environments/{env}"
Svc = Annotated[Services, Depends(services)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServiceBody(_Strict):
    owner: str | None = Field(None, description="Who owns the service (a team, a person)")


class NewDeploy(_Strict):
    # lengths are checked by the service, which names the field and the limit
    service: str = Field(description="The service deployed (created beforehand)")
    version: str | None = Field(None, description="The version; a rollback may leave it out")
    commit: str | None = Field(None, description="The commit deployed")
    link: str | None = Field(None, description="An http(s) link: the pipeline run, the release")
    references: dict[str, list[str]] | None = Field(
        None, description='The flags its code references: {"flag": ["path:line", ...]}'
    )
    rollback: StrictBool = Field(False, description="Record it as a deploy rollback")
    at: str | None = Field(None, description="When it happened (RFC 3339; default: now)")
    reason: Reason | None = Field(None, description="Why, for the audit log and the timeline")


class VerificationBody(_Strict):
    result: Literal["passed", "failed"]
    checks: list[dict[str, Any]] = Field(description="Every check: name, kind, passed, evidence")
    reason: Reason | None = None


class DeploySettings(_Strict):
    on_deploy_rollback: Literal["off", "keep", "ask"] = Field(
        description="What a deploy rollback does to a flag whose code it takes away"
    )


@router.get("/services", tags=["deploys"])
async def list_services(project: str, _who: Viewer, svc: Svc) -> dict[str, Any]:
    """The project's services, by name."""
    return {"services": await run_in_threadpool(svc.deploys.services, project)}


@router.put("/services/{name}", tags=["deploys"])
async def put_service(
    project: str, name: str, who: Deployer, svc: Svc, body: ServiceBody
) -> JSONResponse:
    """Create a service (201) or set its owner (200)."""
    found, created = await run_in_threadpool(
        svc.deploys.put_service, project, name, body.owner, who.name
    )
    return JSONResponse(found, status_code=201 if created else 200)


@router.post(ENV + "/deploys", tags=["deploys"], status_code=201)
async def record_deploy(
    project: str, env: str, who: Deployer, svc: Svc, body: NewDeploy
) -> dict[str, Any]:
    """Record a deploy; an older version (or ``rollback``) is a deploy rollback."""
    request = DeployRequest(**body.model_dump())
    return await run_in_threadpool(svc.deploys.record, project, env, request, who.name)


@router.get(ENV + "/deploys", tags=["deploys"])
async def list_deploys(
    project: str, env: str, _who: Viewer, svc: Svc, service: str | None = None, limit: int = 100
) -> dict[str, Any]:
    """The environment's deploys (of one ``service``), newest first."""
    found = await run_in_threadpool(svc.deploys.list, project, env, service, limit)
    return {"deploys": found}


@router.get(ENV + "/deploys/{deploy_id}", tags=["deploys"])
async def show_deploy(
    project: str, env: str, deploy_id: str, _who: Viewer, svc: Svc
) -> dict[str, Any]:
    """One deploy, with its references and its verification."""
    return await run_in_threadpool(svc.deploys.get, project, env, deploy_id)


@router.post(ENV + "/deploys/{deploy_id}/verification", tags=["deploys"])
async def verify_deploy(
    project: str, env: str, deploy_id: str, who: Deployer, svc: Svc, body: VerificationBody
) -> dict[str, Any]:
    """Store a verification's result and every check's evidence on the deploy."""
    result = Verification(body.result, body.checks, body.reason)
    return await run_in_threadpool(svc.deploys.verify, project, env, deploy_id, result, who.name)


@router.get(ENV + "/timeline", tags=["deploys"])
async def timeline(
    project: str, env: str, _who: Viewer, svc: Svc, limit: int = 200
) -> dict[str, Any]:
    """Deploys and releases in one order, oldest first: the last ``limit`` marks."""
    return {"marks": await run_in_threadpool(svc.deploys.timeline, project, env, limit)}


@router.get(ENV + "/status", tags=["deploys"])
async def status(project: str, env: str, _who: Viewer, svc: Svc) -> dict[str, Any]:
    """What runs here; what is deployed dark; what is released without code."""
    return await run_in_threadpool(svc.deploys.status, project, env)


@router.get(ENV + "/deploy-settings", tags=["deploys"])
async def get_deploy_settings(project: str, env: str, _who: Viewer, svc: Svc) -> dict[str, Any]:
    """What a deploy rollback does to a flag whose code it takes away."""
    value = await run_in_threadpool(svc.deploys.on_rollback, project, env)
    return {"on_deploy_rollback": value}


@router.put(ENV + "/deploy-settings", tags=["deploys"])
async def put_deploy_settings(
    project: str, env: str, who: Admin, svc: Svc, body: DeploySettings
) -> dict[str, Any]:
    """Choose: switch such a flag off (default), keep it, or ask (a change request)."""
    value = await run_in_threadpool(
        svc.deploys.set_on_rollback, project, env, body.on_deploy_rollback, who.name
    )
    return {"on_deploy_rollback": value}
