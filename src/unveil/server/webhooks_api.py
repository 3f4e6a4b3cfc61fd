"""The webhooks API under /api/v1/projects/{project}/webhooks.

Subscribe (the answer holds the signing secret, once), list, read and
remove subscriptions; read a subscription's deliveries with every attempt;
redeliver one. Changing subscriptions and redelivering need the admin role
(a subscription sends the project's changes to a URL of the caller's
choosing); reading needs a viewer, and never shows the secret. The rules
live in ``unveil.service.webhooks``.
"""

# No "from __future__ import annotations": FastAPI must see the annotations evaluated.
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from unveil.server.auth import Admin, Viewer
from unveil.server.services import Services, services

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/projects/{project}/webhooks")
Svc = Annotated[Services, Depends(services)]
ONE = "/{webhook_id}"


class NewWebhook(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="Where to POST: an http:// or https:// URL")
    events: list[str] = Field(description="Event names (docs/governance.md), at least one")
    environments: list[str] | None = Field(
        None, description="Only changes in these environments (default: all of the project)"
    )
    format: str = Field("json", description="json (the documented body) or slack ({text})")


@router.post("", tags=["webhooks"], status_code=201)
async def create_webhook(project: str, body: NewWebhook, who: Admin, svc: Svc) -> dict[str, Any]:
    """Subscribe a URL to events; the answer's ``secret`` signs every delivery, shown once."""
    return await run_in_threadpool(
        svc.webhooks.subscribe,
        project,
        body.url,
        body.events,
        body.environments,
        body.format,
        who.name,
    )


@router.get("", tags=["webhooks"])
async def list_webhooks(project: str, _who: Viewer, svc: Svc) -> dict[str, Any]:
    """The project's subscriptions (without their secrets)."""
    return {"webhooks": await run_in_threadpool(svc.webhooks.subscriptions, project)}


@router.get(ONE, tags=["webhooks"])
async def get_webhook(project: str, webhook_id: int, _who: Viewer, svc: Svc) -> dict[str, Any]:
    return await run_in_threadpool(svc.webhooks.get, project, webhook_id)


@router.delete(ONE, tags=["webhooks"], status_code=204)
async def delete_webhook(project: str, webhook_id: int, who: Admin, svc: Svc) -> Response:
    """Unsubscribe; deliveries not yet sent are dropped with it."""
    await run_in_threadpool(svc.webhooks.remove, project, webhook_id, who.name)
    return Response(status_code=204)


@router.get(ONE + "/deliveries", tags=["webhooks"])
async def list_deliveries(
    project: str,
    webhook_id: int,
    _who: Viewer,
    svc: Svc,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """The latest deliveries, newest first, each with its body and every attempt."""
    found = await run_in_threadpool(svc.webhooks.deliveries, project, webhook_id, limit)
    return {"deliveries": found}


@router.post(ONE + "/deliveries/{delivery_id}/redeliver", tags=["webhooks"])
async def redeliver(
    project: str, webhook_id: int, delivery_id: int, who: Admin, svc: Svc
) -> dict[str, Any]:
    """Send a delivery again, the same body with the same id, from now on."""
    return await run_in_threadpool(
        svc.webhooks.redeliver, project, webhook_id, delivery_id, who.name
    )
