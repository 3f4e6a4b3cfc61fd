"""``unveil webhooks``: subscribe URLs to a project's events, read deliveries, redeliver.

The server checks everything (docs/governance.md); these commands only say
it. ``add`` prints the signing secret, which the server shows this once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import click
from rich.table import Table

from unveil.cli.errors import field
from unveil.cli.remote import Remote, remote_options
from unveil.cli.render import show_table

__all__ = ["webhooks"]


def _path(remote: Remote, rest: str = "") -> str:
    return f"/api/v1/projects/{quote(remote.project, safe='')}/webhooks{rest}"


def _one(webhook_id: int, rest: str = "") -> str:
    return f"/{webhook_id}{rest}"


@click.group()
def webhooks() -> None:
    """Send a project's changes, signed, to URLs of yours."""


@webhooks.command()
@click.argument("target", metavar="URL")
@click.option(
    "--event",
    "events",
    multiple=True,
    required=True,
    help="An event to send (repeat for several): flag.changed, flag.switched_off, release.*...",
)
@click.option("--env", "environments", multiple=True, help="Only this environment (repeatable).")
@click.option(
    "--format", "fmt", type=click.Choice(["json", "slack"]), default="json", show_default=True
)
@remote_options
def add(
    remote: Remote, target: str, events: tuple[str, ...], environments: tuple[str, ...], fmt: str
) -> None:
    """Subscribe URL to events; prints the signing secret (shown this once only)."""
    body: dict[str, Any] = {"url": target, "events": list(events), "format": fmt}
    if environments:
        body["environments"] = list(environments)
    made = remote.json("POST", _path(remote), json=body)
    click.echo(f"webhook {field(made, 'id', int)} sends {', '.join(events)} to {target}")
    click.echo(f"signing secret (shown once, keep it): {field(made, 'secret', str)}")


@webhooks.command(name="list")
@remote_options
def list_(remote: Remote) -> None:
    """The project's subscriptions."""
    found = field(remote.json("GET", _path(remote)), "webhooks", list)
    table = Table(title=f"{remote.project}: webhooks")
    for column in ("id", "url", "events", "environments", "format"):
        table.add_column(column, overflow="fold")
    for item in found:
        envs = item.get("environments") if isinstance(item, Mapping) else None
        table.add_row(
            str(field(item, "id", int, "webhook")),
            str(field(item, "url", str, "webhook")),
            ", ".join(str(e) for e in field(item, "events", list, "webhook")),
            ", ".join(str(e) for e in envs) if isinstance(envs, list) else "all",
            str(item.get("format")),
        )
    show_table(table)


@webhooks.command()
@click.argument("webhook_id", type=int)
@remote_options
def remove(remote: Remote, webhook_id: int) -> None:
    """Unsubscribe; deliveries not yet sent are dropped."""
    remote.call("DELETE", _path(remote, _one(webhook_id)))
    click.echo(f"webhook {webhook_id} removed")


def _last_answer(delivery: Mapping[str, Any]) -> str:
    attempts = delivery.get("attempts")
    if not isinstance(attempts, list) or not attempts:
        return "-"
    last = attempts[-1]
    if not isinstance(last, Mapping):
        return "?"
    answer = str(last.get("status")) if last.get("status") is not None else "no answer"
    return f"{answer} in {last.get('duration_ms')} ms" + (
        f": {last.get('error')}" if last.get("error") and last.get("status") is None else ""
    )


@webhooks.command()
@click.argument("webhook_id", type=int)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 500))
@remote_options
def deliveries(remote: Remote, webhook_id: int, limit: int) -> None:
    """A subscription's latest deliveries, newest first, with their last answer."""
    answer = remote.json(
        "GET", _path(remote, _one(webhook_id, "/deliveries")), params={"limit": limit}
    )
    table = Table(title=f"webhook {webhook_id}: deliveries")
    for column in ("id", "event", "target", "state", "attempts", "last answer", "next"):
        table.add_column(column, overflow="fold")
    for item in field(answer, "deliveries", list):
        body = item.get("body") if isinstance(item, Mapping) else None
        attempts = item.get("attempts") if isinstance(item, Mapping) else None
        table.add_row(
            str(field(item, "id", int, "delivery")),
            str(field(item, "event", str, "delivery")),
            str(body.get("target")) if isinstance(body, Mapping) else "?",
            str(field(item, "state", str, "delivery")),
            str(len(attempts)) if isinstance(attempts, list) else "?",
            _last_answer(item),
            str(item.get("next_attempt_at") or "-")[:19],
        )
    show_table(table)


@webhooks.command()
@click.argument("webhook_id", type=int)
@click.argument("delivery_id", type=int)
@remote_options
def redeliver(remote: Remote, webhook_id: int, delivery_id: int) -> None:
    """Send a delivery again: the same body and id, from now."""
    path = _path(remote, _one(webhook_id, f"/deliveries/{delivery_id}/redeliver"))
    answer = remote.json("POST", path)
    click.echo(f"delivery {field(answer, 'id', int)} will be sent again ({answer.get('event')})")
