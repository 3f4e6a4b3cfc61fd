"""The HTTP application: routes that translate requests into use cases and back.

``create_app(engine)`` is the composition root's product; ``unveil serve``
builds the engine from the configured database and hands it here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, text
from starlette.concurrency import run_in_threadpool

from unveil.service.access import AccessService, Principal
from unveil.service.errors import (
    Conflict,
    Invalid,
    NotFound,
    PreconditionFailed,
    PreconditionRequired,
)
from unveil.service.flags import Change, FlagRecord, FlagService

__all__ = ["MAX_BODY_BYTES", "create_app"]

#: The largest request body accepted; bigger ones get 413 before being read.
MAX_BODY_BYTES = 1 << 20

_ERRORS: dict[type[Exception], int] = {
    NotFound: 404,
    Conflict: 409,
    PreconditionRequired: 428,
    PreconditionFailed: 412,
    Invalid: 422,
}


class _Denied(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message


def _etag(version: int) -> str:
    return f'"{version}"'


def _parse_if_match(value: str | None) -> int | None:
    if value is None:
        return None
    raw = value.strip().removeprefix("W/").strip('"')
    if not raw.isdigit():
        raise _Denied(400, f"If-Match must be an ETag this server gave, not {value!r}")
    return int(raw)


async def principal(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Principal:
    """Whoever the request's token belongs to; 401 without a valid one."""
    if not authorization:
        raise _Denied(401, "an Authorization header with a token is required")
    secret = authorization.removeprefix("Bearer ").strip()
    access: AccessService = request.app.state.access
    found = await run_in_threadpool(access.authenticate, secret)
    if found is None:
        raise _Denied(401, "the token is not valid")
    return found


def role(needed: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that admits admin tokens of ``needed`` or a stronger role."""

    async def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
        if not who.may(needed):
            raise _Denied(403, f"this needs the {needed} role")
        return who

    return check


Viewer = Annotated[Principal, Depends(role("viewer"))]
Editor = Annotated[Principal, Depends(role("editor"))]
Anyone = Annotated[Principal, Depends(principal)]


def create_app(engine: Engine) -> FastAPI:
    """The application over one database."""
    flags = FlagService(engine)
    access = AccessService(engine)
    app = FastAPI(
        title="unveil",
        version="1",
        description="Flags, releases and their audit trail.",
    )
    app.state.access = access
    app.add_middleware(GZipMiddleware, minimum_size=1024)

    @app.middleware("http")
    async def refuse_large_bodies(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return JSONResponse(
                {"error": f"the body is larger than {MAX_BODY_BYTES} bytes"}, status_code=413
            )
        return await call_next(request)

    @app.exception_handler(_Denied)
    async def denied(_request: Request, exc: _Denied) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def malformed(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"path": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")}
            for e in exc.errors()
        ]
        return JSONResponse({"error": "malformed request", "problems": problems}, 400)

    for error, status in _ERRORS.items():

        async def handler(_request: Request, exc: Exception, status: int = status) -> JSONResponse:
            body: dict[str, Any] = {"error": str(exc)}
            if isinstance(exc, Invalid):
                body["problems"] = [{"path": p.path, "message": p.message} for p in exc.problems]
            return JSONResponse(body, status_code=status)

        app.add_exception_handler(error, handler)

    def flag_response(record: FlagRecord, status: int = 200) -> JSONResponse:
        return JSONResponse(
            {"key": record.key, "version": record.version, "flag": record.data},
            status_code=status,
            headers={"ETag": _etag(record.version)},
        )

    base = "/api/v1/projects/{project}/environments/{env}"

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    async def readyz() -> JSONResponse:
        def ping() -> None:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))

        try:
            await run_in_threadpool(ping)
        except Exception as exc:  # any database failure means "not ready"
            return JSONResponse({"status": "unavailable", "error": str(exc)}, 503)
        return JSONResponse({"status": "ready"})

    @app.get(base + "/flags", tags=["flags"])
    async def list_flags(project: str, env: str, _who: Viewer) -> dict[str, Any]:
        records = await run_in_threadpool(flags.list_flags, project, env)
        return {"flags": [{"key": r.key, "version": r.version, "flag": r.data} for r in records]}

    @app.get(base + "/flags/{key:path}", tags=["flags"])
    async def get_flag(project: str, env: str, key: str, _who: Viewer) -> JSONResponse:
        return flag_response(await run_in_threadpool(flags.get_flag, project, env, key))

    @app.put(base + "/flags/{key:path}", tags=["flags"])
    async def put_flag(
        project: str,
        env: str,
        key: str,
        who: Editor,
        flag: Annotated[dict[str, Any], Body()],
        if_match: Annotated[str | None, Header()] = None,
        if_none_match: Annotated[str | None, Header()] = None,
        reason: Annotated[str | None, Query(max_length=1000)] = None,
    ) -> JSONResponse:
        """Create (no If-Match, or If-None-Match: *) or replace (If-Match) a flag."""
        version = _parse_if_match(if_match)
        record = await run_in_threadpool(
            flags.put_flag,
            project,
            env,
            key,
            flag,
            Change(who.name, reason),
            version,
            if_none_match == "*",
        )
        return flag_response(record, 201 if record.version == 1 else 200)

    @app.delete(base + "/flags/{key:path}", tags=["flags"], status_code=204)
    async def delete_flag(
        project: str,
        env: str,
        key: str,
        who: Editor,
        if_match: Annotated[str | None, Header()] = None,
        reason: Annotated[str | None, Query(max_length=1000)] = None,
    ) -> Response:
        version = _parse_if_match(if_match)
        await run_in_threadpool(
            flags.delete_flag, project, env, key, Change(who.name, reason), version
        )
        return Response(status_code=204)

    @app.get(base + "/audit", tags=["audit"])
    async def audit(
        project: str,
        env: str,
        _who: Viewer,
        target: str | None = None,
        actor: str | None = None,
    ) -> dict[str, Any]:
        entries = await run_in_threadpool(access.audit, project, env, target, actor)
        return {"entries": entries}

    @app.get("/sdk/v1/snapshot", tags=["sdk"])
    async def snapshot(
        who: Anyone,
        if_none_match: Annotated[str | None, Header()] = None,
    ) -> Response:
        """The SDK key's environment: its flags document and revision."""
        if who.kind != "sdk" or who.environment_id is None:
            raise _Denied(403, "the snapshot needs an SDK key")
        snap = await run_in_threadpool(flags.snapshot_of, who.environment_id)
        body = json.dumps({**snap.document, "revision": snap.version}, separators=(",", ":"))
        tag = '"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'
        if if_none_match == tag:
            return Response(status_code=304, headers={"ETag": tag})
        return Response(body, media_type="application/json", headers={"ETag": tag})

    return app
