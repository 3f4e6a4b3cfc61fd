"""``unveil templates`` (release templates) and ``unveil launches`` (named business releases).

A template is a plan file without ``flag`` and ``environment``; ``release
start --template NAME -f FLAG`` and launches use it. A launch file holds
its name, notes, owner, planned time and changes (docs/launches.md):

    name: Gift cards
    notes: |
      Gift cards are here!
    planned_at: 2026-12-03T09:00:00+01:00
    changes:
      - {environment: production, flag: gift-cards, enabled: true}
      - {environment: production, flag: new-checkout, release: {template: careful}}
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
from rich.console import Console
from rich.table import Table

from unveil.cli.errors import CliError, field
from unveil.cli.remote import Remote, remote_options
from unveil.sdk.files import format_of, read_data

__all__ = ["launches", "template_plan", "templates"]


def _project(remote: Remote, rest: str) -> str:
    return f"/api/v1/projects/{quote(remote.project, safe='')}{rest}"


def _read(path: Path) -> Any:
    return read_data(path.read_text(encoding="utf-8"), format_of(path), str(path))


def template_plan(remote: Remote, name: str) -> dict[str, Any]:
    """The plan fields of the project's template ``name`` (the server's answer)."""
    found = remote.json("GET", _project(remote, f"/templates/{quote(name, safe='')}"))
    return dict(field(found, "plan", dict, "template"))


# -- templates --------------------------------------------------------------------------------


@click.group()
def templates() -> None:
    """Release templates: named plans (steps, holds, guards, window) without a flag."""


@templates.command(name="list")
@remote_options
def templates_list(remote: Remote) -> None:
    """The project's templates."""
    found = field(remote.json("GET", _project(remote, "/templates")), "templates", list)
    table = Table(title=f"{remote.project}: release templates")
    for column in ("name", "steps", "guards", "version", "description"):
        table.add_column(column, overflow="fold")
    for item in found:
        plan = item.get("plan") or {}
        steps = " → ".join(f"{s.get('percent')}%" for s in plan.get("steps", []))
        guards = ", ".join(str(g.get("name")) for g in plan.get("guards", []))
        table.add_row(
            str(item.get("name")), steps, guards, str(item.get("version")),
            str(item.get("description") or ""),
        )  # fmt: skip
    Console().print(table)


@templates.command(name="show")
@click.argument("name")
@remote_options
def templates_show(remote: Remote, name: str) -> None:
    """One template, as JSON."""
    import json

    click.echo(json.dumps(template_plan(remote, name), indent=2))


@templates.command(name="save")
@click.argument("name")
@click.argument("path", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--description", "-d", default=None, help="What it is for.")
@remote_options
def templates_save(remote: Remote, name: str, path: Path, description: str | None) -> None:
    """Save the plan in PATH (without flag and environment) as template NAME."""
    body: dict[str, Any] = {"plan": _read(path)}
    if description:
        body["description"] = description
    saved = remote.json("PUT", _project(remote, f"/templates/{quote(name, safe='')}"), json=body)
    click.echo(f"saved: template {saved.get('name')} (version {saved.get('version')})")


@templates.command(name="delete")
@click.argument("name")
@remote_options
def templates_delete(remote: Remote, name: str) -> None:
    """Remove template NAME."""
    remote.call("DELETE", _project(remote, f"/templates/{quote(name, safe='')}"))
    click.echo(f"removed: template {name}")


# -- launches ---------------------------------------------------------------------------------


def _launch_line(launch: Mapping[str, Any]) -> str:
    when = launch.get("planned_at") or "not planned"
    flags = ", ".join(launch.get("flags") or [])
    state = str(launch.get("state", "")).replace("_", " ")
    return f"{launch.get('id')}  {launch.get('name')}  {state}  {when}  [{flags}]"


@click.group()
def launches() -> None:
    """Launches: named business releases of several flags, started and stopped together."""


@launches.command(name="list")
@remote_options
def launches_list(remote: Remote) -> None:
    """The calendar: upcoming, in progress, recent."""
    calendar = remote.json("GET", _project(remote, "/launches"))
    table = Table(title=f"{remote.project}: launches")
    for column in ("when", "id", "name", "state", "owner", "environments", "flags"):
        table.add_column(column, overflow="fold")
    for section in ("upcoming", "in_progress", "recent"):
        items = field(calendar, section, list, "calendar")
        table.add_section()
        for item in items:
            when = item.get("planned_at") if section == "upcoming" else item.get("started_at")
            table.add_row(
                str(when or "-")[:19],
                str(item.get("id")),
                str(item.get("name")),
                str(item.get("state", "")).replace("_", " "),
                str(item.get("owner")),
                ", ".join(item.get("environments") or []),
                ", ".join(item.get("flags") or []),
            )
    Console().print(table)


@launches.command(name="create")
@click.argument("path", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@remote_options
def launches_create(remote: Remote, path: Path) -> None:
    """Plan the launch described in PATH (refused whole, by field, if it could not start)."""
    data = _read(path)
    if not isinstance(data, Mapping):
        raise CliError(f"{path}: a launch file is a mapping (name, notes, changes...)")
    made = remote.json("POST", _project(remote, "/launches"), json=dict(data))
    click.echo(f"planned: {_launch_line(made)}")


@launches.command(name="show")
@click.argument("launch_id")
@remote_options
def launches_show(remote: Remote, launch_id: str) -> None:
    """One launch: its notes, changes and what came of them."""
    found = remote.json("GET", _project(remote, f"/launches/{quote(launch_id, safe='')}"))
    click.echo(_launch_line(found))
    click.echo(f"owner: {found.get('owner')}")
    if found.get("outcome"):
        click.echo(f"outcome: {found['outcome']}")
    click.echo("")
    click.echo(str(found.get("notes", "")))


@launches.command(name="start")
@click.argument("launch_id")
@remote_options
def launches_start(remote: Remote, launch_id: str) -> None:
    """Start it now, all of its changes together (or ask for approval where required)."""
    path = _project(remote, f"/launches/{quote(launch_id, safe='')}/start")
    started = remote.json("POST", path)
    click.echo(f"{_launch_line(started)}")
    for env, approval in (started.get("approvals") or {}).items():
        if started.get("state") == "waiting_for_approval":
            click.echo(
                f"  waits for approval in {env}: change request {approval['change_request']}"
            )


@launches.command(name="stop")
@click.argument("launch_id")
@click.option("--reason", "-r", default=None, help="Why, for the audit log and the webhook.")
@remote_options
def launches_stop(remote: Remote, launch_id: str, reason: str | None) -> None:
    """The kill switch: every flag of the launch back as it was, its releases aborted."""
    path = _project(remote, f"/launches/{quote(launch_id, safe='')}/stop")
    stopped = remote.json("POST", path, json={"reason": reason} if reason else None)
    click.echo(f"stopped: {_launch_line(stopped)}")
