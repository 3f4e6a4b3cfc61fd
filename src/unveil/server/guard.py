"""The door of the server: who is calling, and how much they may send.

A plain ASGI layer in front of every route, because FastAPI reads a route's
body before it runs the route's dependencies: a check made in a dependency
comes after the bytes are already in memory. Here, in order:

1. Requests to ``/api``, ``/sdk`` and ``/ofrep`` are authenticated from the
   ``Authorization`` header alone, before a single body byte is read: no
   valid token, 401, and the body is never received. A whole document (or
   a deploy) from a token whose role may not send it is refused with 403
   just as early: those bodies are the largest a route takes. Once a body
   has come the caller is checked again (from the cache of checked tokens):
   a token revoked while its body arrived is refused then.
2. The body is read as it arrives, counted chunk by chunk whatever the
   transfer encoding (a declared ``Content-Length`` is checked first, a
   chunked body is counted), and the request gets 413 the moment it crosses
   its route's limit; the rest is never read. A body that stops arriving
   for ``Limits.idle`` seconds gets 408.
3. A JSON body is decoded here, once, by the one strict decoder of the
   server: duplicate keys are refused with 400 naming the key (as the flags
   file refuses them), and so is malformed or absurdly nested JSON. OFREP
   routes get these refusals in the protocol's own error shape
   (``PARSE_ERROR``).

Then the route runs with the body replayed to it. Every answer is counted
for Prometheus on the way out.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from unveil.server.auth import PRINCIPAL
from unveil.server.dashboard.sessions import cookie_secret, is_dashboard_write
from unveil.server.errors import error_response
from unveil.server.services import Services
from unveil.service.access import Principal, bearer_secret
from unveil.service.errors import Forbidden, Unauthenticated

__all__ = [
    "DECODED_BODY",
    "LARGE_BODIES",
    "decoded_body",
    "BodyRefused",
    "Guard",
    "Limits",
    "decode_json",
    "large_body_role",
]

_PROTECTED = ("/api/", "/sdk/", "/ofrep/")
_DOCUMENT = re.compile(r"^/api/v1/projects/[^/]+/environments/[^/]+/document$")
# a deploy carries its code's references: as large as a document may be
_DEPLOY = re.compile(r"^/api/v1/projects/[^/]+/environments/[^/]+/deploys$")
# so may a scheduled change, which can carry a whole document (``unveil apply --schedule``)
_SCHEDULES = re.compile(r"^/api/v1/projects/[^/]+/environments/[^/]+/schedules$")
#: The routes that take the largest bodies, and the role each route needs: a caller
#: without it is refused before the body is read (tests/test_route_dependencies.py
#: checks that the routes ask for the same roles).
LARGE_BODIES: tuple[tuple[str, re.Pattern[str], str, str], ...] = (
    # method, path, the role the route needs, the kind of limit (``Limits.kind``)
    ("PUT", _DOCUMENT, "editor", "document"),
    ("POST", _DEPLOY, "deployer", "deploy"),
    ("POST", _SCHEDULES, "editor", "schedule"),
)
_OFREP_ONE = re.compile(r"^/ofrep/v1/evaluate/flags/(?P<key>.+)$")
# application/json and any application/...+json (an empty prefix too: FastAPI reads
# "application/+json" as JSON, so the strict reading must see it as well)
_JSON_TYPES = re.compile(r"^application/(?:[^;\s]*\+)?json\s*(?:;|$)", re.IGNORECASE)

MIB = 1 << 20
_LARGE_KINDS = frozenset(kind for _verb, _path, _role, kind in LARGE_BODIES)
#: Where the guard leaves a JSON body it decoded, in the request's state
#: (``decoded_body`` gives it to a route).
DECODED_BODY = "decoded_body"
_DECODE_ON_LOOP = 64 << 10  # larger bodies are checked in a worker thread
# A refusal leaves the body unread: closing the connection stops the server
# from receiving (and discarding) whatever the client still sends.
_CLOSE = {"Connection": "close"}
_UNKNOWN = {**_CLOSE, "WWW-Authenticate": "Bearer"}


@dataclass(frozen=True, slots=True)
class Limits:
    """The largest body, in bytes, each kind of request may send.

    ``document`` is for a whole flags document (PUT .../document), which
    holds many flags; ``events`` for the SDK's event batches; ``default``
    for everything else (one flag, one segment, a token...). What a single
    flag or segment may weigh once parsed is the core's limit
    (``unveil.core.codec.MAX_ITEM_BYTES``), checked whichever route it came by.
    """

    default: int = MIB
    document: int = 16 * MIB
    events: int = MIB
    form: int = 1 << 20  # a flag may weigh 512 KiB in its editor's fields
    page: int = 0
    #: seconds a body may stop arriving before the request gets 408 and the connection
    #: closes: a client that declares a body and then sends nothing holds a connection
    #: only this long. It bounds each pause, not the whole body: a client that trickles
    #: a byte now and then is a proxy's to stop (a minimum rate), as docs/operating.md says
    idle: float = 30.0

    def kind(self, method: str, path: str) -> str:
        """Which limit a request falls under (a field of these, or a property)."""
        large = _large_body(method, path)
        if large is not None:
            return large[1]
        if method == "POST" and path == "/sdk/v1/events":
            return "events"
        if not path.startswith(_PROTECTED):
            # a page is asked for with no body: one is refused at once, never waited for
            return "form" if method not in ("GET", "HEAD", "OPTIONS") else "page"
        return "default"

    @property
    def deploy(self) -> int:
        """A deploy carries its code's references: it may be as large as a document."""
        return self.document

    @property
    def schedule(self) -> int:
        """A scheduled change may carry a whole document: it may be as large as one."""
        return self.document

    def for_request(self, method: str, path: str) -> int:
        """The limit of one request, by its method and path."""
        limit: int = getattr(self, self.kind(method, path))
        return limit


#: What a 413 says the limit is, by the kind of request (``Limits.kind``).
_LIMIT_NAMES = {
    "document": "the limit of a whole flags document "
    "(unveil serve --document-limit, or UNVEIL_DOCUMENT_LIMIT, sets it)",
    "deploy": "the limit of a deploy with its code's references, the same as a whole flags "
    "document's (unveil serve --document-limit, or UNVEIL_DOCUMENT_LIMIT, sets it)",
    "schedule": "the limit of a scheduled change, which may carry a whole flags document "
    "(unveil serve --document-limit, or UNVEIL_DOCUMENT_LIMIT, sets it)",
    "events": "the limit of one batch of events",
    "default": "the limit of one request here (a whole document goes to PUT .../document)",
    "form": "the limit of one dashboard form",
    "page": "and asking for a page takes no body",
}


class BodyRefused(Exception):
    """A body that cannot be decoded as the JSON a route takes: 400, why, and where.

    ``path`` names the field the way the routes' own problems do
    (``plan.steps[0].name``); ``body`` when the fault is the body as a whole.
    """

    def __init__(self, message: str, path: str = "body") -> None:
        super().__init__(message)
        self.path = path


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BodyRefused(f"duplicate key {key!r} in the JSON body")
            seen.add(key)
    return out


#: Characters no body may carry anywhere: NUL (PostgreSQL cannot store it in text)
#: and lone surrogates (JSON can spell them, UTF-8 cannot carry them, so the
#: answer that echoed one, or any later read of it, would fail to encode).
_UNCARRIABLE = re.compile("[\x00\ud800-\udfff]")


def _child(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]" if path else f"[{key}]"
    return f"{path}.{key}" if path else key


def _refuse_uncarriable(value: Any) -> None:
    """Every string in the body, keys included, free of what cannot be stored or sent.

    The refusal names the field that holds it (a key that holds it names the
    object the key is in), so that a client is told which of its fields to fix.
    """
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            found = _UNCARRIABLE.search(item)
            if found is not None:
                what = "a NUL character" if found.group() == "\x00" else "a lone surrogate"
                raise BodyRefused(
                    f"a string in the JSON body holds {what}: {item[:40]!r}", path or "body"
                )
        elif isinstance(item, dict):
            for key, inner in item.items():
                stack.append((path, key))
                stack.append((_child(path, key), inner))
        elif isinstance(item, list):
            stack.extend((_child(path, i), inner) for i, inner in enumerate(item))


def _refuse_constant(name: str) -> Any:
    raise BodyRefused(f"{name} is not JSON")


def decode_json(body: bytes) -> Any:
    """The one way the server decodes a JSON body: strict, and never a 500.

    Refused (``BodyRefused``): text that is not UTF-8, malformed JSON,
    duplicate keys in an object (a silent merge would apply something the
    sender did not mean), ``NaN`` and ``Infinity``, and nesting deeper than
    the decoder can follow, and NUL characters or lone surrogates in any
    string (keys included).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyRefused(f"the body is not UTF-8 (byte {exc.start})") from None
    try:
        decoded = json.loads(
            text, object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant
        )
    except json.JSONDecodeError as exc:
        raise BodyRefused(
            f"malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise BodyRefused(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise BodyRefused("the JSON body is nested too deeply") from None
    _refuse_uncarriable(decoded)
    return decoded


def _is_json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            return bool(_JSON_TYPES.match(value.decode("latin-1")))
    return True  # the guard has given a body without a type the JSON type


def _header(scope: Scope, wanted: bytes) -> bytes | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return bytes(value)
    return None


class Guard:
    """Authenticate, bound and decode before any route runs; count every answer.

    Plain ASGI (not BaseHTTPMiddleware), so streamed answers pass through
    untouched and at full speed.
    """

    def __init__(self, app: ASGIApp, services: Services, limits: Limits | None = None) -> None:
        self.app = app
        self.services = services
        self.limits = limits or Limits()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                self._count(scope, status)
            await send(message)

        path: str = scope["path"]
        refusal: Response | None
        if path.startswith(_PROTECTED):
            refusal = await self._authenticate(scope)
            if refusal is not None:
                await refusal(scope, receive, counting_send)
                return
        elif is_dashboard_write(scope["method"], path):
            unknown = await self._signed_in(scope)
            if unknown is not None:
                await unknown(scope, receive, counting_send)
                return
        bound = self.limits.kind(scope["method"], path)
        needed = large_body_role(scope["method"], path) if bound in _LARGE_KINDS else None
        if needed is not None:
            # the largest bodies: whoever may not send one is refused before it is read
            refusal = _unpermitted(scope, needed)
            if refusal is not None:
                await refusal(scope, receive, counting_send)
                return
        limit: int = getattr(self.limits, bound)
        body, refusal = await self._read(scope, receive, limit, bound, self.limits.idle)
        if refusal is None and body:
            # the caller was known when the headers came; a body may take long to follow (the
            # idle limit bounds each pause, not the whole): a token revoked, or a session
            # ended, while it arrived must not have its change made
            refusal = await self._still_known(scope, path)
        if refusal is not None:
            await refusal(scope, receive, counting_send)
            return
        if body and path.startswith(_PROTECTED):
            coding = _header(scope, b"content-encoding")
            if coding is not None and coding.strip().lower() not in (b"", b"identity"):
                name = coding.decode("latin-1").strip()
                message = (
                    f"the body is sent with Content-Encoding: {name}, which is not taken: "
                    "send it uncompressed"
                )
                await _refuse(415, message)(scope, receive, counting_send)
                return
            kind = _header(scope, b"content-type")
            if kind is None:  # a body with no type: ours are all JSON, so read it as JSON
                scope["headers"] = [*scope["headers"], (b"content-type", b"application/json")]
            elif not _JSON_TYPES.match(kind.decode("latin-1")):
                message = "the body must be JSON, sent with Content-Type: application/json"
                await _refuse(415, message)(scope, receive, counting_send)
                return
        if body and _is_json(scope):
            try:
                if len(body) > _DECODE_ON_LOOP:
                    # a whole document takes a tenth of a second or more to check: on the
                    # event loop, every other request (snapshots, streams) would wait
                    decoded = await run_in_threadpool(decode_json, body)
                else:
                    decoded = decode_json(body)
            except BodyRefused as exc:
                await _malformed(path, str(exc), exc.path)(scope, receive, counting_send)
                return
            # a route that takes the largest bodies reads this, not the bytes again
            scope.setdefault("state", {})[DECODED_BODY] = decoded
        await self.app(scope, _replay(body, receive), counting_send)

    async def _authenticate(self, scope: Scope) -> JSONResponse | None:
        """None when the caller is known (and noted in the scope), else the 401."""
        raw = _header(scope, b"authorization")
        if raw is None and scope["path"].startswith("/ofrep/"):
            api_key = _header(scope, b"x-api-key")  # OFREP's other way to present a key
            raw = None if api_key is None else b"Bearer " + api_key
        try:
            secret = bearer_secret(None if raw is None else raw.decode("latin-1"))
        except Unauthenticated as exc:
            return _refuse(401, str(exc), _UNKNOWN)
        access = self.services.access
        try:
            found = access.recall(secret) or await run_in_threadpool(access.authenticate, secret)
        except Exception as exc:  # the database is away: 503, never a bare 500
            return error_response(exc)
        if found is None:
            return _refuse(401, "the token is not valid", _UNKNOWN)
        scope.setdefault("state", {})[PRINCIPAL] = found
        return None

    async def _still_known(self, scope: Scope, path: str) -> Response | None:
        """The caller checked again once the body has come: None, or the refusal."""
        if path.startswith(_PROTECTED):
            return await self._authenticate(scope)
        if is_dashboard_write(scope["method"], path):
            return await self._signed_in(scope)
        return None

    async def _signed_in(self, scope: Scope) -> Response | None:
        """None when a dashboard change comes with a live session (noted in the scope),
        else the refusal: the form's body is never read for someone not signed in."""
        raw = _header(scope, b"cookie")
        secret = cookie_secret(None if raw is None else raw.decode("latin-1"))
        check = self.services.sessions.authenticate
        try:
            found = None if secret is None else await run_in_threadpool(check, secret)
        except Exception as exc:  # the database is away: 503, never a bare 500
            return error_response(exc)
        if found is None:
            return PlainTextResponse("sign in first", 403, headers=_CLOSE)
        scope.setdefault("state", {})[PRINCIPAL] = found
        return None

    @staticmethod
    async def _read(
        scope: Scope, receive: Receive, limit: int, kind: str, idle: float
    ) -> tuple[bytes, JSONResponse | None]:
        """The whole body, or the 413 as soon as it is known to be too large, or the 408
        once it has stopped arriving for ``idle`` seconds."""

        def too_large() -> JSONResponse:  # made only when sent: most requests have no body
            message = f"the body is larger than {limit} bytes, {_LIMIT_NAMES[kind]}"
            return _refuse(413, message, _CLOSE)

        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return b"", too_large()
        # with no body declared (most requests) the server hands over an empty one at
        # once: no timer, which would cost every snapshot request its setting up
        coming = declared is not None or _header(scope, b"transfer-encoding") is not None
        wait = idle if coming else None
        chunks: list[bytes] = []
        size = 0
        while True:
            try:
                async with asyncio.timeout(wait):
                    message = await receive()
            except TimeoutError:
                stalled = f"the body stopped arriving: nothing came for {idle:g} s"
                return b"", _refuse(408, stalled, _CLOSE)
            if message["type"] == "http.disconnect":
                return b"", _refuse(400, "the client went away while sending")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return b"", too_large()
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), None

    def _count(self, scope: Scope, status: int) -> None:
        route = scope.get("route")
        self.services.metrics.requests.labels(
            scope["method"], getattr(route, "path", "(none)"), str(status)
        ).inc()


def _large_body(method: str, path: str) -> tuple[str, str] | None:
    for verb, pattern, needed, kind in LARGE_BODIES:
        if method == verb and pattern.match(path):
            return needed, kind
    return None


def large_body_role(method: str, path: str) -> str | None:
    """The role a route of ``LARGE_BODIES`` needs, or None for any other route."""
    large = _large_body(method, path)
    return None if large is None else large[0]


def _unpermitted(scope: Scope, role: str) -> JSONResponse | None:
    """None when the authenticated caller has ``role`` (as the route will check), else 403."""
    who: Principal = scope["state"][PRINCIPAL]
    try:
        who.require(role)
    except Forbidden as exc:
        return _refuse(403, str(exc), _CLOSE)
    return None


def _refuse(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _malformed(path: str, message: str, where: str = "body") -> JSONResponse:
    """400 for a body that is not acceptable JSON, in the shape the route's clients read."""
    if path.startswith("/ofrep/"):
        body: dict[str, Any] = {"errorCode": "PARSE_ERROR", "errorDetails": message}
        one = _OFREP_ONE.match(path)
        if one is not None:
            body = {"key": one["key"], **body}
        return JSONResponse(body, status_code=400)
    problems = [{"path": where, "message": message}]
    return JSONResponse({"error": "malformed request", "problems": problems}, status_code=400)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the body once, then listens to the client again."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # from now on only http.disconnect comes

    return replayed


async def decoded_body(request: Request) -> dict[str, Any]:
    """A route's JSON object body as the guard decoded it (strictly), not read again.

    For routes of the largest bodies: FastAPI would parse a 3 MB document a second
    time, on the event loop, where every other request waits for it. Answers as
    FastAPI does for a body that is missing or not an object (400, at ``body``).
    """
    decoded = request.scope.get("state", {}).get(DECODED_BODY, _NOTHING)
    if decoded is _NOTHING:  # no JSON body reached the route
        raise RequestValidationError([{"loc": ("body",), "msg": "Field required"}])
    if not isinstance(decoded, dict):
        problem = {"loc": ("body",), "msg": "Input should be a JSON object"}
        raise RequestValidationError([problem])
    return decoded


_NOTHING = object()
