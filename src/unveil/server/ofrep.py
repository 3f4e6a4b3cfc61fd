"""OFREP, the OpenFeature Remote Evaluation Protocol, under /ofrep/v1.

OpenFeature clients in any language evaluate flags here, remotely, with an
SDK key: one flag (``POST /ofrep/v1/evaluate/flags/{key}``) or all of them
(``POST /ofrep/v1/evaluate/flags``, with an ETag and 304). Evaluation uses
the same compiled flags as every SDK, from the node's in-memory snapshot.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from unveil.core import ErrorCode, Evaluation, Reason
from unveil.server.auth import SdkKey
from unveil.server.hub import CachedSnapshot
from unveil.server.services import Services, services
from unveil.service.errors import Overloaded

__all__ = ["router"]

router = APIRouter(prefix="/ofrep/v1", tags=["ofrep"])
Svc = Annotated[Services, Depends(services)]
Request = Annotated[dict[str, Any] | None, Body(description='{"context": {"targetingKey": ...}}')]

# OpenFeature's reasons; ours that it lacks are sent as the nearest, and named in metadata.
_REASONS = {Reason.PREREQUISITE_FAILED: "DISABLED"}
_NOT_FOUND = {ErrorCode.FLAG_NOT_FOUND}


async def _admitted(svc: Svc) -> AsyncIterator[None]:
    """Overload answers 429 with Retry-After rather than queueing without end.

    The count is the application's own (two applications in one process,
    as in tests, do not share it).
    """
    admission = svc.ofrep
    if admission.in_flight >= admission.limit:
        raise Overloaded("too many evaluations at once; retry shortly")
    admission.in_flight += 1
    try:
        yield
    finally:
        admission.in_flight -= 1


async def _snapshot(
    who: SdkKey, svc: Svc, _admission: Annotated[None, Depends(_admitted)]
) -> CachedSnapshot:
    env_id = who.environment_id or 0
    cached = svc.hub.cached(env_id)
    if cached is not None:
        return cached
    return await run_in_threadpool(svc.hub.current, env_id)


Snapshot = Annotated[CachedSnapshot, Depends(_snapshot)]


def _context(request: Mapping[str, Any] | None) -> dict[str, Any]:
    """The OFREP context as an unveil context: ``targetingKey`` is ``key``."""
    raw = (request or {}).get("context") or {}
    if not isinstance(raw, Mapping):
        raise _ContextError("context must be an object")
    context = {k: v for k, v in raw.items() if k != "targetingKey"}
    if "targetingKey" in raw:
        context["key"] = raw["targetingKey"]
    return context


class _ContextError(Exception):
    pass


def _success(result: Evaluation, snapshot: CachedSnapshot) -> dict[str, Any]:
    flag = snapshot.ruleset.document.flags[result.key]
    metadata: dict[str, Any] = {"kind": flag.kind.value, "revision": snapshot.version}
    if result.reason in _REASONS:
        metadata["unveilReason"] = result.reason.value
    return {
        "key": result.key,
        "value": result.value,
        "reason": _REASONS.get(result.reason, result.reason.value),
        "variant": result.variant,
        "metadata": metadata,
    }


def _failure(result: Evaluation) -> dict[str, Any]:
    code = result.error_code.value if result.error_code else "GENERAL"
    return {"key": result.key, "errorCode": code, "errorDetails": result.error_message or code}


def _bad_context(message: str, key: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"errorCode": "INVALID_CONTEXT", "errorDetails": message}
    if key is not None:
        body = {"key": key, **body}
    return JSONResponse(body, status_code=400)


@router.post("/evaluate/flags/{key:path}")
async def evaluate_flag(key: str, snapshot: Snapshot, request: Request = None) -> JSONResponse:
    """One flag: 200 with its value, 404 when there is no such flag, 400 for a bad context."""
    try:
        context = _context(request)
    except _ContextError as exc:
        return _bad_context(str(exc), key)
    result = snapshot.ruleset.evaluate(key, context)
    if result.error_code is None:
        return JSONResponse(_success(result, snapshot))
    status = 404 if result.error_code in _NOT_FOUND else 400
    return JSONResponse(_failure(result), status_code=status)


@router.post("/evaluate/flags")
async def evaluate_all(
    snapshot: Snapshot,
    request: Request = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Every flag for one context; ETag over the flags and the context, 304 when unchanged."""
    try:
        context = _context(request)
    except _ContextError as exc:
        return _bad_context(str(exc))
    digest = hashlib.sha256(snapshot.etag.encode())
    digest.update(json.dumps(context, sort_keys=True, default=str).encode())
    etag = f'"{digest.hexdigest()[:32]}"'
    if if_none_match == etag:
        return Response(status_code=304, headers={"ETag": etag})
    flags = []
    for key in snapshot.ruleset.flag_keys():
        result = snapshot.ruleset.evaluate(key, context)
        flags.append(_success(result, snapshot) if result.error_code is None else _failure(result))
    return JSONResponse({"flags": flags}, headers={"ETag": etag})
