"""The dashboard's guarded releases: start one from a flag, watch it live, step in.

The release page draws its live part on the server; the page's script opens
a server-sent-events stream that sends that part again whenever it changes
(the phase, the share, a decision, new metrics), so the page follows the
release without a reload and without a client-side framework.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool

from unveil.core import InvalidDocument, UnveilError
from unveil.release.errors import CommandRefused
from unveil.release.machine import Abort, Advance, Approve, Command, Pause, Resume
from unveil.release.reading import duration_text
from unveil.server.changes_api import gated
from unveil.server.dashboard.charts import Line, line_chart
from unveil.server.dashboard.forms import field_id
from unveil.server.dashboard.pages import (
    SECURITY_HEADERS,
    _by_field,
    _editing,
    _nav,
    _page,
    _redirect,
    _refused,
    _services,
    _viewer,
    _who,
    render,
)
from unveil.server.dashboard.sessions import cookie_secret
from unveil.server.services import Services
from unveil.service.access import Principal
from unveil.service.errors import Invalid
from unveil.service.metrics import GuardReader
from unveil.service.releases import Release
from unveil.service.schedules import ScheduleRequest

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_GUARD_ROWS = 3
_GUARD_FIELDS = ("name", "kind", "metric", "margin", "direction")
_OPTION_FIELDS = ("min_exposures", "window", "verification", "on_regression")
#: How often the live stream looks for a change, and how long one stream lasts
#: (the browser opens a new one by itself).
LIVE_EVERY = 1.0
LIVE_FOR = 3600.0
#: Live streams open at once, per session and on this node: each one reads and draws
#: its release every second, so they are bounded like any other work.
STREAMS_PER_SESSION = 4
STREAMS_IN_ALL = 100


class _Streams:
    """The live streams open on this node, by session (one event loop: no lock)."""

    def __init__(self) -> None:
        self.by_session: dict[str, int] = {}
        #: the live part of each watched release, drawn at most once a tick for all its
        #: viewers: (the release's version it shows, when it was drawn, the fragment)
        self.drawn: dict[tuple[str, str, str], tuple[int, float, str]] = {}

    async def fragment(self, svc: Services, project: str, env: str, release_id: str) -> str:
        """The release's live part: drawn again when the release moved (its version) or the
        last drawing is a tick old (new metrics); else the drawing another viewer caused."""
        loop = asyncio.get_running_loop()
        key = (project, env, release_id)
        release = await run_in_threadpool(svc.releases.get, project, env, release_id)
        found = self.drawn.get(key)
        if (
            found is not None
            and found[0] == release.version
            and loop.time() - found[1] < LIVE_EVERY * 0.9
        ):
            return found[2]
        values = await run_in_threadpool(_live_values, svc, project, env, release)
        fragment = render("_release_live.html", **values)
        if len(self.drawn) > STREAMS_IN_ALL:
            self.drawn.clear()
        self.drawn[key] = (release.version, loop.time(), fragment)
        return fragment

    def open(self, session: str) -> bool:
        if sum(self.by_session.values()) >= STREAMS_IN_ALL:
            return False
        if self.by_session.get(session, 0) >= STREAMS_PER_SESSION:
            return False
        self.by_session[session] = self.by_session.get(session, 0) + 1
        return True

    def close(self, session: str) -> None:
        left = self.by_session.get(session, 1) - 1
        if left > 0:
            self.by_session[session] = left
        else:
            self.by_session.pop(session, None)


def _streams(request: Request) -> _Streams:
    found: _Streams | None = getattr(request.app.state, "live_streams", None)
    if found is None:
        found = request.app.state.live_streams = _Streams()
    return found


_PHASE_WORDS = {
    "scheduled": "scheduled",
    "waiting_for_approval": "waiting for approval",
    "running": "running",
    "paused": "paused",
    "completed": "completed",
    "rolled_back": "rolled back",
    "aborted": "aborted",
}


def _env_page(project: str, env: str) -> str:
    return f"/p/{quote(project)}/{quote(env)}"


# -- the plan form ----------------------------------------------------------------


def _typed(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def plan_from_form(fields: dict[str, str], flag: str) -> dict[str, Any]:
    """A release plan from the start form: steps one per line (``5 1h``), guard rows, options."""
    steps: list[dict[str, Any]] = []
    for line in fields.get("steps", "").splitlines():
        words = line.replace("%", " ").split()
        if not words:
            continue
        step: dict[str, Any] = {"percent": _typed(words[0])}
        if len(words) > 1:
            step["hold"] = " ".join(words[1:])
        steps.append(step)
    guards = []
    for i in range(_GUARD_ROWS):
        row = {name: fields.get(f"g{i}.{name}", "").strip() for name in _GUARD_FIELDS}
        if not row["name"] and not row["metric"]:
            continue
        guard: dict[str, Any] = {k: v for k, v in row.items() if v}
        if "margin" in guard:
            guard["margin"] = _typed(guard["margin"])
        guards.append(guard)
    options: dict[str, Any] = {}
    for name in _OPTION_FIELDS:
        value = fields.get(f"options.{name}", "").strip()
        if value:
            options[name] = _typed(value) if name == "min_exposures" else value
    plan: dict[str, Any] = {
        "flag": flag,
        "control": fields.get("control", ""),
        "treatment": fields.get("treatment", ""),
        "steps": steps,
        "guards": guards,
    }
    if options:
        plan["options"] = options
    return plan


_WHEN = ("at", "until", "time_zone")
_PLAN_PATH = re.compile(
    r"^(?:plan\.)?(?:(steps)\[(\d+)\]|guards\[(\d+)\]\.?(\w*)|(options\.\w+)|(control|treatment|steps|guards))"
)


def plan_field(path: str) -> tuple[str, str]:
    """The form field a plan problem belongs to, and a prefix that says where in it."""
    if path in _WHEN:
        return path, ""
    found = _PLAN_PATH.match(path)
    if found is None:
        return "", ""
    steps, line, guard, part, option, whole = found.groups()
    if steps:
        return "steps", f"line {int(line) + 1}: "
    if guard is not None:
        return f"g{guard}.{part if part in _GUARD_FIELDS else 'name'}", ""
    if option:
        return option if option.split(".")[1] in _OPTION_FIELDS else "", ""
    return whole or "", ""


def _problems(exc: Invalid | InvalidDocument) -> list[tuple[str, str]]:
    shown = []
    for problem in exc.problems:
        name, where = plan_field(problem.path)
        shown.append(
            (name, where + problem.message if name else f"{problem.path}: {problem.message}")
        )
    return shown


async def _start_page(
    request: Request,
    who: Principal,
    project: str,
    env: str,
    key: str,
    fields: dict[str, str],
    problems: list[tuple[str, str]] | None = None,
    status: int = 200,
) -> HTMLResponse:
    svc = _services(request)
    record = await run_in_threadpool(svc.flags.get_item, "flags", project, env, key)
    variants = list(record.data.get("variants", {"on": True, "off": False}))
    return _page(
        request,
        "release_new.html",
        status,
        who=who,
        project=project,
        env=env,
        key=key,
        variants=variants,
        fields=fields,
        guard_rows=range(_GUARD_ROWS),
        problems=problems or [],
        errors=_by_field(problems or []),
        field_id=field_id,
    )


_DEFAULT_FORM = {
    "steps": "1 30m\n5 1h\n25 2h\n50 2h\n100",
    "g0.name": "errors",
    "g0.kind": "rate",
    "g0.metric": "errors",
    "options.min_exposures": "500",
    "options.verification": "1h",
}


@router.get("/p/{project}/{env}/flags/{key}/release")
async def start_page(request: Request, project: str, env: str, key: str) -> Response:
    who = await _viewer(request)
    if isinstance(who, Response):
        return who
    if not who.may("releaser"):
        return _refused(request, "starting a release needs the releaser role", who)
    record = await run_in_threadpool(_services(request).flags.get_item, "flags", project, env, key)
    variants = list(record.data.get("variants", {"on": True, "off": False}))
    fields = dict(_DEFAULT_FORM)
    fields["control"] = "off" if "off" in variants else variants[0]
    fields["treatment"] = "on" if "on" in variants else variants[-1]
    return await _start_page(request, who, project, env, key, fields)


@router.post("/p/{project}/{env}/flags/{key}/release")
async def start(request: Request, project: str, env: str, key: str) -> Response:
    """Start a guarded release of the flag with the form's plan (or open a change request)."""
    posted = await _editing(request)
    if isinstance(posted, HTMLResponse):
        return posted
    who, fields = posted
    svc = _services(request)
    if not who.may("releaser"):
        problems = [("", "starting a release needs the releaser role")]
        return await _start_page(request, who, project, env, key, fields, problems, 403)
    plan = plan_from_form(fields, key)
    at = fields.get("at", "").strip()
    try:
        if at:  # the release is created at that time (a scheduled change), as --schedule does
            asked = ScheduleRequest(
                action="release.start",
                at=at,
                plan=plan,
                time_zone=fields.get("time_zone", "").strip() or None,
            )
            opened, _ = await gated(
                svc, project, env, who, "schedule.create", key, {"schedule": asdict(asked)}, None
            )
            if opened is None:
                made = await run_in_threadpool(svc.schedules.create, project, env, asked, who.name)
                notice = f"The release is scheduled for {made.as_data()['at']}."
            else:
                notice = "A change request was opened: the schedule is made once it is approved."
            flag_page = f"{_env_page(project, env)}/flags/{quote(key)}"
            return _redirect(flag_page + "?" + urlencode({"notice": notice}))
        opened, _ = await gated(svc, project, env, who, "release.start", key, {"plan": plan}, None)
        if opened is not None:
            notice = "A change request was opened: the release starts once it is approved."
            return _redirect(
                f"{_env_page(project, env)}/flags/{quote(key)}?" + urlencode({"notice": notice})
            )
        release = await run_in_threadpool(svc.releases.start, project, env, plan, who.name, None)
    except (Invalid, InvalidDocument) as exc:
        return await _start_page(request, who, project, env, key, fields, _problems(exc), 422)
    except UnveilError as exc:
        return await _start_page(request, who, project, env, key, fields, [("", str(exc))], 409)
    return _redirect(f"{_env_page(project, env)}/releases/{quote(release.id)}")


# -- watching a release -----------------------------------------------------------


def _cumulative(
    windows: list[dict[str, Any]], variant: str, kind: str
) -> list[tuple[float, float]]:
    """Per window end, the variant's value so far: errors per exposure, or the mean."""
    points = []
    top = bottom = 0.0
    for w in sorted((w for w in windows if w["variant"] == variant), key=lambda w: w["start"]):
        top += w.get("sum", 0.0) if kind == "continuous" else w.get("count", 0)
        bottom += w.get("count", 0) if kind == "continuous" else w.get("exposures", 0)
        if bottom:
            end = datetime.fromisoformat(w["start"]).timestamp() + w.get("seconds", 10)
            points.append((end, top / bottom))
    return points


def _charts(svc: Services, project: str, env: str, release: Release) -> list[dict[str, Any]]:
    """One chart per guard on the SDK's metrics: treatment against control, so far."""
    plan = release.state.plan
    environment_id = svc.access.environment_of(project, env)
    now = datetime.now(UTC)
    since = max(release.state.created_at, now - timedelta(hours=23))
    reader = GuardReader(svc.intake.store)
    charts: list[dict[str, Any]] = []
    for guard in plan.guards:
        if guard.source.value != "sdk":
            charts.append({"name": guard.name, "svg": None, "note": "read from Prometheus"})
            continue
        found = reader.series(
            environment_id, plan.flag, guard.metric, since.isoformat(), now.isoformat()
        )
        kind = guard.kind.value
        lines = [
            Line(f"{name} ({variant})", _cumulative(found["windows"], variant, kind))
            for name, variant in (("control", plan.control), ("treatment", plan.treatment))
        ]
        what = "mean" if kind == "continuous" else "per exposure"
        svg = line_chart(f"{guard.name}: {guard.metric} {what}, treatment against control", lines)
        last = [(line.name, line.points[-1][1] if line.points else None) for line in lines]
        # line_chart escapes every text it is given: its markup is safe to place as it is
        shown = Markup(svg)  # noqa: S704
        charts.append({"name": guard.name, "svg": shown, "last": last, "what": what})
    return charts


def _live_values(svc: Services, project: str, env: str, release: Release) -> dict[str, Any]:
    state = release.state
    steps = []
    for i, step in enumerate(state.plan.steps):
        status = "done" if i < state.step else "current" if i == state.step else "to come"
        if state.phase.value in ("rolled_back", "aborted") and i >= state.step:
            status = "not reached" if i > state.step else state.phase.value.replace("_", " ")
        hold = duration_text(step.hold) if step.hold else ""
        steps.append({"percent": step.percent, "hold": hold, "status": status})
    data = release.as_data()
    return {
        "release": data,
        "phase_words": _PHASE_WORDS.get(state.phase.value, state.phase.value),
        "steps": steps,
        "decisions": list(reversed(data["state"]["history"]))[:50],
        "charts": _charts(svc, project, env, release),
    }


def _commands(who: Principal, release: Release) -> list[tuple[str, str]]:
    """The buttons this person may press now: (command, label)."""
    phase = release.state.phase.value
    found: list[tuple[str, str]] = []
    if phase in ("running", "scheduled", "waiting_for_approval") and who.may("editor"):
        found.append(("pause", "Pause"))
    if phase == "paused" and who.may("releaser"):
        found.append(("resume", "Resume"))
    if phase == "running" and who.may("releaser"):
        found.append(("advance", "Advance to the next step now"))
    if phase == "waiting_for_approval" and who.may("releaser"):
        found.append(("approve", "Approve"))
    if phase not in ("rolled_back", "aborted") and release.active and who.may("editor"):
        found.append(("abort", "Abort: control for everyone"))
    return found


@router.get("/p/{project}/{env}/releases")
async def releases_page(request: Request, project: str, env: str) -> Response:
    who = await _viewer(request)
    if isinstance(who, Response):
        return who
    svc = _services(request)
    projects = await run_in_threadpool(svc.access.projects)
    found = await run_in_threadpool(svc.releases.list, project, env, None, None)
    rows = [
        {**r.as_data(history=False), "phase_words": _PHASE_WORDS.get(r.state.phase.value, "")}
        for r in found
    ]
    return _page(
        request,
        "releases.html",
        who=who,
        project=project,
        env=env,
        envs=_nav(projects, project),
        projects=projects,
        section="releases",
        rows=rows,
    )


@router.get("/p/{project}/{env}/releases/{release_id}")
async def release_page(request: Request, project: str, env: str, release_id: str) -> Response:
    who = await _viewer(request)
    if isinstance(who, Response):
        return who
    svc = _services(request)
    projects = await run_in_threadpool(svc.access.projects)
    release = await run_in_threadpool(svc.releases.get, project, env, release_id)
    live = await run_in_threadpool(_live_values, svc, project, env, release)
    return _page(
        request,
        "release.html",
        who=who,
        project=project,
        env=env,
        envs=_nav(projects, project),
        projects=projects,
        section="releases",
        commands=_commands(who, release),
        notice=request.query_params.get("notice", ""),
        live_url=f"{_env_page(project, env)}/releases/{quote(release_id)}/live",
        **live,
    )


def _sse(fragment: str) -> str:
    return "event: update\n" + "".join(f"data: {line}\n" for line in fragment.splitlines()) + "\n"


@router.get("/p/{project}/{env}/releases/{release_id}/live")
async def release_live(request: Request, project: str, env: str, release_id: str) -> Response:
    """The release's live part, sent again each time it changes (server-sent events)."""
    who = await _who(request)
    if who is None:
        return Response("sign in first", 403)
    svc = _services(request)
    await run_in_threadpool(svc.releases.get, project, env, release_id)  # 404 before streaming
    secret = cookie_secret(request.headers.get("cookie")) or ""
    streams = _streams(request)
    if not streams.open(secret):
        return Response("too many live pages open; close some", 429, headers={"Retry-After": "5"})

    async def changes() -> AsyncIterator[str]:
        last = ""
        began = asyncio.get_running_loop().time()
        try:
            while asyncio.get_running_loop().time() - began < LIVE_FOR:
                if await request.is_disconnected():
                    return
                # signed out, expired or removed: the stream ends with the session
                if await run_in_threadpool(svc.sessions.authenticate, secret) is None:
                    return
                fragment = await streams.fragment(svc, project, env, release_id)
                if fragment != last:
                    last = fragment
                    yield _sse(fragment)
                else:
                    yield ": still here\n\n"
                await asyncio.sleep(LIVE_EVERY)
        finally:
            streams.close(secret)

    headers = {**SECURITY_HEADERS, "X-Accel-Buffering": "no"}
    return StreamingResponse(changes(), media_type="text/event-stream", headers=headers)


_COMMANDS = ("pause", "resume", "advance", "approve", "abort")


@router.post("/p/{project}/{env}/releases/{release_id}/{command}")
async def command(
    request: Request, project: str, env: str, release_id: str, command: str
) -> Response:
    """Pause, resume, advance, approve or abort, as the API does (and with its roles)."""
    posted = await _editing(request)
    if isinstance(posted, HTMLResponse):
        return posted
    who, fields = posted
    page = f"{_env_page(project, env)}/releases/{quote(release_id)}"
    if command not in _COMMANDS:
        return _redirect(page + "?" + urlencode({"notice": f"no such command: {command}"}))
    svc = _services(request)
    reason = fields.get("reason", "").strip()
    needs = "editor" if command in ("pause", "abort") else "releaser"
    if not who.may(needs):
        return _redirect(page + "?" + urlencode({"notice": f"{command} needs the {needs} role"}))
    made: Command
    if command == "pause":
        made = Pause(who.name, reason)
    elif command == "abort":
        made = Abort(who.name, reason, False)
    elif command == "resume":
        made = Resume(who.name)
    elif command == "advance":
        made = Advance(who.name)
    else:
        made = Approve(who.name)
    try:
        if command in ("resume", "advance"):
            opened, _ = await gated(
                svc, project, env, who, f"release.{command}", release_id, {}, None
            )
            if opened is not None:
                notice = "A change request was opened: it waits for approval."
                return _redirect(page + "?" + urlencode({"notice": notice}))
        await run_in_threadpool(svc.releases.command, project, env, release_id, made)
    except (CommandRefused, UnveilError) as exc:
        return _redirect(page + "?" + urlencode({"notice": str(exc)}))
    done = {"pause": "Paused.", "abort": "Aborted.", "resume": "Resumed.", "advance": "Advanced."}
    return _redirect(page + "?" + urlencode({"notice": done.get(command, "Approved.")}))
