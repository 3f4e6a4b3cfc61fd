"""The SDK API under /sdk/v1: snapshot, live stream, events intake."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from unveil.server.auth import PRINCIPAL, SdkKey
from unveil.server.etags import accepts_gzip, none_match
from unveil.server.hub import Hub, Subscriber
from unveil.server.services import Services, services
from unveil.service.access import Principal
from unveil.service.errors import BadRequest

__all__ = ["GZIP_MINIMUM", "MAX_EVENTS_BODY", "SnapshotShortcut", "router"]

router = APIRouter(prefix="/sdk/v1", tags=["sdk"])
Svc = Annotated[Services, Depends(services)]

#: The smallest body the gzip middleware compresses (and marks ``Vary: Accept-Encoding``).
GZIP_MINIMUM = 1024
#: The largest events batch body, counted as its bytes arrive (whatever the encoding).
MAX_EVENTS_BODY = 1 << 20
#: A stream message goes out in pieces of this size: each waits for the client to
#: take the one before (the server's flow control), so no client holds a copy of
#: a large message in the server's write buffer.
_PIECE = 16 << 10


@router.get("/snapshot")
async def snapshot(
    who: SdkKey,
    svc: Svc,
    if_none_match: Annotated[str | None, Header()] = None,
    accept_encoding: Annotated[str | None, Header()] = None,
) -> Response:
    """The SDK key's environment: its flags document and ``revision``; 304 if unchanged.

    Body, ETag and gzip form are made once per version (``unveil.server.snapshots``).
    """
    env_id = who.environment_id or 0
    snap = svc.hub.cached(env_id)
    if snap is None or not snap.ready:
        snap = await run_in_threadpool(svc.hub.ready, env_id)
    if none_match(if_none_match, snap.etag):
        unchanged = {"ETag": snap.etag}
        if len(snap.body) >= GZIP_MINIMUM:  # the Vary its 200 would carry (RFC 9110, 15.4.5)
            unchanged["Vary"] = "Accept-Encoding"
        return Response(status_code=304, headers=unchanged)
    if accepts_gzip(accept_encoding):
        ready = snap
        body = snap.gzipped if snap.gzip_ready else await run_in_threadpool(lambda: ready.gzipped)
        headers = {"ETag": snap.etag, "Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
        return Response(body, media_type="application/json", headers=headers)
    # Vary comes from the gzip middleware, which adds it to bodies it could have compressed
    return Response(snap.body, media_type="application/json", headers={"ETag": snap.etag})


@dataclass(frozen=True, slots=True)
class _Route:
    """What the guard's request count reads of a route: its path."""

    path: str


_SNAPSHOT = "/sdk/v1/snapshot"
_SNAPSHOT_ROUTE = _Route(_SNAPSHOT)


class SnapshotShortcut:
    """``GET /sdk/v1/snapshot`` answered from prepared bytes, without the framework.

    Plain ASGI behind the guard (which has authenticated the key before and
    counts the answer after). It answers only what the route would answer
    with the same bytes and headers: a request by an SDK key, with no query
    parameters, for a snapshot already in memory and prepared (its gzip form
    too when asked for). Anything else (another token, a query string, a
    snapshot not yet loaded or encoded, any error) goes on to the route,
    which does every check and the preparing.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != _SNAPSHOT
            or scope["method"] != "GET"
            or scope["query_string"]
        ):
            await self.app(scope, receive, send)
            return
        who: Principal | None = scope.get("state", {}).get(PRINCIPAL)
        services: Services = scope["app"].state.services
        snap = None
        if who is not None and who.kind == "sdk" and who.environment_id is not None:
            snap = services.hub.cached(who.environment_id)
        if snap is None or not snap.ready:
            await self.app(scope, receive, send)
            return
        if_none_match = accept_encoding = None
        for name, value in scope["headers"]:
            if name == b"if-none-match":
                if_none_match = value.decode("latin-1")
            elif name == b"accept-encoding":
                accept_encoding = value.decode("latin-1")
        etag = snap.etag.encode()
        if none_match(if_none_match, snap.etag):
            headers = [(b"etag", etag)]
            if len(snap.body) >= GZIP_MINIMUM:  # the Vary its 200 would carry (RFC 9110)
                headers.append((b"vary", b"Accept-Encoding"))
            body = b""
            status = 304
        else:
            gzipped = accepts_gzip(accept_encoding)
            if gzipped and not snap.gzip_ready:
                await self.app(scope, receive, send)
                return
            body = snap.gzipped if gzipped else snap.body
            status = 200
            headers = [
                (b"content-length", b"%d" % len(body)),
                (b"content-type", b"application/json"),
                (b"etag", etag),
            ]
            if gzipped:
                headers += [(b"content-encoding", b"gzip"), (b"vary", b"Accept-Encoding")]
            elif len(body) >= GZIP_MINIMUM:  # as the gzip middleware marks the route's answer
                headers.append((b"vary", b"Accept-Encoding"))
        scope["route"] = _SNAPSHOT_ROUTE
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _EventStream(Response):
    """Server-sent events from one subscriber, piece by piece, until the stream ends.

    It ends when the client goes away, falls behind (the hub cuts it off) or
    its key is revoked; a client that reconnects starts from the snapshot.
    """

    media_type = "text/event-stream"

    def __init__(
        self, hub: Hub, subscriber: Subscriber, first: Sequence[bytes], heartbeat: float
    ) -> None:
        # not Response.__init__: it would announce a body of length 0
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._hub, self._subscriber = hub, subscriber
        self._first, self._heartbeat = first, heartbeat

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        subscriber = self._subscriber

        async def listen() -> None:  # the client going away ends the stream
            while (await receive())["type"] != "http.disconnect":
                pass
            subscriber.end("gone")

        listener = asyncio.create_task(listen())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await self._pieces(send, self._first)
            while (message := await subscriber.next(self._heartbeat)) is not None:
                await self._pieces(send, (message,))
                subscriber.sent(message)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            self._hub.unsubscribe(subscriber)

    async def _pieces(self, send: Send, parts: Sequence[bytes]) -> None:
        for part in parts:
            for start in range(0, len(part), _PIECE):
                if self._subscriber.ended is not None:
                    return
                piece = part if len(part) <= _PIECE else part[start : start + _PIECE]
                await send({"type": "http.response.body", "body": piece, "more_body": True})


@router.get("/stream", response_class=Response)
async def stream(who: SdkKey, svc: Svc) -> Response:
    """Server-sent events: the snapshot, then version-numbered patches, and heartbeats.

    Each patch names the version it follows (``previous``); a client that
    holds another version has missed something and fetches the snapshot.
    The stream ends when the client falls too far behind or its key is
    revoked; reconnecting starts again from the snapshot.
    """
    env_id = who.environment_id or 0
    await run_in_threadpool(svc.hub.ready, env_id)  # loaded (and encoded) before subscribing
    subscriber, first = svc.hub.subscribe(env_id, who.token_id or 0)
    return _EventStream(svc.hub, subscriber, first.event(), svc.heartbeat_seconds)


async def _bounded_body(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as more than ``limit`` bytes have arrived."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


_EVENTS_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["events"],
                    "properties": {"events": {"type": "array", "items": {"type": "object"}}},
                },
                "example": {"events": [{"kind": "exposure", "flag": "f", "variant": "on"}]},
            }
        },
    }
}


@router.post("/events", status_code=202, openapi_extra=_EVENTS_BODY)
async def events_intake(who: SdkKey, svc: Svc, request: Request) -> JSONResponse:
    """Exposures and metrics; 202 at once, 429 when the server is too busy to take them.

    The body is read only after the key is checked, and never beyond its bound.
    """
    body = await _bounded_body(request, MAX_EVENTS_BODY)
    if body is None:
        return JSONResponse({"error": f"the body is larger than {MAX_EVENTS_BODY} bytes"}, 413)
    try:
        batch: Any = json.loads(body)
    except ValueError as exc:  # not UTF-8, or not JSON
        raise BadRequest(f"the body is not a JSON document: {exc}") from None
    taken = await run_in_threadpool(svc.intake.accept, who.environment_id or 0, batch)
    return JSONResponse({"accepted": taken}, status_code=202)
