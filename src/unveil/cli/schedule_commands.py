"""``unveil schedules``, and the ``--schedule AT [--until AT] [--tz ZONE]`` options.

Commands that change something (``flags enable|disable|rollout``,
``release start``) take ``--schedule`` to make the change later instead of
now: the server checks it at once and applies it at its time (see
docs/governance.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import click
from rich.table import Table

from unveil.cli.change_commands import opened_request
from unveil.cli.errors import field
from unveil.cli.remote import Remote, remote_options
from unveil.cli.render import show_table

__all__ = ["When", "post_schedule", "schedule_options", "schedules"]

env_option = click.option("--env", "-e", required=True, help="The environment.")


@dataclass(frozen=True, slots=True)
class When:
    """When a change is to happen (and end), as the options gave it."""

    at: str
    until: str | None = None
    time_zone: str | None = None


def schedule_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--schedule``, ``--until`` and ``--tz``, handed to the command as ``when``."""

    def wrapper(
        *args: Any, schedule: str | None, until: str | None, tz: str | None, **kwargs: Any
    ) -> Any:
        if schedule is None and (until is not None or tz is not None):
            raise click.UsageError("--until and --tz go with --schedule")
        when = None if schedule is None else When(schedule, until, tz)
        return command(*args, when=when, **kwargs)

    wrapper.__name__ = command.__name__
    wrapper.__doc__ = command.__doc__
    # the options already on ``command`` (click keeps them on the function) stay its own
    wrapper.__click_params__ = list(getattr(command, "__click_params__", []))  # type: ignore[attr-defined]
    for option in (
        click.option("--tz", default=None, help="The time zone of --schedule/--until times."),
        click.option("--until", default=None, help="With --schedule: when to undo the change."),
        click.option(
            "--schedule",
            default=None,
            metavar="AT",
            help="Make the change at AT (2026-12-04T18:00+01:00, or with --tz) instead of now.",
        ),
    ):
        wrapper = option(wrapper)
    return wrapper


def _path(remote: Remote, env: str, schedule_id: str = "", action: str = "") -> str:
    rest = "/schedules" + (f"/{quote(schedule_id, safe='')}" if schedule_id else "")
    return remote.env_path(env, rest + (f"/{action}" if action else ""))


def post_schedule(
    remote: Remote, env: str, when: When, action: str, reason: str | None, **change: Any
) -> dict[str, Any]:
    """Schedule ``action`` with its ``change`` (key, data, document or plan); the schedule."""
    body: dict[str, Any] = {"action": action, "at": when.at, **change}
    if when.until is not None:
        body["until"] = when.until
    if when.time_zone is not None:
        body["time_zone"] = when.time_zone
    if reason:
        body["reason"] = reason
    made = remote.json("POST", _path(remote, env), json=body)
    if not opened_request(made):
        click.echo(_line(made))
    return made


def _line(schedule: Mapping[str, Any]) -> str:
    until = schedule.get("until")
    ends = f" until {until}" if until else ""
    target = schedule.get("target") or "(document)"
    return (
        f"{field(schedule, 'id', str, 'schedule')}  {schedule.get('state')}  "
        f"{schedule.get('action')} {target} at {schedule.get('at')}{ends}"
    )


@click.group()
def schedules() -> None:
    """Changes scheduled for later: list, show, cancel."""


@schedules.command(name="list")
@env_option
@click.option(
    "--state", default=None, type=click.Choice(["pending", "applied", "failed", "cancelled"])
)
@remote_options
def list_(remote: Remote, env: str, state: str | None) -> None:
    """The environment's schedules, soonest first."""
    params = {"state": state} if state else None
    found = field(remote.json("GET", _path(remote, env), params=params), "schedules", list)
    table = Table(title=f"{remote.project} / {env}: schedules")
    for column in ("id", "state", "action", "target", "at", "until", "undoes", "outcome"):
        table.add_column(column, overflow="fold")
    for item in found:
        table.add_row(
            str(field(item, "id", str, "schedule")),
            str(item.get("state")),
            str(item.get("action")),
            str(item.get("target") or "(document)"),
            str(item.get("at")),
            str(item.get("until") or ""),
            str(item.get("undoes") or ""),
            str(item.get("outcome") or ""),
        )
    show_table(table)


@schedules.command()
@click.argument("schedule_id")
@env_option
@remote_options
def show(remote: Remote, schedule_id: str, env: str) -> None:
    """One schedule and what came of it."""
    found = remote.json("GET", _path(remote, env, schedule_id))
    click.echo(_line(found))
    for key in ("time_zone", "actor", "reason", "outcome", "undoes"):
        if found.get(key):
            click.echo(f"  {key}: {found[key]}")


@schedules.command()
@click.argument("schedule_id")
@env_option
@click.option("--reason", "-r", default=None, help="Why, for the audit log.")
@remote_options
def cancel(remote: Remote, schedule_id: str, env: str, reason: str | None) -> None:
    """Cancel a schedule that has not run."""
    body = {"reason": reason} if reason else None
    click.echo(_line(remote.json("POST", _path(remote, env, schedule_id, "cancel"), json=body)))
