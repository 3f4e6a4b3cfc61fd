"""Commands that work on a running server: flags, apply, export, audit.

Two versions appear in their output, always labelled: a flag's (or
segment's) version, which its ETag carries (the environment's version when
that item last changed), and the environment's version, which counts every
write to the environment and is what the audit log, ``apply`` and
``export`` show. Right after a write they are the same number; later writes
to other flags move the environment on while the flag keeps its version.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from unveil.cli.change_commands import opened_request
from unveil.cli.diff import (
    DocumentDiff,
    diff_documents,
    diff_values,
    document_lines,
    field_lines,
)
from unveil.cli.errors import BadAnswer, CliError, Refused, RemoteError, field, refused_message
from unveil.cli.remote import Remote, remote_options
from unveil.cli.render import show_table, yaml_text
from unveil.cli.schedule_commands import When, post_schedule, schedule_options
from unveil.core import InvalidDocument, document_to_data, parse_document
from unveil.sdk.files import dump_document, format_of, load_document

__all__ = ["apply", "audit", "export", "flags", "push_document"]

env_option = click.option("--env", "-e", required=True, help="The environment.")
reason_option = click.option("--reason", "-r", default=None, help="Why, for the audit log.")

#: attempts at a read-change-write before giving up on a busy flag or environment
ATTEMPTS = 5
#: seconds a whole document may take to read or apply (ten thousand flags take
#: seconds, well past the 30 s every other call is allowed on a busy server)
DOCUMENT_TIMEOUT = 300.0


def _versions(written: Mapping[str, Any], noun: str = "flag") -> str:
    """``flag version 3, environment version 17``: the environment's when the server gave it."""
    text = f"{noun} version {field(written, 'version', int)}"
    env_version = written.get("environment_version")
    if isinstance(env_version, int) and not isinstance(env_version, bool):
        text += f", environment version {env_version}"
    return text


def _change_flag(
    remote: Remote,
    env: str,
    key: str,
    edit: Callable[[dict[str, Any]], None],
    reason: str | None,
    when: When | None = None,
) -> dict[str, Any] | None:
    """Read, edit, write with If-Match; read again and retry if someone else wrote first.

    With ``when`` the edited flag is scheduled instead (None is returned): the
    server applies it at its time, merged with whatever changed meanwhile.
    """
    for _ in range(ATTEMPTS):
        current = remote.call("GET", remote.flag_path(env, key))
        etag = current.headers.get("etag")
        if etag is None:
            raise BadAnswer(f"the server gave flag '{key}' without an ETag")
        try:
            flag = dict(field(current.json(), "data", dict, f"flag '{key}'"))
        except ValueError:
            raise BadAnswer(f"the server's answer for flag '{key}' is not JSON") from None
        edit(flag)
        if when is not None:
            post_schedule(remote, env, when, "flag.put", reason, key=key, data=flag)
            return None
        try:
            written = remote.json(
                "PUT",
                remote.flag_path(env, key),
                json=flag,
                headers={"If-Match": etag},
                params={"reason": reason} if reason else None,
            )
        except RemoteError as exc:
            if exc.status == 412:
                continue
            raise
        return None if opened_request(written) else written
    raise CliError(f"flag '{key}' kept changing under us; try again")


@click.group()
def flags() -> None:
    """List, show, create and change flags on a server."""


@flags.command(name="list")
@env_option
@click.option(
    "--match",
    "pattern",
    default=None,
    help="Only the flags whose key matches this pattern (* and ? as in file names).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON array of {key, kind, enabled, default, version}, for scripts.",
)
@remote_options
def list_(remote: Remote, env: str, pattern: str | None, as_json: bool) -> None:
    """Every flag of an environment, with each flag's own version."""
    items = field(remote.json("GET", remote.env_path(env, "/flags")), "flags", list)
    rows = []
    for item in items:
        key = field(item, "key", str, "flag list")
        if pattern is not None and not fnmatch.fnmatchcase(key, pattern):
            continue
        flag = field(item, "data", dict, "flag list")
        rows.append(
            {
                "key": key,
                "kind": flag.get("kind", "boolean"),
                "enabled": flag.get("enabled", True),
                "default": flag.get("default"),
                "version": field(item, "version", int, "flag list"),
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table(title=f"{remote.project} / {env}")
    for column in ("flag", "kind", "enabled", "default", "flag version"):
        table.add_column(column)
    for row in rows:
        default = row["default"]
        table.add_row(
            row["key"],
            str(row["kind"]),
            json.dumps(row["enabled"]),
            default if isinstance(default, str) else json.dumps(default),
            str(row["version"]),
        )
    show_table(table)


@flags.command()
@click.argument("key")
@env_option
@remote_options
def show(remote: Remote, key: str, env: str) -> None:
    """One flag as YAML, as the server has it, with its version."""
    answer = remote.json("GET", remote.flag_path(env, key))
    data = field(answer, "data", dict, f"flag '{key}'")
    header = f"# {remote.project} / {env}: flag version {field(answer, 'version', int)}"
    changed_at = answer.get("environment_version")
    if isinstance(changed_at, int) and not isinstance(changed_at, bool):
        # on a read this is the environment's version when the flag last changed
        header += f" (last changed at environment version {changed_at})"
    click.echo(header)
    click.echo(yaml_text({"flags": {key: data}}), nl=False)


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
    written = remote.json(
        "PUT",
        remote.flag_path(env, key),
        json=body,
        headers={"If-None-Match": "*"},
        params={"reason": reason} if reason else None,
    )
    click.echo(f"created {key} in {env} ({_versions(written)})")


def _switch(on: bool) -> Callable[..., None]:
    def command(remote: Remote, key: str, env: str, reason: str | None, when: When | None) -> None:
        def edit(flag: dict[str, Any]) -> None:
            flag["enabled"] = on

        written = _change_flag(remote, env, key, edit, reason, when)
        if written is None:
            return
        state = "enabled" if on else "disabled"
        click.echo(f"{key} {state} in {env} ({_versions(written)})")

    command.__name__ = "enable" if on else "disable"
    return command


for _on, _help in (
    (True, "Turn a flag on: its rules decide again."),
    (False, "The kill switch: everyone gets the off variant."),
):
    _command = _switch(_on)
    _command.__doc__ = _help
    flags.command(name=_command.__name__)(
        click.argument("key")(env_option(reason_option(schedule_options(remote_options(_command)))))
    )


def _rollout_target(key: str, flag: Mapping[str, Any], variant: str | None) -> tuple[str, str]:
    """The variant to roll out and the one the rest get; a usage error naming --variant if none."""
    variants = field(flag, "variants", dict, f"flag '{key}'")
    rest = field(flag, "off_variant", str, f"flag '{key}'")
    names = ", ".join(variants)
    if variant is None:
        if "on" not in variants:
            raise click.UsageError(
                f"flag '{key}' is a {flag.get('kind', '?')} flag without a variant 'on' "
                f"(its variants: {names}): name the one to roll out with --variant"
            )
        variant = "on"
    elif variant not in variants:
        raise click.UsageError(f"flag '{key}' has no variant '{variant}' (its variants: {names})")
    if variant == rest:
        raise click.UsageError(
            f"'{variant}' is the off variant of '{key}', which the rest get; "
            "choose another with --variant"
        )
    return variant, rest


@flags.command()
@click.argument("key")
@click.argument("percent", type=click.FloatRange(0, 100))
@env_option
@click.option("--variant", default=None, help="The variant to roll out (default: on).")
@click.option("--by", default="key", show_default=True, help="The attribute to bucket by.")
@reason_option
@schedule_options
@remote_options
def rollout(
    remote: Remote,
    key: str,
    percent: float,
    env: str,
    variant: str | None,
    by: str,
    reason: str | None,
    when: When | None,
) -> None:
    """Serve a variant to PERCENT of contexts by default, the off variant to the rest."""
    if round(percent, 3) != percent:
        raise click.BadParameter(
            f"{percent:g} has more than three decimals", param_hint="'PERCENT'"
        )
    chosen: list[str] = []

    def edit(flag: dict[str, Any]) -> None:
        target, rest = _rollout_target(key, flag, variant)
        share = round(percent, 3)
        left = round(100 - share, 3)
        flag["default"] = {"rollout": {target: share, rest: left}, "by": by}
        chosen[:] = [target]

    written = _change_flag(remote, env, key, edit, reason, when)
    if written is None:
        return
    served = written.get("data", {}).get("default", {}).get("rollout", {})
    split = ", ".join(f"{name} {share:g}%" for name, share in served.items())
    click.echo(f"{key}: {chosen[0]} to {percent:g}% in {env} ({_versions(written)})")
    if split:
        click.echo(f"  the default now serves: {split}")


def push_document(
    remote: Remote,
    env: str,
    data: Mapping[str, Any],
    dry_run: bool,
    reason: str | None,
    source: str = "the file",
) -> None:
    """Apply a document and print what changed (or would), down to the fields.

    The environment is read first to say what differs inside each changed
    flag; the write then carries the ETag of that read, so the lines shown
    are exactly what was applied (if someone wrote in between, it reads
    again).
    """
    try:
        wanted = document_to_data(parse_document(dict(data)))
    except InvalidDocument as exc:
        raise Refused(exc.problems) from None
    params: dict[str, Any] = {"dry_run": "true" if dry_run else "false"}
    if reason:
        params["reason"] = reason
    for _ in range(ATTEMPTS):
        current = remote.call("GET", remote.env_path(env, "/document"), timeout=DOCUMENT_TIMEOUT)
        try:
            before = current.json()
        except ValueError:
            raise BadAnswer(f"the server's document of {env} is not JSON") from None
        etag = current.headers.get("etag")
        try:
            answer = remote.json(
                "PUT",
                remote.env_path(env, "/document"),
                json=wanted,
                params=params,
                headers={"If-Match": etag} if etag else None,
                timeout=DOCUMENT_TIMEOUT,
            )
        except RemoteError as exc:
            if exc.status == 412:
                continue
            raise
        break
    else:
        raise CliError(f"{env} kept changing under us; try again")
    if opened_request(answer):
        return
    _print_applied(env, diff_documents(before, wanted), answer, dry_run, source)


def _server_keys(answer: Mapping[str, Any]) -> dict[str, dict[str, list[str]]]:
    """The apply answer's ``diff``: per bucket and part, a list of keys (BadAnswer if not)."""
    given = field(answer, "diff", dict, "apply answer")
    keys: dict[str, dict[str, list[str]]] = {}
    for bucket in ("added", "changed", "removed"):
        parts = field(given, bucket, dict, "apply answer's diff")
        keys[bucket] = {}
        for part in ("flags", "segments"):
            listed = parts.get(part, [])
            if not isinstance(listed, list) or not all(isinstance(k, str) for k in listed):
                raise BadAnswer(f"the server's apply answer: diff.{bucket}.{part} is not a list")
            keys[bucket][part] = listed
    return keys


def _print_applied(
    env: str, diff: DocumentDiff, answer: Mapping[str, Any], dry_run: bool, source: str
) -> None:
    keys = _server_keys(answer)
    version = field(answer, "version", int, "apply answer")
    lines = document_lines(diff, keys)
    if not field(answer, "changed", bool, "apply answer"):
        click.echo(f"{env} is up to date (environment version {version})")
        return
    click.echo(f"{env}: {lines[0]}")
    for line in lines[1:]:
        click.echo(line)
    gone = {p: len(keys["removed"][p]) for p in ("flags", "segments")}
    if any(gone.values()):
        what = " and ".join(f"{n} {p if n != 1 else p[:-1]}" for p, n in gone.items() if n)
        verb = "would be" if dry_run else "was" if sum(gone.values()) == 1 else "were"
        click.echo(f"{what} not in {source} {verb} removed: apply makes {env} exactly {source}")
    if dry_run:
        click.echo(f"dry run: nothing was changed ({env} is at environment version {version})")
    else:
        click.echo(f"applied to {env} (environment version {version})")


@click.command()
@click.option(
    "--file", "-f", "path", required=True, type=click.Path(dir_okay=False, path_type=Path)
)
@env_option
@click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
@reason_option
@schedule_options
@remote_options
def apply(
    remote: Remote, path: Path, env: str, dry_run: bool, reason: str | None, when: When | None
) -> None:
    """Make an environment exactly what a flags file says (idempotent).

    Flags and segments the file does not have are removed; the output says
    which, and for each changed flag which fields change. With --schedule,
    the file is applied at that time (merged with what changed meanwhile).
    """
    document = load_document(path)  # a refused file: every problem, exit 1
    if when is not None:
        if dry_run:
            raise click.UsageError("--dry-run and --schedule do not go together")
        data = document_to_data(document)
        post_schedule(remote, env, when, "document.apply", reason, document=data)
        return
    push_document(remote, env, document_to_data(document), dry_run, reason, path.name)


@click.command()
@env_option
@click.option("--to", "fmt", type=click.Choice(["yaml", "json"]), default="yaml")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None)
@remote_options
def export(remote: Remote, env: str, fmt: str, output: Path | None) -> None:
    """An environment's flags file, canonical (what apply takes back)."""
    data = remote.json("GET", remote.env_path(env, "/document"), timeout=DOCUMENT_TIMEOUT)
    try:
        document = parse_document(data)
    except InvalidDocument as exc:
        raise BadAnswer(refused_message(exc.problems, f"the server's document of {env}")) from None
    text = dump_document(document, format_of(output) if output else fmt)  # type: ignore[arg-type]
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _instant(value: str | None, option: str) -> str | None:
    """An age (``2h``: that long ago) as RFC 3339; anything else goes to the server as given.

    The server checks timestamps and names the bad one; an age is the
    CLI's own convenience, so the CLI checks it.
    """
    if value is None or not value[:1].isdigit() or value[-1:] not in _AGE_UNITS:
        return value
    number = value[:-1]
    if not number.isascii() or not number.isdigit() or len(number) > 9:
        raise click.BadParameter(f"{value!r} is not an age like 90m, 2h or 7d", param_hint=option)
    ago = timedelta(seconds=int(number) * _AGE_UNITS[value[-1]])
    return (datetime.now(UTC) - ago).isoformat(timespec="seconds").replace("+00:00", "Z")


def _stored(raw: Any) -> Any:
    """An audit entry's before or after: JSON text (or already data); None when absent."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def audit_lines(entry: Mapping[str, Any]) -> list[str]:
    """One audit entry for people: who, when, what, why, and what changed inside it."""
    action = str(entry.get("action", "?"))
    head = (
        f"#{entry.get('id', '?')}  {entry.get('at', '?')}  {entry.get('actor', '?')}  "
        f"{action} {entry.get('target', '?')}"
    )
    env_version = entry.get("environment_version")
    if env_version is not None:
        head += f"  (environment version {env_version})"
    lines = [head]
    if entry.get("reason"):
        lines.append(f"    reason: {entry['reason']}")
    before, after = _stored(entry.get("before")), _stored(entry.get("after"))
    if action.startswith("document."):
        changes = document_lines(diff_documents(before or {}, after or {}))
    else:
        changes = field_lines(diff_values(before or {}, after or {}))
    lines += [f"    {line}" for line in changes]
    return lines


@click.command()
@env_option
@click.option("--flag", default=None, help="Only this flag (or segment).")
@click.option("--actor", default=None, help="Only this actor.")
@click.option(
    "--since",
    default=None,
    help="Entries at or after: RFC 3339 with an offset (2026-12-01T09:00:00Z), or an age "
    "(90m, 2h, 7d ago).",
)
@click.option("--until", default=None, help="Entries before: as --since.")
@remote_options
def audit(
    remote: Remote,
    env: str,
    flag: str | None,
    actor: str | None,
    since: str | None,
    until: str | None,
) -> None:
    """Who changed what, when and why, with what changed inside each entry (oldest first)."""
    wanted = {
        "target": flag,
        "actor": actor,
        "since": _instant(since, "--since"),
        "until": _instant(until, "--until"),
    }
    params = {k: v for k, v in wanted.items() if v}
    body = remote.json("GET", remote.env_path(env, "/audit"), params=params)
    entries = field(body, "entries", list)
    noun = "entry" if len(entries) == 1 else "entries"
    click.echo(f"audit of {remote.project} / {env}: {len(entries)} {noun}")
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise BadAnswer("the server's audit has an entry that is not an object")
        click.echo("\n".join(audit_lines(entry)))
