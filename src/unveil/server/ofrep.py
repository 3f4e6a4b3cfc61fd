"""OFREP, the OpenFeature Remote Evaluation Protocol, under /ofrep/v1.

OpenFeature clients in any language evaluate flags here, remotely, with an
SDK key: one flag (``POST /ofrep/v1/evaluate/flags/{key}``) or all of them
(``POST /ofrep/v1/evaluate/flags``, with an ETag and 304), and learn of
changes from ``GET /ofrep/v1/events`` (server-sent ``refetchEvaluation``
notifications), which the bulk answer offers as its ``eventStreams``.
Evaluation uses the same compiled flags as every SDK, from the node's
in-memory snapshot.

Answers follow the protocol's OpenAPI document, version 0.3.0
(open-feature/protocol, service/openapi.yaml); where unveil says more than
the protocol can, the answer says the nearest thing the protocol allows and
unveil's own word goes in ``metadata`` (see docs/api.md, "OFREP").
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from unveil.core import ErrorCode, Evaluation, Reason
from unveil.core.model import Flag
from unveil.server.auth import SdkKey
from unveil.server.etags import none_match
from unveil.server.hub import HEARTBEAT, CachedSnapshot
from unveil.server.services import Services, services
from unveil.service.errors import Overloaded

__all__ = ["PROTOCOL_VERSION", "router"]

router = APIRouter(prefix="/ofrep/v1", tags=["ofrep"])
Svc = Annotated[Services, Depends(services)]
RequestBody = Annotated[Any, Body(description='{"context": {"targetingKey": ...}}')]

#: The version of the protocol's OpenAPI document these answers follow.
PROTOCOL_VERSION = "0.3.0"
#: Where OFREP clients hear of changes (offered in the bulk answer's eventStreams).
EVENTS_PATH = "/ofrep/v1/events"
#: How long a client may be inactive before closing the stream (the protocol's default).
INACTIVITY_SECONDS = 120

# The reasons the protocol knows; ours that it lacks are sent as the nearest
# (see _reason), with ours in metadata.unveilReason.
_REASONS = frozenset({"STATIC", "TARGETING_MATCH", "SPLIT", "DISABLED", "UNKNOWN"})
# The error codes an evaluation failure may carry; others go as GENERAL, ours in metadata.
_ERROR_CODES = frozenset({"PARSE_ERROR", "TARGETING_KEY_MISSING", "INVALID_CONTEXT", "GENERAL"})


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


class _RequestError(Exception):
    """A request the protocol calls bad: its error code and why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _context(request: object) -> dict[str, Any]:
    """The OFREP context as an unveil context: ``targetingKey`` is ``key``."""
    if request is None:
        request = {}
    if not isinstance(request, Mapping):
        raise _RequestError("PARSE_ERROR", "the body must be a JSON object")
    raw = request.get("context") or {}
    if not isinstance(raw, Mapping):
        raise _RequestError("INVALID_CONTEXT", "context must be an object")
    context = {k: v for k, v in raw.items() if k != "targetingKey"}
    if "targetingKey" in raw:
        context["key"] = raw["targetingKey"]
    return context


def _reason(result: Evaluation, flag: Flag) -> str:
    """The protocol's name for why: DEFAULT is STATIC when nothing could have targeted.

    A flag with targets, rules or prerequisites that fell through to its
    default is UNKNOWN to the protocol (it has no word for "no rule
    matched"); a prerequisite not met switched the flag off: DISABLED.
    """
    if result.reason is Reason.PREREQUISITE_FAILED:
        return "DISABLED"
    if result.reason is Reason.DEFAULT:
        targeting = flag.targets or flag.rules or flag.prerequisites
        return "UNKNOWN" if targeting else "STATIC"
    return result.reason.value if result.reason.value in _REASONS else "UNKNOWN"


def _metadata(flag: Flag, snapshot: CachedSnapshot) -> dict[str, Any]:
    metadata: dict[str, Any] = {"kind": flag.kind.value, "revision": snapshot.version}
    if flag.description:
        metadata["description"] = flag.description
    return metadata


def _uncarried(value: object) -> str | None:
    """Why the protocol cannot carry a value, if it cannot: it has no list or null values."""
    if value is None:
        return "the variant's value is null, which OFREP cannot carry"
    if isinstance(value, list):
        return "the variant's value is a list; OFREP carries objects, not lists"
    return None


def _answer(result: Evaluation, snapshot: CachedSnapshot) -> dict[str, Any]:
    """One flag's answer: the protocol's evaluation success, or its evaluation failure."""
    flag = snapshot.ruleset.document.flags.get(result.key)
    if result.error_code is None and flag is not None:
        problem = _uncarried(result.value)
        if problem is None:
            metadata = _metadata(flag, snapshot)
            reason = _reason(result, flag)
            if reason != result.reason.value:
                metadata["unveilReason"] = result.reason.value
            return {
                "key": result.key,
                "value": result.value,
                "reason": reason,
                "variant": result.variant,
                "metadata": metadata,
            }
        result = Evaluation(result.key, None, None, Reason.ERROR, ErrorCode.TYPE_MISMATCH, problem)
    code = result.error_code.value if result.error_code else "GENERAL"
    answer: dict[str, Any] = {"key": result.key, "errorDetails": result.error_message or code}
    metadata = {} if flag is None else _metadata(flag, snapshot)
    if code in _ERROR_CODES or code == ErrorCode.FLAG_NOT_FOUND:  # the 404 has its own shape
        answer["errorCode"] = code
    else:
        answer["errorCode"] = "GENERAL"
        metadata["unveilErrorCode"] = code
    if metadata:
        answer["metadata"] = metadata
    return answer


def _bad_request(error: _RequestError, key: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"errorCode": error.code, "errorDetails": str(error)}
    if key is not None:
        body = {"key": key, **body}
    return JSONResponse(body, status_code=400)


@router.post("/evaluate/flags/{key:path}")
async def evaluate_flag(key: str, snapshot: Snapshot, request: RequestBody = None) -> JSONResponse:
    """One flag: 200 with its value, 404 when there is no such flag, 400 for a bad request."""
    try:
        context = _context(request)
    except _RequestError as exc:
        return _bad_request(exc, key)
    answer = _answer(snapshot.ruleset.evaluate(key, context), snapshot)
    if "errorCode" not in answer:
        return JSONResponse(answer)
    status = 404 if answer["errorCode"] == ErrorCode.FLAG_NOT_FOUND else 400
    return JSONResponse(answer, status_code=status)


@router.post("/evaluate/flags")
async def evaluate_all(
    snapshot: Snapshot,
    request: RequestBody = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """Every flag for one context; ETag over the flags and the context, 304 when unchanged.

    The answer offers ``eventStreams``: the client may listen there for
    changes instead of polling.
    """
    try:
        context = _context(request)
    except _RequestError as exc:
        return _bad_request(exc)
    digest = hashlib.sha256(snapshot.etag.encode())
    digest.update(json.dumps(context, sort_keys=True, default=str).encode())
    etag = f'"{digest.hexdigest()[:32]}"'
    if none_match(if_none_match, etag):
        return Response(status_code=304, headers={"ETag": etag})
    flags = [
        _answer(snapshot.ruleset.evaluate(k, context), snapshot)
        for k in snapshot.ruleset.flag_keys()
    ]
    return JSONResponse(
        {
            "flags": flags,
            "metadata": {"revision": snapshot.version},
            "eventStreams": [
                {
                    "type": "sse",
                    "endpoint": {"requestUri": EVENTS_PATH},
                    "inactivityDelaySec": INACTIVITY_SECONDS,
                }
            ],
        },
        headers={"ETag": etag},
    )


def _refetch(snapshot: CachedSnapshot) -> str:
    data = json.dumps({"type": "refetchEvaluation", "etag": snapshot.etag})
    return f"id: {snapshot.version}\nevent: message\ndata: {data}\n\n"


@router.get("/events")
async def events(who: SdkKey, svc: Svc) -> StreamingResponse:
    """Server-sent events in the protocol's form: ``refetchEvaluation`` after every change.

    Notification only: the client then evaluates again through the bulk
    endpoint. A comment line keeps the connection alive when nothing changes.
    """
    env_id = who.environment_id or 0
    await run_in_threadpool(svc.hub.current, env_id)  # loaded before subscribing
    subscriber, first = svc.hub.subscribe(env_id, who.token_id or 0)
    heartbeat = svc.heartbeat_seconds

    async def notifications() -> AsyncIterator[str]:
        try:
            seen = first.version
            yield ": listening\n\n"
            # ends when the client falls behind or its key is revoked (None)
            while (patch := await subscriber.next(heartbeat)) is not None:
                if patch is HEARTBEAT:
                    yield ": heartbeat\n\n"
                    continue
                subscriber.sent(patch)  # only a notice of it goes out
                current = svc.hub.cached(env_id) or first
                if current.version != seen:
                    seen = current.version
                    yield _refetch(current)
        finally:
            svc.hub.unsubscribe(subscriber)

    return StreamingResponse(
        notifications(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
