"""The dashboard's governance pages: scheduled changes, the approvals inbox, webhooks.

Scheduling is offered where a change is made (the kill switch, the rules
editor); these pages list what is waiting and let people cancel, approve,
reject or withdraw, with the API's roles: the server refuses what a page
does not offer.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from unveil.core import UnveilError
from unveil.server.dashboard.pages import (
    _editing,
    _frame,
    _lines,
    _page,
    _redirect,
    _services,
    _viewer,
)
from unveil.service.webhooks import EVENTS

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


def _base(project: str, env: str) -> str:
    return f"/p/{quote(project)}/{quote(env)}"


# -- scheduled changes ------------------------------------------------------------


@router.get("/p/{project}/{env}/schedules")
async def schedules_page(request: Request, project: str, env: str) -> Response:
    who = await _viewer(request)
    if isinstance(who, Response):
        return who
    svc = _services(request)
    found = await run_in_threadpool(svc.schedules.list, project, env, None)
    return _page(
        request,
        "schedules.html",
        who=who,
        project=project,
        env=env,
        section="schedules",
        rows=[s.as_data() for s in found],
        may_edit=who.may("editor"),
        notice=request.query_params.get("notice", ""),
        **await _frame(request, project),
    )


@router.post("/p/{project}/{env}/schedules/{schedule_id}/cancel")
async def cancel_schedule(request: Request, project: str, env: str, schedule_id: str) -> Response:
    posted = await _editing(request)
    if isinstance(posted, HTMLResponse):
        return posted
    who, fields = posted
    page = f"{_base(project, env)}/schedules"
    reason = fields.get("reason", "").strip() or None
    try:
        await run_in_threadpool(
            _services(request).schedules.cancel, project, env, schedule_id, who.name, reason
        )
    except UnveilError as exc:
        return _redirect(page + "?" + urlencode({"notice": str(exc)}))
    return _redirect(page + "?" + urlencode({"notice": f"Schedule {schedule_id} is cancelled."}))


# -- change requests --------------------------------------------------------------


def _shown(request_data: dict[str, Any]) -> dict[str, Any]:
    """A change request with its diff as the lines that go and the lines that come."""
    diff = request_data.get("diff") or {}
    before, after = _lines(diff.get("before")), _lines(diff.get("after"))
    return {
        **request_data,
        "removed": [line for line in before if line not in after],
        "added": [line for line in after if line not in before],
    }


@router.get("/p/{project}/{env}/changes")
async def changes_page(request: Request, project: str, env: str) -> Response:
    who = await _viewer(request)
    if isinstance(who, Response):
        return who
    svc = _services(request)
    found = await run_in_threadpool(svc.changes.list, project, env, None)
    rows = [_shown(c.as_data()) for c in found]
    return _page(
        request,
        "changes.html",
        who=who,
        project=project,
        env=env,
        section="changes",
        open_rows=[r for r in rows if r["state"] == "open"],
        closed_rows=[r for r in rows if r["state"] != "open"][:50],
        may_decide=who.may("releaser"),
        may_edit=who.may("editor"),
        requires_approval=await run_in_threadpool(svc.changes.requires_approval, project, env),
        notice=request.query_params.get("notice", ""),
        **await _frame(request, project),
    )


_DECISIONS = {"approve": "releaser", "reject": "releaser", "withdraw": "editor"}


@router.post("/p/{project}/{env}/changes/{change_id}/{decision}")
async def decide(
    request: Request, project: str, env: str, change_id: str, decision: str
) -> Response:
    """Approve, reject or withdraw a change request (the service refuses the requester's own
    approval, and anyone else's withdrawal)."""
    posted = await _editing(request)
    if isinstance(posted, HTMLResponse):
        return posted
    who, fields = posted
    page = f"{_base(project, env)}/changes"
    needs = _DECISIONS.get(decision)
    if needs is None:
        return _redirect(page + "?" + urlencode({"notice": f"no such decision: {decision}"}))
    if not who.may(needs):
        return _redirect(page + "?" + urlencode({"notice": f"{decision} needs the {needs} role"}))
    svc = _services(request)
    comment = fields.get("comment", "").strip() or None
    try:
        if decision == "approve":
            done = await run_in_threadpool(
                svc.changes.approve, project, env, change_id, who.name, comment
            )
        elif decision == "reject":
            done = await run_in_threadpool(
                svc.changes.reject, project, env, change_id, who.name, comment
            )
        else:
            done = await run_in_threadpool(svc.changes.withdraw, project, env, change_id, who.name)
    except UnveilError as exc:
        return _redirect(page + "?" + urlencode({"notice": str(exc)}))
    outcome = done.as_data().get("outcome") or done.as_data()["state"]
    return _redirect(page + "?" + urlencode({"notice": f"Change {change_id}: {outcome}."}))


# -- webhooks ---------------------------------------------------------------------


@router.get("/p/{project}/{env}/webhooks")
async def webhooks_page(request: Request, project: str, env: str) -> Response:
    who = await _viewer(request)
    if isinstance(who, Response):
        return who
    svc = _services(request)
    subscriptions = await run_in_threadpool(svc.webhooks.subscriptions, project)
    rows = []
    for subscription in subscriptions:
        deliveries = await run_in_threadpool(
            svc.webhooks.deliveries, project, subscription["id"], 10
        )
        rows.append({**subscription, "deliveries": deliveries})
    return _page(
        request,
        "webhooks.html",
        who=who,
        project=project,
        env=env,
        section="webhooks",
        rows=rows,
        events=EVENTS,
        may_admin=who.may("admin"),
        notice=request.query_params.get("notice", ""),
        secret=None,
        **await _frame(request, project),
    )


@router.post("/p/{project}/{env}/webhooks")
async def create_webhook(request: Request, project: str, env: str) -> Response:
    """Subscribe a URL to events; the page shows the signing secret this once."""
    posted = await _editing(request)
    if isinstance(posted, HTMLResponse):
        return posted
    who, fields = posted
    page = f"{_base(project, env)}/webhooks"
    if not who.may("admin"):
        return _redirect(page + "?" + urlencode({"notice": "webhooks need the admin role"}))
    svc = _services(request)
    events = [name for name in EVENTS if fields.get(f"event.{name}")]
    try:
        made = await run_in_threadpool(
            svc.webhooks.subscribe,
            project,
            fields.get("url", "").strip(),
            events,
            None,
            fields.get("format", "json") or "json",
            who.name,
        )
    except UnveilError as exc:
        return _redirect(page + "?" + urlencode({"notice": str(exc)}))
    return _page(
        request,
        "webhook_made.html",
        201,
        who=who,
        project=project,
        env=env,
        section="webhooks",
        made=made,
        **await _frame(request, project),
    )


# -- launches ---------------------------------------------------------------------


@router.get("/p/{project}/{env}/launches")
async def launches_page(request: Request, project: str, env: str) -> Response:
    """The project's launches as a calendar: upcoming, in progress, recent."""
    who = await _viewer(request)
    if isinstance(who, Response):
        return who
    calendar = await run_in_threadpool(_services(request).launches.calendar, project)
    return _page(
        request,
        "launches.html",
        who=who,
        project=project,
        env=env,
        section="launches",
        calendar=calendar,
        may_edit=who.may("editor"),
        notice=request.query_params.get("notice", ""),
        **await _frame(request, project),
    )


@router.post("/p/{project}/{env}/launches/{launch_id}/stop")
async def stop_launch(request: Request, project: str, env: str, launch_id: str) -> Response:
    """The launch's kill switch: every flag it changed turned back (never waits for approval)."""
    posted = await _editing(request)
    if isinstance(posted, HTMLResponse):
        return posted
    who, fields = posted
    page = f"{_base(project, env)}/launches"
    reason = fields.get("reason", "").strip() or None
    try:
        await run_in_threadpool(
            _services(request).launches.stop, project, launch_id, who.name, reason
        )
    except UnveilError as exc:
        return _redirect(page + "?" + urlencode({"notice": str(exc)}))
    return _redirect(page + "?" + urlencode({"notice": f"Launch {launch_id} is stopped."}))
