"""``unveil release``: start guarded releases from plans kept as code, watch and command them.

A plan lives in a file of its own (YAML or JSON, docs/release-plans.md) or
in a releases file beside the flags file, which holds several:

    releases:
      - {flag: new-checkout, control: off, treatment: on, steps: [...]}
      - {flag: search-v2, ...}

``start`` picks the plan of ``--flag`` from such a file (or the only one).
``check`` reads the plans offline, naming every problem, so that a review
or CI can refuse a bad plan before anyone starts it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
from rich.table import Table

from unveil.cli.change_commands import opened_request
from unveil.cli.errors import CliError, field
from unveil.cli.launch_commands import template_plan
from unveil.cli.remote import Remote, remote_options
from unveil.cli.render import show_table
from unveil.cli.schedule_commands import When, post_schedule
from unveil.core import InvalidDocument, Problem
from unveil.release.plan import parse_plan
from unveil.release.templates import plan_from_template
from unveil.sdk.files import format_of, read_data

__all__ = ["release"]

env_option = click.option("--env", "-e", required=True, help="The environment.")
#: what ``check`` puts in a plan that leaves its environment to ``start --env``
UNNAMED_ENVIRONMENT = "any"
#: decisions shown by ``status`` (the API has them all)
SHOWN_DECISIONS = 12


def _plans_in(path: Path) -> list[Any]:
    """The plans a file holds: one plan, or a releases file's ``releases``."""
    text = path.read_text(encoding="utf-8")
    data = read_data(text, format_of(path), str(path))
    if isinstance(data, Mapping) and "releases" in data:
        plans = data["releases"]
        if isinstance(plans, Mapping):  # keyed by flag: the key is the plan's flag
            return [{"flag": k, **v} if isinstance(v, Mapping) else v for k, v in plans.items()]
        if not isinstance(plans, list):
            raise InvalidDocument([Problem("releases", "must be a list of plans")])
        return list(plans)
    return [data]


def _pick(plans: Sequence[Any], flag: str | None, path: Path) -> Any:
    if flag is None:
        if len(plans) != 1:
            raise CliError(f"{path} holds {len(plans)} plans: name one with --flag")
        return plans[0]
    found = [p for p in plans if isinstance(p, Mapping) and p.get("flag") == flag]
    if not found:
        raise CliError(f"{path} has no plan for flag '{flag}'")
    return found[0]


def _path(remote: Remote, env: str, release_id: str = "", action: str = "") -> str:
    rest = "/releases" + (f"/{quote(release_id, safe='')}" if release_id else "")
    return remote.env_path(env, rest + (f"/{action}" if action else ""))


def _line(release: Mapping[str, Any]) -> str:
    phase = str(field(release, "phase", str, "release"))
    percent = release.get("percent")
    step, steps = release.get("step"), release.get("steps")
    where = (
        f"step {int(step) + 1}/{steps}" if isinstance(step, int) and step >= 0 else "not started"
    )
    return f"{release.get('id')}  {release.get('flag')}  {phase}  {where}  {percent}% treatment"


@click.group()
def release() -> None:
    """Guarded releases: start from a plan, watch, pause, resume, advance, abort."""


@release.command()
@click.argument("path", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--env", "-e", default=None, help="The environment, for plans that leave it to `start`."
)
def check(path: Path, env: str | None) -> None:
    """Read every plan of a file offline; exit 1 naming every problem of the first bad one.

    A plan may leave out its environment: ``start --env`` gives it.
    """
    plans = _plans_in(path)
    for index, plan in enumerate(plans):
        try:
            if isinstance(plan, Mapping) and "environment" not in plan:
                plan = {**plan, "environment": env or UNNAMED_ENVIRONMENT}
            parse_plan(plan)
        except InvalidDocument as exc:
            where = f"releases[{index}]." if len(plans) > 1 else ""
            raise InvalidDocument(
                [Problem(f"{where}{p.path}", p.message) for p in exc.problems]
            ) from None
    click.echo(f"valid: {path} ({len(plans)} plan{'s' if len(plans) != 1 else ''})")


@release.command()
@click.argument(
    "path", required=False, type=click.Path(dir_okay=False, exists=True, path_type=Path)
)
@env_option
@click.option("--flag", "-f", default=None, help="The plan's flag, when the file holds several.")
@click.option(
    "--template", default=None, help="Use the project's release template NAME (needs --flag)."
)
@click.option("--control", default=None, help="With --template: the control variant.")
@click.option("--treatment", default=None, help="With --template: the treatment variant.")
@click.option(
    "--at",
    "start_at",
    default=None,
    help="Start no earlier than this RFC 3339 time (with its offset).",
)
@click.option(
    "--schedule",
    "schedule_at",
    default=None,
    metavar="AT",
    help="Create the release at AT (a scheduled change, see `unveil schedules`).",
)
@click.option("--tz", default=None, help="The time zone of --schedule.")
@remote_options
def start(
    remote: Remote,
    path: Path | None,
    env: str,
    flag: str | None,
    template: str | None,
    control: str | None,
    treatment: str | None,
    start_at: str | None,
    schedule_at: str | None,
    tz: str | None,
) -> None:
    """Start a release of the plan in PATH (or of a --template); a bad plan starts nothing."""
    if (path is None) == (template is None):
        raise click.UsageError("give a plan file PATH or --template NAME (one of them)")
    if template is not None:
        if flag is None:
            raise click.UsageError("--template needs --flag: the flag to release")
        plan: Any = plan_from_template(
            template_plan(remote, template), flag, env, control, treatment
        )
    else:
        assert path is not None
        plan = _pick(_plans_in(path), flag, path)
    if schedule_at is not None and start_at is not None:
        raise click.UsageError(
            "--at makes the release now and lets it wait; --schedule makes it later: "
            "give one of them"
        )
    if schedule_at is not None:
        post_schedule(remote, env, When(schedule_at, None, tz), "release.start", None, plan=plan)
        return
    body: dict[str, Any] = {"plan": plan}
    if start_at is not None:
        try:
            when = datetime.fromisoformat(start_at)
        except ValueError:
            raise CliError(f"--at: {start_at!r} is not an RFC 3339 time") from None
        if when.tzinfo is None:
            raise CliError(f"--at: {start_at!r} needs its offset from UTC, e.g. 'Z' or '+01:00'")
        body["start_at"] = when.isoformat()
    answer = remote.json("POST", _path(remote, env), json=body)
    if opened_request(answer):
        return
    click.echo(f"started: {_line(answer)}")
    _history(answer, 3)


@release.command(name="list")
@env_option
@click.option("--flag", "-f", default=None, help="Only this flag's releases.")
@click.option("--active", is_flag=True, help="Only releases still running (or waiting).")
@remote_options
def list_(remote: Remote, env: str, flag: str | None, active: bool) -> None:
    """The environment's releases, newest first."""
    params: dict[str, str] = {}
    if flag:
        params["flag"] = flag
    if active:
        params["active"] = "true"
    found = field(remote.json("GET", _path(remote, env), params=params), "releases", list)
    table = Table(title=f"{remote.project} / {env}: releases")
    for column in ("id", "flag", "phase", "step", "treatment", "updated"):
        table.add_column(column)
    for item in found:
        step, steps = item.get("step"), item.get("steps")
        shown = f"{step + 1}/{steps}" if isinstance(step, int) and step >= 0 else "-"
        table.add_row(
            str(field(item, "id", str, "release")),
            str(item.get("flag")),
            str(item.get("phase")).replace("_", " "),
            shown,
            f"{item.get('percent')}%",
            str(item.get("updated_at", ""))[:19],
        )
    show_table(table)


def _history(answer: Mapping[str, Any], last: int) -> None:
    state = answer.get("state")
    history = state.get("history") if isinstance(state, Mapping) else None
    if not isinstance(history, list):
        return
    for entry in history[-last:]:
        if isinstance(entry, Mapping):
            click.echo(f"  {str(entry.get('at', ''))[:19]}  {entry.get('text', '')}")


@release.command()
@click.argument("release_id")
@env_option
@remote_options
def status(remote: Remote, release_id: str, env: str) -> None:
    """Where a release is, what it waits for, and its latest decisions with their reasons."""
    answer = remote.json("GET", _path(remote, env, release_id))
    click.echo(_line(answer))
    for key, words in (
        ("hold_ends_at", "hold ends"),
        ("verification_ends_at", "verification ends"),
    ):
        if answer.get(key):
            click.echo(f"  {words}: {answer[key]}")
    _history(answer, SHOWN_DECISIONS)


def _command(action: str, doc: str, with_reason: bool = False, keep: bool = False) -> None:
    def run(remote: Remote, release_id: str, env: str, **options: Any) -> None:
        body: dict[str, Any] = {}
        if with_reason:
            body["reason"] = options.get("reason") or ""
        if keep:
            body["keep_share"] = bool(options.get("keep_share"))
        answer = remote.json(
            "POST", _path(remote, env, release_id, action), json=body if body else None
        )
        click.echo(f"{action}: {_line(answer)}")
        _history(answer, 1)

    run.__name__ = action
    run.__doc__ = doc
    command: Any = remote_options(run)
    if keep:
        command = click.option(
            "--keep-share", is_flag=True, help="Leave the flag at its current share."
        )(command)
    if with_reason:
        command = click.option("--reason", "-r", default="", help="Why, for the audit log.")(
            command
        )
    command = env_option(command)
    command = click.argument("release_id")(command)
    release.command(name=action)(command)


_command("pause", "Stop taking decisions; the flag stays at its share.", with_reason=True)
_command("resume", "Take decisions again; the step's hold starts anew.")
_command("advance", "Go to the next step now, whatever the hold, the data or the window.")
_command(
    "abort", "Stop for good: control for everyone (or --keep-share).", with_reason=True, keep=True
)
_command("approve", "Approve a release that waits for approval.")
_command("restart", "A new release of a rolled-back or aborted one's plan.")
