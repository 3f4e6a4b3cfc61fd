"""The SDK API under /sdk/v1: snapshot, live stream, events intake."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from unveil.server.auth import SdkKey
from unveil.server.etags import none_match
from unveil.server.hub import RESYNC, CachedSnapshot
from unveil.server.services import Services, services
from unveil.service.errors import Overloaded

__all__ = ["router"]

router = APIRouter(prefix="/sdk/v1", tags=["sdk"])
Svc = Annotated[Services, Depends(services)]


@router.get("/snapshot")
async def snapshot(
    who: SdkKey, svc: Svc, if_none_match: Annotated[str | None, Header()] = None
) -> Response:
    """The SDK key's environment: its flags document and ``revision``; 304 if unchanged."""
    env_id = who.environment_id or 0
    snap = svc.hub.cached(env_id)
    if snap is None:
        snap = await run_in_threadpool(svc.hub.current, env_id)
    if none_match(if_none_match, snap.etag):
        return Response(status_code=304, headers={"ETag": snap.etag})
    return Response(snap.body, media_type="application/json", headers={"ETag": snap.etag})


def _snapshot_event(snap: CachedSnapshot) -> str:
    return f"event: snapshot\nid: {snap.version}\ndata: {snap.body.decode()}\n\n"


@router.get("/stream")
async def stream(who: SdkKey, svc: Svc) -> StreamingResponse:
    """Server-sent events: the snapshot, then version-numbered patches, and heartbeats.

    Each patch names the version it follows (``previous``); a client that
    holds another version has missed something and fetches the snapshot.
    """
    env_id = who.environment_id or 0
    await run_in_threadpool(svc.hub.current, env_id)  # loaded before subscribing
    subscriber, first = svc.hub.subscribe(env_id)
    heartbeat = svc.heartbeat_seconds

    async def events() -> AsyncIterator[str]:
        try:
            yield _snapshot_event(first)
            while True:
                try:
                    async with asyncio.timeout(heartbeat):  # no task per wait, unlike wait_for
                        message = await subscriber.queue.get()
                except TimeoutError:
                    yield ": heartbeat\n\n"
                    continue
                if message == RESYNC:
                    yield _snapshot_event(svc.hub.current(env_id))
                else:
                    yield message
        finally:
            svc.hub.unsubscribe(env_id, subscriber)

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post("/events", status_code=202)
async def events_intake(
    who: SdkKey,
    svc: Svc,
    batch: Annotated[dict[str, Any], Body(description='{"events": [...]}')],
) -> JSONResponse:
    """Exposures and metrics; 202 at once, 429 when the server is too busy to take them."""
    if not svc.intake.accept(who.environment_id or 0, batch):
        raise Overloaded("too many events right now; retry shortly")
    return JSONResponse({"accepted": len(batch.get("events", []))}, status_code=202)
