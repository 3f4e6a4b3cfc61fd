"""The dashboard's pages: sign in and out, the flags of an environment, one flag.

Every page is rendered on the server; a change is a plain form post that
comes back as a redirect (post, redirect, get), so the browser's back button
and reload never repeat a change. A viewer gets the same pages without the
forms, and the server refuses the posts anyway.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from unveil.core import Flag, InvalidDocument, Rollout, UnveilError
from unveil.server.auth import PRINCIPAL
from unveil.server.changes_api import gated
from unveil.server.dashboard.forms import (
    OPERATORS,
    Editor,
    FormRefused,
    editor_from_data,
    editor_from_form,
    field_for,
    field_id,
    field_label,
    flag_with,
    read_form,
    segment_editor_from_data,
    segment_editor_from_form,
    segment_with,
    whole_number,
)
from unveil.server.dashboard.sessions import COOKIE, cookie_secret, csrf_matches, same_origin
from unveil.server.errors import error_response
from unveil.server.services import Services
from unveil.service.access import Principal
from unveil.service.changes import Expect
from unveil.service.errors import Forbidden, Invalid, NotFound, Overloaded, Unauthenticated
from unveil.service.events import EXPOSURE
from unveil.service.flags import Change, Part
from unveil.service.meta import FLAG_TYPES
from unveil.service.schedules import ScheduleRequest
from unveil.service.sessions import csrf_token

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_HERE = files("unveil.server.dashboard")
_TEMPLATES = Environment(
    loader=FileSystemLoader(str(_HERE / "templates")),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
#: Sent with every page: scripts and styles only from this server, never inline.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class _Refused(Exception):
    """A form post the dashboard will not carry out (forged, or by a viewer)."""


def _services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def _page(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
    who: Principal | None = values.get("who")
    secret = cookie_secret(request.headers.get("cookie"))
    html = _TEMPLATES.get_template(template).render(
        csrf=csrf_token(secret) if secret and who else "", **values
    )
    return HTMLResponse(html, status, headers=SECURITY_HEADERS)


def render(template: str, **values: Any) -> str:
    """A template drawn to text: a page's live part, sent again over its stream."""
    return _TEMPLATES.get_template(template).render(**values)


def _redirect(to: str, **headers: str) -> RedirectResponse:
    return RedirectResponse(to, 303, headers={**SECURITY_HEADERS, **headers})


async def _who(request: Request) -> Principal | None:
    """The signed-in user (the Guard has already found it for a post)."""
    known: Principal | None = request.scope.get("state", {}).get(PRINCIPAL)
    if known is not None:
        return known
    secret = cookie_secret(request.headers.get("cookie"))
    if secret is None:
        return None
    return await run_in_threadpool(_services(request).sessions.authenticate, secret)


def _sign_in_first(request: Request) -> RedirectResponse:
    return _redirect("/login?" + urlencode({"next": request.url.path}))


async def _viewer(request: Request) -> Principal | Response:
    """Whoever is signed in to look at a page, or the way to the sign-in page."""
    who = await _who(request)
    return _sign_in_first(request) if who is None else who


async def _form(request: Request, who: Principal | None) -> dict[str, str]:
    """The posted fields, once the CSRF token and the origin are shown to be right."""
    secret = cookie_secret(request.headers.get("cookie"))
    if who is None or secret is None:
        raise _Refused("sign in first")
    if not same_origin(request.headers):
        raise _Refused("the form was sent from another site")
    try:
        fields = read_form(await request.body())
    except FormRefused as exc:
        raise _Refused(f"the form could not be read: {exc}") from None
    if not csrf_matches(secret, fields.get("csrf")):
        raise _Refused("the form's security token is missing or out of date; reload the page")
    return fields


def _refused(request: Request, reason: str, who: Principal | None) -> HTMLResponse:
    return _page(request, "refused.html", 403, who=who, reason=reason)


async def _put(
    svc: Services,
    part: Part,
    project: str,
    env: str,
    key: str,
    data: dict[str, Any],
    who: Principal,
    reason: str | None,
    expect: Expect,
    fields: dict[str, str] | None = None,
) -> str | None:
    """Write a flag or segment as the API does, through the approval gate, now or at the
    time the form's When fields give: the notice to show when it did not happen now
    (a change request was opened, or the change was scheduled), else None."""
    singular = "flag" if part == "flags" else "segment"
    at = (fields or {}).get("at", "").strip()
    if at:
        until = (fields or {}).get("until", "").strip() or None
        zone = (fields or {}).get("time_zone", "").strip() or None
        asked = ScheduleRequest(
            action=f"{singular}.put",
            at=at,
            key=key,
            data=data,
            until=until,
            time_zone=zone,
            reason=reason,
        )
        opened, _ = await gated(
            svc, project, env, who, "schedule.create", key, {"schedule": asdict(asked)}, reason
        )
        if opened is not None:
            return _OPENED
        made = await run_in_threadpool(svc.schedules.create, project, env, asked, who.name)
        return f"Scheduled for {made.as_data()['at']} (schedule {made.row.id})."
    opened, written = await gated(
        svc, project, env, who, f"{singular}.put", key, {"data": data}, reason, expect
    )
    if opened is not None:
        return _OPENED
    await run_in_threadpool(
        svc.flags.put_item,
        part,
        project,
        env,
        key,
        data,
        Change(who.name, written),
        expect.if_match,
        expect.create_only,
    )
    return None


_OPENED = "A change request was opened: it waits for approval."


async def _editing(request: Request) -> tuple[Principal, dict[str, str]] | HTMLResponse:
    """The editor who posted and the form's fields, or the page refusing the post."""
    who = await _who(request)
    try:
        fields = await _form(request, who)
        if who is None or not who.may("editor"):
            raise _Refused("a viewer can change nothing")
    except _Refused as exc:
        return _refused(request, str(exc), who)
    return who, fields


def _version(fields: dict[str, str]) -> int:
    """The version the form was drawn at (its If-Match)."""
    return whole_number(fields.get("version", "")) or 0


def _by_field(problems: list[tuple[str, str]]) -> dict[str, list[str]]:
    """The problems of a form by the field they belong to, to draw them beside it."""
    errors: dict[str, list[str]] = {}
    for name, message in problems:
        if name:
            errors.setdefault(name, []).append(message)
    return errors


# -- signing in and out -------------------------------------------------------------


def _local(path: str | None) -> str:
    """Only a path on this server is followed after signing in (never another site)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


@router.get("/login")
async def login_page(request: Request, next: str | None = None) -> Response:
    return _page(request, "login.html", next=_local(next), error=None, name="")


@router.post("/login")
async def login(request: Request) -> Response:
    svc = _services(request)
    if not same_origin(request.headers):  # signing someone in from another site's page
        return _page(
            request,
            "login.html",
            403,
            next="/",
            error="the form was sent from another site",
            name="",
        )
    try:
        fields = read_form(await request.body())
    except FormRefused as exc:
        return _page(request, "login.html", 400, next="/", error=str(exc), name="")
    name, password = fields.get("name", ""), fields.get("password", "")
    target = _local(fields.get("next"))
    address = request.client.host if request.client else "unknown"
    try:
        signed = await run_in_threadpool(svc.sessions.sign_in, name, password, address)
    except Unauthenticated as exc:
        return _page(request, "login.html", 401, next=target, error=str(exc), name=name)
    except Overloaded as exc:
        page = _page(request, "login.html", 429, next=target, error=str(exc), name=name)
        page.headers["Retry-After"] = str(exc.retry_after)
        return page
    response = _redirect(target)
    response.set_cookie(
        COOKIE,
        signed.secret,
        max_age=int((signed.expires_at - datetime.now(UTC)).total_seconds()),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    who = await _who(request)
    try:
        await _form(request, who)
    except _Refused as exc:
        return _refused(request, str(exc), who)
    secret = cookie_secret(request.headers.get("cookie"))
    if secret is not None:
        await run_in_threadpool(_services(request).sessions.sign_out, secret)
    response = _redirect("/login")
    response.delete_cookie(COOKIE, path="/")
    return response


# -- flags --------------------------------------------------------------------------


def _state(data: dict[str, Any]) -> str:
    """One word for what a flag does now: off, on, or rolling out."""
    if not data.get("enabled", True):
        return "off"
    serves = [data.get("default")] + [r.get("serve") for r in data.get("rules", ())]
    if any(isinstance(s, dict) for s in serves):
        return "rolling out"
    return "on"


def _flag_state(flag: Flag) -> str:
    """``_state`` of a validated flag (what the list reads, from memory)."""
    if not flag.enabled:
        return "off"
    if isinstance(flag.default, Rollout) or any(isinstance(r.serve, Rollout) for r in flag.rules):
        return "rolling out"
    return "on"


@router.get("/")
async def home(request: Request) -> Response:
    who = await _viewer(request)
    if isinstance(who, Response):
        return who
    projects = await run_in_threadpool(_services(request).access.projects)
    for project in projects:
        if project["environments"]:
            env = project["environments"][0]["key"]
            return _redirect(f"/p/{quote(project['key'])}/{quote(env)}/flags")
    return _page(request, "empty.html", who=who)


async def _frame(request: Request, project: str) -> dict[str, Any]:
    projects = await run_in_threadpool(_services(request).access.projects)
    return {"projects": projects, "envs": _nav(projects, project)}


def _nav(projects: list[dict[str, Any]], project: str) -> list[str]:
    for p in projects:
        if p["key"] == project:
            return [e["key"] for e in p["environments"]]
    raise NotFound(f"no project '{project}'")


#: Flags shown on one page of the list (the page stays small however many there are).
PAGE_SIZE = 100


@router.get("/p/{project}/{env}/flags")
async def flags_page(
    request: Request,
    project: str,
    env: str,
    q: str = "",
    state: str = "",
    tag: str = "",
    type: str = "",
    owner: str = "",
    page: int = 1,
) -> Response:
    who = await _viewer(request)
    if isinstance(who, Response):
        return who
    svc = _services(request)
    projects = await run_in_threadpool(svc.access.projects)
    envs = _nav(projects, project)
    if env not in envs:
        raise NotFound(f"no environment '{env}' in project '{project}'")
    # the validated flags each node keeps in memory: no JSON to read for a whole list
    per_env: dict[str, Mapping[str, Flag]] = {}
    for e in envs:
        environment_id = await run_in_threadpool(svc.access.environment_of, project, e)
        loaded = await run_in_threadpool(svc.flags.loaded, environment_id)
        per_env[e] = loaded.ruleset.document.flags
    active = {r.flag for r in await run_in_threadpool(svc.releases.list, project, env, None, True)}
    metas = await run_in_threadpool(svc.meta.all, project)
    stale: dict[str, str] = {}
    if state == "stale":  # the report reads history and exposures: only when asked for
        report = await run_in_threadpool(svc.stale.report, project, env)
        stale = {f["key"]: "; ".join(r["text"] for r in f["reasons"]) for f in report["flags"]}
    rows = []
    for key, flag in sorted(per_env[env].items()):
        here = "under release" if key in active else _flag_state(flag)
        meta = metas.get(key, {})
        if q and q.lower() not in f"{key} {flag.description}".lower():
            continue
        if state == "stale":
            if key not in stale:
                continue
        elif state and state != here and not (state == "on" and here == "rolling out"):
            continue
        if (tag and tag not in meta.get("tags", ())) or (type and meta.get("type") != type):
            continue
        if owner and owner.lower() != str(meta.get("owner") or "").lower():
            continue
        rows.append(
            {
                "key": key,
                "description": flag.description,
                "state": here,
                "stale": stale.get(key, ""),
                "meta": meta,
                "states": {
                    e: _flag_state(per_env[e][key]) if key in per_env[e] else "" for e in envs
                },
            }
        )
    pages = max(1, -(-len(rows) // PAGE_SIZE))
    page = min(max(page, 1), pages)
    chosen: dict[str, Any] = {"q": q, "state": state, "tag": tag, "type": type, "owner": owner}
    here_query = urlencode({k: v for k, v in chosen.items() if v})
    return _page(
        request,
        "flags.html",
        who=who,
        project=project,
        env=env,
        envs=envs,
        projects=projects,
        section="flags",
        rows=rows[(page - 1) * PAGE_SIZE : page * PAGE_SIZE],
        matching=len(rows),
        page=page,
        pages=pages,
        query=here_query,
        total=len(per_env[env]),
        types=FLAG_TYPES,
        tags=sorted({t for m in metas.values() for t in m.get("tags", ())}),
        owners=sorted({str(m["owner"]) for m in metas.values() if m.get("owner")}),
        **chosen,
    )


def _served(svc: Services, project: str, env: str, key: str) -> list[tuple[str, int]]:
    """Per variant, how often it was served in the last hour (contexts per minute, summed)."""
    environment_id = svc.access.environment_of(project, env)
    since = (datetime.now(UTC) - timedelta(hours=1)).replace(second=0, microsecond=0)
    totals: dict[str, int] = {}
    for row in svc.intake.counts(environment_id, key, EXPOSURE, since):
        totals[row["variant"]] = totals.get(row["variant"], 0) + int(row["count"])
    return sorted(totals.items(), key=lambda kv: -kv[1])


def _history(svc: Services, project: str, env: str, key: str) -> list[dict[str, Any]]:
    """The flag's audit entries, newest first, each with the lines that changed."""
    entries = svc.audit.entries(project, env, target=key)
    shown = []
    for entry in reversed(entries[-200:]):
        before = _lines(entry.get("before"))
        after = _lines(entry.get("after"))
        removed = [line for line in before if line not in after]
        added = [line for line in after if line not in before]
        shown.append({**entry, "removed": removed, "added": added})
    return shown


def _lines(raw: Any) -> list[str]:
    """A stored before/after as sorted ``path: value`` lines, for a readable diff."""
    if raw is None:
        return []
    value = json.loads(raw) if isinstance(raw, str) else raw
    out: list[str] = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict) and node:
            for k, v in node.items():
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(node, list) and node and any(isinstance(x, dict | list) for x in node):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")
        else:
            out.append(f"{path}: {json.dumps(node, ensure_ascii=False)}")

    walk(value, "")
    return out


@router.get("/p/{project}/{env}/flags/{key}")
async def flag_page(request: Request, project: str, env: str, key: str) -> Response:
    who = await _viewer(request)
    if isinstance(who, Response):
        return who
    svc = _services(request)
    projects = await run_in_threadpool(svc.access.projects)
    envs = _nav(projects, project)
    record = await run_in_threadpool(svc.flags.get_item, "flags", project, env, key)
    served = await run_in_threadpool(_served, svc, project, env, key)
    history = await run_in_threadpool(_history, svc, project, env, key)
    try:
        meta = await run_in_threadpool(svc.meta.get, project, key)
    except NotFound:
        meta = None
    return _page(
        request,
        "flag.html",
        who=who,
        project=project,
        env=env,
        envs=envs,
        projects=projects,
        section="flags",
        key=key,
        flag=record.data,
        version=record.version,
        state=_state(record.data),
        served=served,
        history=history,
        may_edit=who.may("editor"),
        may_release=who.may("releaser"),
        meta=meta,
        types=FLAG_TYPES,
        pretty=lambda v: json.dumps(v, ensure_ascii=False),
        notice=request.query_params.get("notice", ""),
    )


@router.post("/p/{project}/{env}/flags/{key}/switch")
async def switch(request: Request, project: str, env: str, key: str) -> Response:
    """Turn a flag off or on: a first post asks to confirm, the second one changes it."""
    posted = await _editing(request)
    if isinstance(posted, HTMLResponse):
        return posted
    who, fields = posted
    svc = _services(request)
    turn_on = fields.get("to") == "on"
    record = await run_in_threadpool(svc.flags.get_item, "flags", project, env, key)
    reason = fields.get("reason", "").strip()
    page = f"/p/{quote(project)}/{quote(env)}/flags/{quote(key)}"
    values = {
        "who": who,
        "project": project,
        "env": env,
        "key": key,
        "turn_on": turn_on,
        "version": record.version,
        "reason": reason,
        "served": await run_in_threadpool(_served, svc, project, env, key),
        "off_variant": record.data.get("off_variant", "off"),
        "error": None,
        "when": {k: fields.get(k, "") for k in ("at", "until", "time_zone")},
    }
    if fields.get("confirmed") != "yes":
        return _page(request, "confirm_switch.html", **values)
    if not reason:
        values["error"] = "say why: the reason goes into the audit log"
        return _page(request, "confirm_switch.html", 422, **values)
    data = {**record.data, "enabled": turn_on}
    version = _version(fields)
    try:
        later = await _put(
            svc, "flags", project, env, key, data, who, reason, Expect(version), fields
        )
        if later is not None:
            return _redirect(page + "?" + urlencode({"notice": later}))
    except (Invalid, Forbidden, UnveilError) as exc:
        values["error"] = str(exc)
        return _page(request, "confirm_switch.html", 409, **values)
    word = "on" if turn_on else "off"
    return _redirect(page + "?" + urlencode({"notice": f"The flag is {word}."}))


# -- the rules editor -----------------------------------------------------------------


def _edit_page(
    request: Request,
    who: Principal,
    project: str,
    env: str,
    key: str,
    editor: Editor,
    version: int,
    reason: str = "",
    problems: list[tuple[str, str]] | None = None,
    status: int = 200,
    when: dict[str, str] | None = None,
) -> HTMLResponse:
    return _page(
        request,
        "edit.html",
        status,
        when=when or {},
        who=who,
        project=project,
        env=env,
        key=key,
        editor=editor,
        version=version,
        reason=reason,
        problems=problems or [],
        errors=_by_field(problems or []),
        operators=OPERATORS,
        field_id=field_id,
        field_label=field_label,
    )


@router.get("/p/{project}/{env}/flags/{key}/edit")
async def edit_page(request: Request, project: str, env: str, key: str) -> Response:
    who = await _viewer(request)
    if isinstance(who, Response):
        return who
    if not who.may("editor"):
        return _refused(request, "a viewer can change nothing", who)
    svc = _services(request)
    record = await run_in_threadpool(svc.flags.get_item, "flags", project, env, key)
    editor = editor_from_data(record.data)
    return _edit_page(request, who, project, env, key, editor, record.version)


@router.post("/p/{project}/{env}/flags/{key}/edit")
async def edit(request: Request, project: str, env: str, key: str) -> Response:
    """Redraw the form with a rule or condition added or removed, or save it."""
    posted = await _editing(request)
    if isinstance(posted, HTMLResponse):
        return posted
    who, fields = posted
    svc = _services(request)
    record = await run_in_threadpool(svc.flags.get_item, "flags", project, env, key)
    version = _version(fields)
    editor = editor_from_form(fields, list(record.data.get("variants", {"on": 1, "off": 0})))
    reason = fields.get("reason", "").strip()
    if fields.get("action") != "save":
        return _edit_page(request, who, project, env, key, editor, version, reason, when=fields)
    data = flag_with(record.data, editor)
    page = f"/p/{quote(project)}/{quote(env)}/flags/{quote(key)}"
    try:
        later = await _put(
            svc, "flags", project, env, key, data, who, reason or None, Expect(version), fields
        )
        if later is not None:
            return _redirect(page + "?" + urlencode({"notice": later}))
    except (InvalidDocument, Invalid) as exc:
        problems = [(field_for(p.path, key), p.message) for p in exc.problems]
        return _edit_page(
            request, who, project, env, key, editor, version, reason, problems, 422, fields
        )
    except UnveilError as exc:
        problems = [("", str(exc))]
        return _edit_page(
            request, who, project, env, key, editor, version, reason, problems, 409, fields
        )
    return _redirect(page + "?" + urlencode({"notice": "The targeting is saved."}))


# -- segments -------------------------------------------------------------------------


async def _segments_page(
    request: Request, who: Principal, project: str, env: str, error: str = "", new_key: str = ""
) -> HTMLResponse:
    svc = _services(request)
    projects = await run_in_threadpool(svc.access.projects)
    records = await run_in_threadpool(svc.flags.list_items, "segments", project, env)
    rows = [
        {
            "key": r.key,
            "description": r.data.get("description", ""),
            "include": len(r.data.get("include", ())),
            "rules": len(r.data.get("rules", ())),
        }
        for r in records
    ]
    return _page(
        request,
        "segments.html",
        422 if error else 200,
        who=who,
        project=project,
        env=env,
        envs=_nav(projects, project),
        projects=projects,
        section="segments",
        rows=rows,
        may_edit=who.may("editor"),
        error=error,
        new_key=new_key,
    )


@router.get("/p/{project}/{env}/segments")
async def segments_page(request: Request, project: str, env: str) -> Response:
    who = await _viewer(request)
    if isinstance(who, Response):
        return who
    return await _segments_page(request, who, project, env)


@router.post("/p/{project}/{env}/segments")
async def create_segment(request: Request, project: str, env: str) -> Response:
    """A new, empty segment (nobody in it), then its page to fill it in."""
    posted = await _editing(request)
    if isinstance(posted, HTMLResponse):
        return posted
    who, fields = posted
    svc = _services(request)
    key = fields.get("key", "").strip()
    try:
        await _put(svc, "segments", project, env, key, {}, who, None, Expect(None, True))
    except (InvalidDocument, Invalid) as exc:
        message = "; ".join(p.message for p in exc.problems)
        return await _segments_page(request, who, project, env, message, key)
    except UnveilError as exc:
        return await _segments_page(request, who, project, env, str(exc), key)
    return _redirect(f"/p/{quote(project)}/{quote(env)}/segments/{quote(key)}")


async def _segment_page(
    request: Request,
    who: Principal,
    project: str,
    env: str,
    key: str,
    editor: Any,
    version: int,
    reason: str = "",
    problems: list[tuple[str, str]] | None = None,
    status: int = 200,
) -> HTMLResponse:
    svc = _services(request)
    projects = await run_in_threadpool(svc.access.projects)
    return _page(
        request,
        "segment.html",
        status,
        who=who,
        project=project,
        env=env,
        envs=_nav(projects, project),
        projects=projects,
        section="segments",
        key=key,
        editor=editor,
        version=version,
        reason=reason,
        problems=problems or [],
        errors=_by_field(problems or []),
        operators=OPERATORS,
        field_id=field_id,
        field_label=field_label,
        may_edit=who.may("editor"),
        notice=request.query_params.get("notice", ""),
    )


@router.get("/p/{project}/{env}/segments/{key}")
async def segment_page(request: Request, project: str, env: str, key: str) -> Response:
    who = await _viewer(request)
    if isinstance(who, Response):
        return who
    record = await run_in_threadpool(
        _services(request).flags.get_item, "segments", project, env, key
    )
    editor = segment_editor_from_data(record.data)
    return await _segment_page(request, who, project, env, key, editor, record.version)


@router.post("/p/{project}/{env}/segments/{key}")
async def edit_segment(request: Request, project: str, env: str, key: str) -> Response:
    posted = await _editing(request)
    if isinstance(posted, HTMLResponse):
        return posted
    who, fields = posted
    svc = _services(request)
    record = await run_in_threadpool(svc.flags.get_item, "segments", project, env, key)
    version = _version(fields)
    editor = segment_editor_from_form(fields)
    reason = fields.get("reason", "").strip()
    if fields.get("action") != "save":
        return await _segment_page(request, who, project, env, key, editor, version, reason)
    data = segment_with(record.data, editor)
    page = f"/p/{quote(project)}/{quote(env)}/segments/{quote(key)}"
    try:
        expect = Expect(version)
        later = await _put(
            svc, "segments", project, env, key, data, who, reason or None, expect, fields
        )
        if later is not None:
            return _redirect(page + "?" + urlencode({"notice": later}))
    except (InvalidDocument, Invalid) as exc:
        problems = [(field_for(p.path, key, "segments"), p.message) for p in exc.problems]
        return await _segment_page(
            request, who, project, env, key, editor, version, reason, problems, 422
        )
    except UnveilError as exc:
        return await _segment_page(
            request, who, project, env, key, editor, version, reason, [("", str(exc))], 409
        )
    return _redirect(page + "?" + urlencode({"notice": "The segment is saved."}))


def error_page(request: Request, exc: Exception) -> HTMLResponse:
    """A refusal as a page (the API answers the same errors as JSON)."""
    answer = error_response(exc)
    message = json.loads(bytes(answer.body)).get("error", "something went wrong")
    return _page(request, "refused.html", answer.status_code, who=None, reason=message)


@router.post("/p/{project}/{env}/flags/{key}/meta")
async def edit_meta(request: Request, project: str, env: str, key: str) -> Response:
    """What the flag is for: type, owner, tags, expected lifetime (for the whole project)."""
    posted = await _editing(request)
    if isinstance(posted, HTMLResponse):
        return posted
    who, fields = posted
    page = f"/p/{quote(project)}/{quote(env)}/flags/{quote(key)}"
    lifetime = fields.get("lifetime_days", "").strip()
    data: dict[str, Any] = {
        "type": fields.get("type", "release"),
        "tags": [t.strip() for t in fields.get("tags", "").split(",") if t.strip()],
    }
    if lifetime:
        data["lifetime_days"] = _typed_number(lifetime)
    if fields.get("owner", "").strip():
        data["owner"] = fields["owner"].strip()
    etag = fields.get("etag") or None
    try:
        await run_in_threadpool(_services(request).meta.put, project, key, data, who.name, etag)
    except (Invalid, UnveilError) as exc:
        problems = getattr(exc, "problems", ())
        text = "; ".join(f"{p.path}: {p.message}" for p in problems) or str(exc)
        return _redirect(page + "?" + urlencode({"notice": f"Not saved: {text}"}))
    return _redirect(page + "?" + urlencode({"notice": "The metadata is saved."}))


def _typed_number(text: str) -> Any:
    """A whole number typed in a form, or the text itself for the validation to name."""
    found = whole_number(text)
    return text if found is None else found
