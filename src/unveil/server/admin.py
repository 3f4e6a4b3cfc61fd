"""The admin API under /api/v1.

Projects and environments; per environment its flags and segments (each
with ETag / If-Match), the whole document (export and apply), the audit log
and event counts; per project each flag's metadata; tokens and users; the
cluster. Routes only translate: the rules live in the services.
"""

# No "from __future__ import annotations" here: the flag and segment routes are
# made in a function, and FastAPI must see their annotations evaluated.
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from unveil.server.auth import Admin, Editor, Viewer
from unveil.server.changes_api import gated
from unveil.server.guard import decoded_body
from unveil.server.services import Services, services
from unveil.service.changes import Expect
from unveil.service.errors import BadRequest
from unveil.service.flags import Change, FlagRecord, Part

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")
PROJECT = "/projects/{project}"
ENV = PROJECT + "/environments/{env}"
Svc = Annotated[Services, Depends(services)]
Reason = Annotated[str | None, Query(max_length=1000, description="Why, for the audit log")]
IfMatch = Annotated[str | None, Header(description="The ETag read before changing")]


def _etag(version: int) -> str:
    return f'"{version}"'


def _version_from(value: str | None) -> int | None:
    if value is None:
        return None
    raw = value.strip().removeprefix("W/").strip('"')
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise BadRequest(f"If-Match must be an ETag this server gave, not {value!r}")
    return int(raw)


def _item_response(record: FlagRecord, status: int = 200) -> JSONResponse:
    return JSONResponse(
        {
            "key": record.key,
            "version": record.version,
            "environment_version": record.version,
            "data": record.data,
        },
        status_code=status,
        headers={"ETag": _etag(record.version)},
    )


# -- projects and environments ------------------------------------------------------------


class Strict(BaseModel):
    """A request body that refuses fields it does not know."""

    model_config = ConfigDict(extra="forbid")


class NewProject(Strict):
    key: str = Field(description="Letters, digits, '_', '.', '-'; at most 100")
    name: str | None = None


class NewEnvironment(Strict):
    key: str = Field(description="Letters, digits, '_', '.', '-'; at most 100")


@router.get("/projects", tags=["projects"])
async def list_projects(_who: Viewer, svc: Svc) -> dict[str, Any]:
    """Every project with its environments and their versions."""
    return {"projects": await run_in_threadpool(svc.access.projects)}


@router.post("/projects", tags=["projects"], status_code=201)
async def create_project(body: NewProject, who: Admin, svc: Svc) -> dict[str, str]:
    await run_in_threadpool(svc.access.create_project, body.key, body.name, who.name)
    return {"key": body.key}


@router.post(PROJECT + "/environments", tags=["projects"], status_code=201)
async def create_environment(
    project: str, body: NewEnvironment, who: Admin, svc: Svc
) -> dict[str, str]:
    await run_in_threadpool(svc.access.create_environment, project, body.key, who.name)
    return {"key": body.key}


# -- flags and segments ---------------------------------------------------------------------


def _register_part(part: Part, singular: str) -> None:
    """The four routes of flags, and the same four of segments."""
    many = f"{ENV}/{part}"
    one = f"{many}/{{key:path}}"

    async def list_items(project: str, env: str, _who: Viewer, svc: Svc) -> dict[str, Any]:
        records = await run_in_threadpool(svc.flags.list_items, part, project, env)
        return {part: [{"key": r.key, "version": r.version, "data": r.data} for r in records]}

    async def get_item(project: str, env: str, key: str, _who: Viewer, svc: Svc) -> JSONResponse:
        record = await run_in_threadpool(svc.flags.get_item, part, project, env, key)
        return _item_response(record)

    async def put_item(
        project: str,
        env: str,
        key: str,
        who: Editor,
        svc: Svc,
        data: Annotated[dict[str, Any], Body(description=f"The {singular} in flags-file form")],
        if_match: IfMatch = None,
        if_none_match: Annotated[str | None, Header()] = None,
        reason: Reason = None,
    ) -> JSONResponse:
        expect = Expect(_version_from(if_match), if_none_match == "*")
        request, reason = await gated(
            svc, project, env, who, f"{singular}.put", key, {"data": data}, reason, expect
        )
        if request is not None:
            return request
        record = await run_in_threadpool(
            svc.flags.put_item,
            part,
            project,
            env,
            key,
            data,
            Change(who.name, reason),
            _version_from(if_match),
            if_none_match == "*",
        )
        return _item_response(record, 201 if record.created else 200)

    async def delete_item(
        project: str,
        env: str,
        key: str,
        who: Editor,
        svc: Svc,
        if_match: IfMatch = None,
        reason: Reason = None,
    ) -> Response:
        expect = Expect(_version_from(if_match))
        request, reason = await gated(
            svc, project, env, who, f"{singular}.delete", key, {}, reason, expect
        )
        if request is not None:
            return request
        await run_in_threadpool(
            svc.flags.delete_item,
            part,
            project,
            env,
            key,
            Change(who.name, reason),
            _version_from(if_match),
        )
        return Response(status_code=204)

    tags: list[str | Any] = [part]
    router.add_api_route(
        many,
        list_items,
        methods=["GET"],
        tags=tags,
        name=f"list_{part}",
        summary=f"Every {singular} of the environment, with its version",
    )
    router.add_api_route(
        one,
        get_item,
        methods=["GET"],
        tags=tags,
        name=f"get_{singular}",
        summary=f"One {singular}; its ETag goes back in If-Match",
    )
    router.add_api_route(
        one,
        put_item,
        methods=["PUT"],
        tags=tags,
        name=f"put_{singular}",
        summary=f"Create (201) or replace (200, needs If-Match) a {singular}",
        responses={
            201: {"description": "Created"},
            412: {"description": "Stale If-Match"},
            422: {"description": "Invalid"},
            428: {"description": "If-Match needed"},
        },
    )
    router.add_api_route(
        one,
        delete_item,
        methods=["DELETE"],
        tags=tags,
        status_code=204,
        name=f"delete_{singular}",
        summary=f"Delete a {singular} (needs If-Match)",
    )


_register_part("flags", "flag")
_register_part("segments", "segment")


# -- the whole document ---------------------------------------------------------------------


@router.get(ENV + "/document", tags=["document"])
async def export_document(project: str, env: str, _who: Viewer, svc: Svc) -> JSONResponse:
    """The environment's flags file, canonical; ETag is the environment's version."""
    snap = await run_in_threadpool(svc.flags.snapshot, project, env)
    # made in a worker thread: 10,000 flags are 3 MB of JSON, tens of milliseconds that
    # every other request (snapshots, streams) would wait on the event loop
    return await run_in_threadpool(
        JSONResponse, snap.document, headers={"ETag": _etag(snap.version)}
    )


_WHOLE_FILE = {
    "required": True,
    "content": {"application/json": {"schema": {"type": "object", "title": "A whole flags file"}}},
}


@router.put(ENV + "/document", tags=["document"], openapi_extra={"requestBody": _WHOLE_FILE})
async def apply_document(
    project: str,
    env: str,
    who: Editor,
    svc: Svc,
    document: Annotated[dict[str, Any], Depends(decoded_body)],
    dry_run: bool = False,
    reason: Reason = None,
    if_match: IfMatch = None,
) -> JSONResponse:
    """Make the environment exactly this document; idempotent. ``dry_run`` only diffs.

    If-Match (the ETag of an export) applies only if the environment has not
    changed since.
    """
    if not dry_run:
        expect = Expect(_version_from(if_match))
        request, reason = await gated(
            svc, project, env, who, "document.apply", "", {"document": document}, reason, expect
        )
        if request is not None:
            return request
    diff, version = await run_in_threadpool(
        svc.flags.apply_document,
        project,
        env,
        document,
        Change(who.name, reason),
        dry_run,
        _version_from(if_match),
    )
    return JSONResponse(
        {"diff": diff.as_data(), "changed": not diff.empty, "version": version, "dry_run": dry_run},
        headers={"ETag": _etag(version)},
    )


# -- audit, events ------------------------------------------------------------------------


async def _audit_filters(
    target: str | None = None,
    actor: str | None = None,
    since: Annotated[str | None, Query(description="RFC 3339: entries at or after")] = None,
    until: Annotated[str | None, Query(description="RFC 3339: entries before")] = None,
) -> dict[str, str | None]:
    return {"target": target, "actor": actor, "since": since, "until": until}


AuditFilters = Annotated[dict[str, str | None], Depends(_audit_filters)]


@router.get(ENV + "/audit", tags=["audit"])
async def audit(
    project: str, env: str, _who: Viewer, svc: Svc, filters: AuditFilters
) -> dict[str, Any]:
    """The environment's audit entries, oldest first, filtered by target, actor and time."""
    entries = await run_in_threadpool(lambda: svc.audit.entries(project, env, **filters))
    return {"entries": entries}


@router.get(ENV + "/events", tags=["events"])
async def event_counts(
    project: str, env: str, _who: Viewer, svc: Svc, flag: str | None = None
) -> dict[str, Any]:
    """Exposures and metrics counted per minute, flag, variant and metric."""
    env_id = await run_in_threadpool(svc.access.environment_of, project, env)
    return {"counts": await run_in_threadpool(svc.intake.counts, env_id, flag)}


@router.get("/audit", tags=["audit"])
async def global_audit(_who: Admin, svc: Svc, filters: AuditFilters) -> dict[str, Any]:
    """Changes outside any environment: projects, environments, tokens, users, metadata."""
    entries = await run_in_threadpool(lambda: svc.audit.entries(None, None, **filters))
    return {"entries": entries}


# -- flag metadata ---------------------------------------------------------------------------


def _meta_response(meta: dict[str, Any]) -> JSONResponse:
    return JSONResponse(meta, headers={"ETag": meta["etag"]})


@router.get(PROJECT + "/flags/{key}/meta", tags=["flags"])
async def get_meta(project: str, key: str, _who: Viewer, svc: Svc) -> JSONResponse:
    """What the flag is for: type, expected lifetime, tags, owner; ETag for If-Match."""
    return _meta_response(await run_in_threadpool(svc.meta.get, project, key))


@router.put(PROJECT + "/flags/{key}/meta", tags=["flags"])
async def put_meta(
    project: str,
    key: str,
    who: Editor,
    svc: Svc,
    meta: Annotated[dict[str, Any], Body(description="type, lifetime_days, tags, owner")],
    if_match: IfMatch = None,
) -> JSONResponse:
    """Create, or replace (needs If-Match), the flag's metadata."""
    return _meta_response(
        await run_in_threadpool(svc.meta.put, project, key, meta, who.name, if_match)
    )


# -- tokens and users ------------------------------------------------------------------------


class NewToken(Strict):
    name: str
    kind: Literal["admin", "sdk"]
    role: Literal["viewer", "editor", "releaser", "admin", "deployer"] | None = None
    project: str | None = None
    environment: str | None = None


class NewUser(Strict):
    name: str
    role: Literal["viewer", "editor", "releaser", "admin"]
    password: str


@router.get("/tokens", tags=["tokens"])
async def list_tokens(_who: Admin, svc: Svc) -> dict[str, Any]:
    """Every token, without secrets."""
    return {"tokens": await run_in_threadpool(svc.access.tokens)}


@router.post("/tokens", tags=["tokens"], status_code=201)
async def create_token(body: NewToken, who: Admin, svc: Svc) -> dict[str, Any]:
    """A new token: its id, name and secret; the secret is here and nowhere else, ever."""
    return await run_in_threadpool(
        svc.access.create_token_for,
        body.name,
        body.kind,
        body.role,
        body.project,
        body.environment,
        who.name,
    )


@router.delete("/tokens/{token_id}", tags=["tokens"], status_code=204)
async def revoke_token(token_id: int, who: Admin, svc: Svc) -> Response:
    await run_in_threadpool(svc.access.revoke_token, token_id, who.name)
    return Response(status_code=204)


@router.get("/users", tags=["users"])
async def list_users(_who: Admin, svc: Svc) -> dict[str, Any]:
    return {"users": await run_in_threadpool(svc.access.users)}


@router.post("/users", tags=["users"], status_code=201)
async def create_user(body: NewUser, who: Admin, svc: Svc) -> dict[str, str]:
    """A dashboard user; the password is kept only as an scrypt hash."""
    await run_in_threadpool(svc.access.create_user, body.name, body.role, body.password, who.name)
    return {"name": body.name}


# -- the cluster ------------------------------------------------------------------------------


@router.get("/cluster", tags=["operations"])
async def cluster(_who: Viewer, svc: Svc) -> dict[str, Any]:
    """This node, whether it does the background work, and every node seen lately."""
    nodes = await run_in_threadpool(svc.cluster.nodes)
    return {
        "node": svc.cluster.node,
        "leading": svc.link.leading.is_set(),
        "epoch": svc.link.epoch,
        "nodes": nodes,
    }
