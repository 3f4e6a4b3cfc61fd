"""``unveil flags stale`` and ``unveil flags stale-after``: clean-up candidates and N.

The server decides which flags are stale (``unveil.service.stale``); this
prints them with their reasons and where code refers to them: the latest
deploys' scans the server holds, and with ``--scan PATH`` a scan of a tree
on this machine as well (a checkout about to be cleaned up).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
from rich.console import Console
from rich.table import Table

from unveil.cli.code_commands import exclude_option, pattern_option
from unveil.cli.errors import field
from unveil.cli.remote import Remote, remote_options
from unveil.service.references import references_payload, scan_tree

__all__ = ["stale", "stale_after"]


def _settings_path(remote: Remote) -> str:
    return f"/api/v1/projects/{quote(remote.project, safe='')}/settings"


@click.command()
@click.option("--env", "-e", required=True, help="The environment.")
@click.option(
    "--scan",
    "scan_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Also show where the tree at this path refers to each stale flag.",
)
@pattern_option
@exclude_option
@click.option("--json", "as_json", is_flag=True, help="Print the server's answer as JSON.")
@remote_options
def stale(
    remote: Remote,
    env: str,
    scan_path: Path | None,
    patterns: tuple[str, ...],
    excludes: tuple[str, ...],
    as_json: bool,
) -> None:
    """Clean-up candidates of an environment, each with its reasons and its references."""
    local: dict[str, list[str]] = {}
    if scan_path is not None:  # first: a bad path or pattern says so before any request
        local = references_payload(scan_tree(scan_path, patterns=patterns, excludes=excludes))
    answer = remote.json("GET", remote.env_path(env, "/stale-flags"))
    flags = field(answer, "flags", list, "stale-flags answer")
    days = field(answer, "stale_after_days", int, "stale-flags answer")
    if as_json:
        if scan_path is not None:
            for item in flags:
                if isinstance(item, dict):
                    item["local_references"] = local.get(str(item.get("key")), [])
        click.echo(json.dumps(answer, indent=2, ensure_ascii=False))
        return
    console = Console()
    table = Table(title=f"stale flags in {remote.project} / {env} (N = {days} days)")
    for column in ("flag", "why", "where the code refers to it"):
        table.add_column(column)
    for item in flags:
        key = str(field(item, "key", str, "stale flag"))
        reasons = field(item, "reasons", list, f"stale flag '{key}'")
        why = "\n".join(str(r.get("text")) for r in reasons if isinstance(r, dict))
        table.add_row(key, why, "\n".join(_where(item, local.get(key, []))) or "-")
    console.print(table)
    console.print(f"{len(flags)} stale flag(s)")


def _where(item: dict[str, Any], local: list[str]) -> list[str]:
    """The deployed services' locations, then this tree's."""
    lines: list[str] = []
    references = item.get("references")
    if isinstance(references, dict):
        for service, places in sorted(references.items()):
            if isinstance(places, list):
                lines += [f"{service}: {place}" for place in places]
    lines += [f"here: {place}" for place in local]
    return lines


@click.command(name="stale-after")
@click.argument("days", type=click.IntRange(1, 3650), required=False)
@remote_options
def stale_after(remote: Remote, days: int | None) -> None:
    """Show N, the days of the stale criteria in the project, or set it to DAYS (admin)."""
    if days is None:
        answer = remote.json("GET", _settings_path(remote))
    else:
        answer = remote.json("PUT", _settings_path(remote), json={"stale_after_days": days})
    shown = field(answer, "stale_after_days", int, "settings answer")
    click.echo(f"flags of {remote.project} are stale after {shown} days")
