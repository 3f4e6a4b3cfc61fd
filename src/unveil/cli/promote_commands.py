"""``unveil promote``: copy flags and segments from one environment to another.

It compares first and prints what differs, field by field (the same lines
as ``apply --dry-run``, from ``unveil.cli.diff``), then copies, unless
``--dry-run``. ``--schedule AT`` makes the copy a scheduled change in the
target (the source as it is then is what is copied).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import click

from unveil.cli.change_commands import opened_request
from unveil.cli.diff import diff_documents, document_lines
from unveil.cli.errors import field
from unveil.cli.remote import Remote, remote_options
from unveil.cli.schedule_commands import When, post_schedule

__all__ = ["promote", "promotion_lines"]


def _present(part: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in part.items() if v is not None}


def promotion_lines(answer: Mapping[str, Any]) -> list[str]:
    """What a promotion copies, for people: counts, then per flag the fields that move."""
    before = field(answer, "before", dict, "promotion")
    after = field(answer, "after", dict, "promotion")
    old = {p: _present(before.get(p) or {}) for p in ("flags", "segments")}
    lines = document_lines(diff_documents(old, after))
    kept = answer.get("kept_targets") or []
    if kept:
        lines.append(f"targets kept from {answer.get('target')}: {', '.join(kept)}")
    only = answer.get("only_in_target") or {}
    for part in ("flags", "segments"):
        if only.get(part):
            names = ", ".join(only[part][:20]) + (" …" if len(only[part]) > 20 else "")
            lines.append(f"only in {answer.get('target')} (left as they are): {part} {names}")
    return lines


@click.command()
@click.argument("keys", nargs=-1, metavar="[FLAG]...")
@click.option("--from", "source", required=True, help="The environment to copy from.")
@click.option("--to", "target", required=True, help="The environment to copy to.")
@click.option("--segment", "segments", multiple=True, help="A segment to copy too (repeatable).")
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@click.option(
    "--keep-targets", is_flag=True, help="Keep the target's individual targets of each flag."
)
@click.option("--schedule", "schedule_at", default=None, metavar="AT", help="Copy at AT instead.")
@click.option("--tz", default=None, help="The time zone of --schedule.")
@click.option("--reason", "-r", default=None, help="Why, for the audit log.")
@remote_options
def promote(
    remote: Remote,
    keys: tuple[str, ...],
    source: str,
    target: str,
    segments: tuple[str, ...],
    dry_run: bool,
    keep_targets: bool,
    schedule_at: str | None,
    tz: str | None,
    reason: str | None,
) -> None:
    """Copy FLAGs (and --segment S) from --from to --to; all of them when none is named.

    Targeting that names what the target lacks is refused, naming it; nothing
    is half copied. Where the target requires approval, a change request opens.
    """
    if dry_run and schedule_at:
        raise click.UsageError("--dry-run shows what would be copied now; leave out --schedule")
    body: dict[str, Any] = {
        "source": source,
        "target": target,
        "flags": list(keys),
        "segments": list(segments),
        "keep_targets": keep_targets,
    }
    path = f"/api/v1/projects/{quote(remote.project, safe='')}/promotions"
    preview = remote.json("POST", path, json={**body, "dry_run": True})
    for line in promotion_lines(preview):
        click.echo(line)
    if dry_run:
        click.echo("dry run: nothing written")
        return
    if schedule_at is not None:
        asked = {k: body[k] for k in ("source", "flags", "segments", "keep_targets")}
        post_schedule(
            remote, target, When(schedule_at, None, tz), "promotion.apply", reason, promotion=asked
        )
        return
    if reason:
        body["reason"] = reason
    answer = remote.json("POST", path, json=body)
    if opened_request(answer):
        return
    version = answer.get("written_version")
    if version is None:
        click.echo(f"{target} already has exactly this: nothing written")
    else:
        click.echo(
            f"promoted from {source} (version {answer.get('source_version')}) to {target}: "
            f"now at version {version}"
        )
