"""Commands that work on a running server: flags, apply, export, audit."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from unveil.cli.remote import Remote, RemoteError, remote_options
from unveil.core import InvalidDocument, document_to_data, parse_document
from unveil.sdk.files import dump_document, format_of, load_document

__all__ = ["apply", "audit", "export", "flags", "push_document"]

env_option = click.option("--env", "-e", required=True, help="The environment.")
reason_option = click.option("--reason", "-r", default=None, help="Why, for the audit log.")


def _refused(exc: InvalidDocument) -> click.ClickException:
    lines = [f"refused: {len(exc.problems)} problem(s)"]
    lines += [f"  {p.path or '(document)'}: {p.message}" for p in exc.problems]
    return click.ClickException("\n".join(lines))  # exits 1, as a refused file does


def _change_flag(
    remote: Remote, env: str, key: str, edit: Callable[[dict[str, Any]], None], reason: str | None
) -> dict[str, Any]:
    """Read, edit, write with If-Match; read again and retry if someone else wrote first."""
    for _ in range(5):
        current = remote.call("GET", remote.flag_path(env, key))
        flag = current.json()["data"]
        edit(flag)
        try:
            written = remote.call(
                "PUT",
                remote.flag_path(env, key),
                json=flag,
                headers={"If-Match": current.headers["etag"]},
                params={"reason": reason} if reason else None,
            )
        except RemoteError as exc:
            if exc.status == 412:
                continue
            raise
        return dict(written.json())
    raise click.ClickException(f"flag '{key}' kept changing under us; try again")


@click.group()
def flags() -> None:
    """List, show, create and change flags on a server."""


@flags.command(name="list")
@env_option
@remote_options
def list_(remote: Remote, env: str) -> None:
    """Every flag of an environment."""
    items = remote.call("GET", remote.env_path(env, "/flags")).json()["flags"]
    table = Table(title=f"{remote.project} / {env}")
    for column in ("flag", "kind", "enabled", "default", "version"):
        table.add_column(column)
    for item in items:
        flag = item["data"]
        default = flag["default"]
        shown = default if isinstance(default, str) else json.dumps(default)
        table.add_row(
            item["key"], flag["kind"], str(flag["enabled"]).lower(), shown, str(item["version"])
        )
    Console().print(table)


@flags.command()
@click.argument("key")
@env_option
@remote_options
def show(remote: Remote, key: str, env: str) -> None:
    """One flag as YAML, with its version."""
    response = remote.call("GET", remote.flag_path(env, key))
    document = parse_document({"flags": {key: response.json()["data"]}})
    click.echo(f"# version {response.json()['version']}")
    click.echo(dump_document(document, "yaml"), nl=False)


@flags.command()
@click.argument("key")
@env_option
@click.option("--description", "-d", default="", help="What the flag is for.")
@reason_option
@remote_options
def create(remote: Remote, key: str, env: str, description: str, reason: str | None) -> None:
    """A new boolean flag, serving off to everyone until changed."""
    body: dict[str, Any] = {"kind": "boolean", "default": "off"}
    if description:
        body["description"] = description
    remote.call(
        "PUT",
        remote.flag_path(env, key),
        json=body,
        headers={"If-None-Match": "*"},
        params={"reason": reason} if reason else None,
    )
    click.echo(f"created {key} in {env}")


def _switch(on: bool) -> Callable[..., None]:
    def command(remote: Remote, key: str, env: str, reason: str | None) -> None:
        def edit(flag: dict[str, Any]) -> None:
            flag["enabled"] = on

        written = _change_flag(remote, env, key, edit, reason)
        state = "enabled" if on else "disabled"
        click.echo(f"{key} {state} in {env} (version {written['version']})")

    command.__name__ = "enable" if on else "disable"
    return command


for _on, _help in (
    (True, "Turn a flag on: its rules decide again."),
    (False, "The kill switch: everyone gets the off variant."),
):
    _command = _switch(_on)
    _command.__doc__ = _help
    flags.command(name=_command.__name__)(
        click.argument("key")(env_option(reason_option(remote_options(_command))))
    )


@flags.command()
@click.argument("key")
@click.argument("percent", type=click.FloatRange(0, 100))
@env_option
@click.option("--variant", default=None, help="The variant to roll out (default: on).")
@click.option("--by", default="key", show_default=True, help="The attribute to bucket by.")
@reason_option
@remote_options
def rollout(
    remote: Remote,
    key: str,
    percent: float,
    env: str,
    variant: str | None,
    by: str,
    reason: str | None,
) -> None:
    """Serve a variant to PERCENT of contexts by default, the off variant to the rest."""

    def edit(flag: dict[str, Any]) -> None:
        target = variant or "on"
        rest = flag["off_variant"]
        if target == rest:
            raise click.UsageError(f"'{target}' is the off variant; choose another")
        share = round(percent, 3)
        left = round(100 - share, 3)
        flag["default"] = {"rollout": {target: share, rest: left}, "by": by}

    written = _change_flag(remote, env, key, edit, reason)
    click.echo(f"{key}: {percent:g}% in {env} (version {written['version']})")


def push_document(
    remote: Remote, env: str, data: dict[str, Any], dry_run: bool, reason: str | None
) -> None:
    """Apply a document and print what changed (or would)."""
    params: dict[str, Any] = {"dry_run": "true" if dry_run else "false"}
    if reason:
        params["reason"] = reason
    answer = remote.call("PUT", remote.env_path(env, "/document"), json=data, params=params).json()
    diff = answer["diff"]
    for part in ("segments", "flags"):
        for sign, bucket in (("+", "added"), ("~", "changed"), ("-", "removed")):
            for key in diff[bucket][part]:
                click.echo(f"{sign} {part[:-1]} {key}")
    if not answer["changed"]:
        click.echo(f"{env} is up to date (version {answer['version']})")
    elif dry_run:
        click.echo("dry run: nothing was changed")
    else:
        click.echo(f"applied to {env} (version {answer['version']})")


@click.command()
@click.option(
    "--file", "-f", "path", required=True, type=click.Path(dir_okay=False, path_type=Path)
)
@env_option
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@reason_option
@remote_options
def apply(remote: Remote, path: Path, env: str, dry_run: bool, reason: str | None) -> None:
    """Make an environment exactly what a flags file says (idempotent)."""
    try:
        document = load_document(path)
    except InvalidDocument as exc:
        raise _refused(exc) from None
    push_document(remote, env, document_to_data(document), dry_run, reason)


@click.command()
@env_option
@click.option("--to", "fmt", type=click.Choice(["yaml", "json"]), default="yaml")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None)
@remote_options
def export(remote: Remote, env: str, fmt: str, output: Path | None) -> None:
    """An environment's flags file, canonical (what apply takes back)."""
    data = remote.call("GET", remote.env_path(env, "/document")).json()
    text = dump_document(parse_document(data), format_of(output) if output else fmt)  # type: ignore[arg-type]
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


@click.command()
@env_option
@click.option("--flag", default=None, help="Only this flag (or segment).")
@click.option("--actor", default=None, help="Only this actor.")
@click.option("--since", default=None, help="RFC 3339: entries at or after.")
@remote_options
def audit(remote: Remote, env: str, flag: str | None, actor: str | None, since: str | None) -> None:
    """Who changed what, when and why."""
    params = {k: v for k, v in {"target": flag, "actor": actor, "since": since}.items() if v}
    entries = remote.call("GET", remote.env_path(env, "/audit"), params=params).json()["entries"]
    table = Table(title=f"audit of {remote.project} / {env}")
    for column in ("at", "actor", "action", "target", "reason", "version"):
        table.add_column(column, overflow="fold")
    for e in entries:
        table.add_row(
            e["at"],
            e["actor"],
            e["action"],
            e["target"],
            e["reason"] or "",
            str(e["environment_version"]),
        )
    Console(width=160).print(table)
