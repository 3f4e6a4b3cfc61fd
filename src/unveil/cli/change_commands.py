"""``unveil changes``: change requests in environments that require approval.

Where an environment requires approval, the commands that change things
open a change request instead of changing (the server answers 202 with
it, and they say so); a second person approves or rejects it here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import click
from rich.table import Table

from unveil.cli.diff import diff_documents, diff_values, document_lines, field_lines
from unveil.cli.errors import CliError, field
from unveil.cli.remote import Remote, remote_options
from unveil.cli.render import show_table

__all__ = ["changes", "opened_request"]

env_option = click.option("--env", "-e", required=True, help="The environment.")


def opened_request(answer: Mapping[str, Any]) -> bool:
    """Say so, when the server opened a change request instead of changing; whether it did."""
    request = answer.get("change_request")
    if not isinstance(request, Mapping) or "error" in answer:
        return False
    click.echo(
        f"change request {request.get('id')} opened: {request.get('action')} "
        f"{request.get('target') or '(document)'} waits for someone else's approval "
        f"(unveil changes show {request.get('id')} -e {request.get('environment')})"
    )
    diff = request.get("diff")
    if isinstance(diff, Mapping):  # what the approver will see: what it changes, as it holds it
        for line in diff_lines(str(request.get("action")), diff.get("before"), diff.get("after")):
            click.echo(line)
    return True


def _path(remote: Remote, env: str, change_id: str = "", action: str = "") -> str:
    rest = "/changes" + (f"/{quote(change_id, safe='')}" if change_id else "")
    return remote.env_path(env, rest + (f"/{action}" if action else ""))


def diff_lines(action: str, before: Any, after: Any) -> list[str]:
    """What the request changes, field by field (item by item for a document), not whole."""
    if action == "document.apply":
        return document_lines(diff_documents(before or {}, after or {}))
    return field_lines(diff_values(before or {}, after or {}))


def _line(change: Mapping[str, Any]) -> str:
    return (
        f"{field(change, 'id', str, 'change request')}  {change.get('state')}  "
        f"{change.get('action')} {change.get('target') or '(document)'}  "
        f"asked by {change.get('requester')}"
    )


@click.group()
def changes() -> None:
    """Change requests: list, show, approve, reject, withdraw, comment; require approval."""


@changes.command(name="list")
@env_option
@click.option(
    "--state",
    default=None,
    type=click.Choice(["open", "applied", "rejected", "withdrawn", "refused"]),
)
@remote_options
def list_(remote: Remote, env: str, state: str | None) -> None:
    """The environment's change requests, newest first."""
    params = {"state": state} if state else None
    found = field(remote.json("GET", _path(remote, env), params=params), "changes", list)
    table = Table(title=f"{remote.project} / {env}: change requests")
    for column in ("id", "state", "action", "target", "asked by", "reason", "outcome"):
        table.add_column(column)
    for item in found:
        table.add_row(
            str(field(item, "id", str, "change request")),
            str(item.get("state")),
            str(item.get("action")),
            str(item.get("target") or "(document)"),
            str(item.get("requester")),
            str(item.get("reason") or ""),
            str(item.get("outcome") or ""),
        )
    show_table(table)


@changes.command()
@click.argument("change_id")
@env_option
@remote_options
def show(remote: Remote, change_id: str, env: str) -> None:
    """One change request: the exact diff, the comments, what came of it."""
    found = remote.json("GET", _path(remote, env, change_id))
    click.echo(_line(found))
    for key in ("reason", "base_version", "decided_by", "outcome"):
        if found.get(key) is not None:
            click.echo(f"  {key}: {found[key]}")
    diff = found.get("diff")
    if isinstance(diff, Mapping):
        for line in diff_lines(str(found.get("action")), diff.get("before"), diff.get("after")):
            click.echo(f"  {line}")
    for note in found.get("comments") or []:
        if isinstance(note, Mapping):
            click.echo(f"  {note.get('by')}: {note.get('text')}")


def _decide(remote: Remote, env: str, change_id: str, action: str, body: Any) -> None:
    response = remote.call("POST", _path(remote, env, change_id, action), ok=(200, 409), json=body)
    answer = response.json()
    if response.status_code == 409:
        raise CliError(f"409: {answer.get('error')}")
    click.echo(_line(answer))
    if answer.get("outcome"):
        click.echo(f"  {answer['outcome']}")


@changes.command()
@click.argument("change_id")
@env_option
@click.option("--comment", "-m", default=None, help="A word for the requester.")
@remote_options
def approve(remote: Remote, change_id: str, env: str, comment: str | None) -> None:
    """Approve and apply it (refused if what it changes moved on since)."""
    _decide(remote, env, change_id, "approve", {"comment": comment} if comment else None)


@changes.command()
@click.argument("change_id")
@env_option
@click.option("--comment", "-m", default=None, help="Why not.")
@remote_options
def reject(remote: Remote, change_id: str, env: str, comment: str | None) -> None:
    """Refuse it."""
    _decide(remote, env, change_id, "reject", {"comment": comment} if comment else None)


@changes.command()
@click.argument("change_id")
@env_option
@remote_options
def withdraw(remote: Remote, change_id: str, env: str) -> None:
    """Take back your own request."""
    _decide(remote, env, change_id, "withdraw", None)


@changes.command()
@click.argument("change_id")
@click.argument("text")
@env_option
@remote_options
def comment(remote: Remote, change_id: str, text: str, env: str) -> None:
    """Add a comment to an open request."""
    _decide(remote, env, change_id, "comments", {"text": text})


@changes.command()
@click.argument("setting", type=click.Choice(["on", "off"]))
@env_option
@remote_options
def require(remote: Remote, setting: str, env: str) -> None:
    """Require approval of changes in the environment (on) or not (off); admin only."""
    body = {"requires_approval": setting == "on"}
    answer = remote.json("PUT", remote.env_path(env, "/settings"), json=body)
    state = "require" if answer.get("requires_approval") else "do not require"
    click.echo(f"changes in {env} {state} approval")
