"""``unveil deploy ...``, ``unveil status`` and ``unveil timeline``: deploys beside releases.

Made to be one line in a CI pipeline: no prompts, the server and token
from ``UNVEIL_URL`` / ``UNVEIL_TOKEN`` / ``UNVEIL_PROJECT`` (cli/remote.py),
and exit codes a pipeline can branch on (cli/errors.py): 0 done (and, for
``verify``, every check passed), 1 refused (bad input, unknown service...),
3 the server could not be reached, 5 the verification ran and failed.
See docs/deploys.md.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
import httpx

from unveil.cli.errors import CliError, Unavailable, VerificationFailed, field
from unveil.cli.remote import Remote, remote_options
from unveil.sdk.files import format_of, read_data

__all__ = ["deploy", "status", "timeline"]

env_option = click.option("--env", "-e", required=True, help="The environment.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
#: how long after the period a metric check reads the server waits for its counts
METRICS_LAG = timedelta(seconds=5)


def _services_path(remote: Remote, name: str = "") -> str:
    base = f"/api/v1/projects/{quote(remote.project, safe='')}/services"
    return base + (f"/{quote(name, safe='')}" if name else "")


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _deploy_line(d: Mapping[str, Any]) -> str:
    kind = "rollback" if d.get("rollback") else "deploy"
    commit = f" ({d['commit']})" if d.get("commit") else ""
    verified = f"  verification {d['verified']}" if d.get("verified") else ""
    return (
        f"{field(d, 'id', str, 'deploy')}  {kind}  {d.get('service')} {d.get('version')}{commit}"
        f"  at {d.get('at')} by {d.get('actor')}{verified}"
    )


def _scan(path: Path, patterns: Sequence[str], excludes: Sequence[str]) -> dict[str, list[str]]:
    """The references of a source tree (the code scanner of ``unveil code scan``)."""
    from unveil.service.references import references_payload, scan_tree

    return references_payload(scan_tree(path, patterns=patterns, excludes=excludes))


@click.group()
def deploy() -> None:
    """Deploys: record them from CI, roll back, verify, list (see docs/deploys.md)."""


@deploy.command(name="service")
@click.argument("name")
@click.option("--owner", default=None, help="Who owns it (a team, a person).")
@remote_options
def service_(remote: Remote, name: str, owner: str | None) -> None:
    """Create a service (or set its owner)."""
    found = remote.json("PUT", _services_path(remote, name), json={"owner": owner})
    click.echo(f"service {found.get('name')}  owner {found.get('owner') or '-'}")


@deploy.command()
@click.option("--service", "-s", required=True, help="The service deployed.")
@click.option("--version", "-v", "version", required=True, help="The version deployed.")
@env_option
@click.option("--commit", default=None, help="The commit deployed.")
@click.option("--link", default=None, help="An http(s) link: the pipeline run, the release notes.")
@click.option("--reason", "-r", default=None, help="Why, for the audit log and the timeline.")
@click.option(
    "--scan",
    "scan_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Scan this source tree for the flags its code references.",
)
@click.option("--pattern", multiple=True, help="With --scan: a regex with one group (the key).")
@click.option("--exclude", multiple=True, help="With --scan: a gitignore-style pattern to skip.")
@click.option("--create-service", is_flag=True, help="Create the service if it is not there.")
@click.option("--rollback", is_flag=True, help="Record it as a deploy rollback.")
@json_option
@remote_options
def record(
    remote: Remote,
    service: str,
    version: str,
    env: str,
    commit: str | None,
    link: str | None,
    reason: str | None,
    scan_path: Path | None,
    pattern: tuple[str, ...],
    exclude: tuple[str, ...],
    create_service: bool,
    rollback: bool,
    as_json: bool,
) -> None:
    """Record a deploy of SERVICE at VERSION to ENV (an older version is a rollback)."""
    if (pattern or exclude) and scan_path is None:
        raise click.UsageError("--pattern and --exclude go with --scan")
    body: dict[str, Any] = {"service": service, "version": version, "rollback": rollback}
    given = {"commit": commit, "link": link, "reason": reason}
    body |= {k: v for k, v in given.items() if v is not None}
    if scan_path is not None:
        body["references"] = _scan(scan_path, pattern, exclude)
    if create_service:
        remote.json("PUT", _services_path(remote, service), json={})
    _show_recorded(remote.json("POST", remote.env_path(env, "/deploys"), json=body), as_json)


def _show_recorded(made: Mapping[str, Any], as_json: bool) -> None:
    if as_json:
        _echo_json(made)
        return
    click.echo(f"recorded {_deploy_line(made)}")
    flags = made.get("flags") or []
    if flags:
        click.echo(f"  carries {len(flags)} flag(s): {', '.join(flags)}")
    for followed in made.get("release_follows") or []:
        what = {"off": "switched off", "keep": "kept on", "ask": "change request opened"}.get(
            str(followed.get("action")), str(followed.get("action"))
        )
        extra = f" ({followed['change_request']})" if followed.get("change_request") else ""
        click.echo(f"  release follows: {followed.get('flag')} {what}{extra}")


@deploy.command()
@click.option("--service", "-s", required=True, help="The service rolled back.")
@env_option
@click.option("--to", "version", default=None, help="The version (default: the one before).")
@click.option("--commit", default=None, help="The commit deployed.")
@click.option("--link", default=None, help="An http(s) link: the pipeline run.")
@click.option("--reason", "-r", default=None, help="Why, for the audit log and the timeline.")
@json_option
@remote_options
def rollback(
    remote: Remote,
    service: str,
    env: str,
    version: str | None,
    commit: str | None,
    link: str | None,
    reason: str | None,
    as_json: bool,
) -> None:
    """Record a deploy rollback of SERVICE in ENV (releases of code it removes follow)."""
    body: dict[str, Any] = {"service": service, "rollback": True}
    given = {"version": version, "commit": commit, "link": link, "reason": reason}
    body |= {k: v for k, v in given.items() if v is not None}
    _show_recorded(remote.json("POST", remote.env_path(env, "/deploys"), json=body), as_json)


@deploy.command(name="list")
@env_option
@click.option("--service", "-s", default=None, help="Only this service.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@json_option
@remote_options
def list_(remote: Remote, env: str, service: str | None, limit: int, as_json: bool) -> None:
    """The environment's deploys, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if service:
        params["service"] = service
    found = field(
        remote.json("GET", remote.env_path(env, "/deploys"), params=params), "deploys", list
    )
    if as_json:
        _echo_json(found)
        return
    for item in found:
        click.echo(_deploy_line(item))


# -- verify -----------------------------------------------------------------------------------


def _checks_from_options(
    http: Sequence[str],
    expect_status: int,
    expect_text: str | None,
    expect_json: str | None,
    timeout: str,
    retry_for: str,
    error_rate: Sequence[str],
    latency: Sequence[str],
    minutes: float,
    margin: float,
) -> list[dict[str, Any]]:
    """The checks the options describe, as the file would (``parse_checks`` checks them)."""
    checks: list[dict[str, Any]] = []
    for i, url in enumerate(http):
        check: dict[str, Any] = {
            "name": f"http-{i + 1}",
            "http": url,
            "status": expect_status,
            "timeout": timeout,
            "retry_for": retry_for,
        }
        if expect_text is not None:
            check["contains"] = expect_text
        if expect_json is not None:
            name, sep, value = expect_json.partition("=")
            if not sep:
                raise click.UsageError("--expect-json takes FIELD=VALUE (VALUE as JSON or text)")
            try:
                wanted = json.loads(value)
            except ValueError:
                wanted = value
            check["json"] = {"field": name, "equals": wanted}
        checks.append(check)
    for kind, given in (("rate", error_rate), ("latency", latency)):
        for spec in given:
            flag, sep, metric = spec.partition(":")
            if not sep or not flag or not metric:
                raise click.UsageError(
                    f"--{'error-rate' if kind == 'rate' else 'latency'} takes FLAG:METRIC"
                )
            checks.append(
                {
                    "name": f"{metric}-{kind}",
                    "metric": metric,
                    "kind": kind,
                    "flag": flag,
                    "minutes": minutes,
                    "margin": margin,
                }
            )
    return checks


def _series_reader(remote: Remote, env: str) -> Any:
    def read(flag: str, metric: str, since: datetime, until: datetime) -> list[Any]:
        params = {
            "flag": flag,
            "metric": metric,
            "since": since.isoformat(),
            "until": until.isoformat(),
        }
        answer = remote.json("GET", remote.env_path(env, "/metrics"), params=params)
        return list(field(answer, "windows", list, "metrics answer"))

    return read


def _prometheus_reader(url: str) -> Any:
    client = httpx.Client(base_url=url.rstrip("/"), timeout=30)

    def query(text: str, at: datetime) -> float:
        try:
            response = client.get("/api/v1/query", params={"query": text, "time": at.timestamp()})
        except httpx.TransportError as exc:
            raise Unavailable(f"cannot reach Prometheus at {url}: {exc}") from None
        if response.status_code != 200:
            raise CliError(
                f"Prometheus refused {text!r}: {response.status_code} {response.text[:200]}"
            )
        result = response.json().get("data", {}).get("result", [])
        if not result:
            return 0.0
        return float(result[0]["value"][1])

    return query


@deploy.command()
@env_option
@click.option("--service", "-s", default=None, help="The service: its latest deploy here.")
@click.option("--deploy", "deploy_id", default=None, help="A deploy id (d12) instead.")
@click.option(
    "--checks",
    "checks_file",
    type=click.Path(path_type=Path),
    default=None,
    help="A YAML or JSON file of checks (docs/deploys.md).",
)
@click.option("--http", multiple=True, metavar="URL", help="An HTTP smoke check of URL.")
@click.option("--expect-status", default=200, show_default=True, type=click.IntRange(100, 599))
@click.option("--expect-text", default=None, help="Text the body must contain.")
@click.option(
    "--expect-json",
    default=None,
    metavar="FIELD=VALUE",
    help="A JSON field the body must have, dotted (status=ok, checks.db=true).",
)
@click.option("--timeout", default="5s", show_default=True, help="Per HTTP attempt.")
@click.option(
    "--retry-for",
    default="0s",
    show_default=True,
    help="Keep trying an HTTP check this long (60s, 2m) until it passes.",
)
@click.option(
    "--error-rate",
    multiple=True,
    metavar="FLAG:METRIC",
    help="Errors per exposure of FLAG's traffic after the deploy against before.",
)
@click.option(
    "--latency",
    multiple=True,
    metavar="FLAG:METRIC",
    help="A latency metric after the deploy against before.",
)
@click.option(
    "--minutes",
    default=5.0,
    show_default=True,
    type=click.FloatRange(0.5, 1440),
    help="Minutes after (and before) the deploy a metric check compares.",
)
@click.option(
    "--margin",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 9.99),
    help="The relative worsening a metric check still allows.",
)
@click.option(
    "--prometheus",
    default=None,
    envvar="UNVEIL_PROMETHEUS_URL",
    help="Prometheus, for checks with source: prometheus.",
)
@click.option(
    "--no-wait",
    is_flag=True,
    help="Judge metrics now even if the minutes after the deploy are not over.",
)
@click.option("--reason", "-r", default=None, help="Why, for the audit log.")
@json_option
@remote_options
def verify(
    remote: Remote,
    env: str,
    service: str | None,
    deploy_id: str | None,
    checks_file: Path | None,
    http: tuple[str, ...],
    expect_status: int,
    expect_text: str | None,
    expect_json: str | None,
    timeout: str,
    retry_for: str,
    error_rate: tuple[str, ...],
    latency: tuple[str, ...],
    minutes: float,
    margin: float,
    prometheus: str | None,
    no_wait: bool,
    reason: str | None,
    as_json: bool,
) -> None:
    """Run the checks against the deploy, store the result on it; exit 5 if one failed."""
    from unveil.service.verification import MetricCheck, parse_checks, run_checks

    if (service is None) == (deploy_id is None):
        raise click.UsageError("name the deploy: --service S (its latest here) or --deploy ID")
    raw = _checks_from_options(
        http,
        expect_status,
        expect_text,
        expect_json,
        timeout,
        retry_for,
        error_rate,
        latency,
        minutes,
        margin,
    )
    if checks_file is not None:
        loaded = read_data(
            checks_file.read_text(encoding="utf-8"), format_of(checks_file), str(checks_file)
        )
        listed = loaded.get("checks") if isinstance(loaded, Mapping) else loaded
        if not isinstance(listed, list):
            raise CliError(f"{checks_file}: must hold a list of checks under 'checks'")
        raw += listed
    if not raw:
        raise click.UsageError("no checks: give --http, --error-rate, --latency or --checks")
    checks = parse_checks({"checks": raw})  # every problem at once, before anything runs
    target = _target_deploy(remote, env, service, deploy_id)
    at = datetime.fromisoformat(str(field(target, "at", str, "deploy")))
    metric_minutes = [c.minutes for c in checks if isinstance(c, MetricCheck)]
    if metric_minutes and not no_wait:
        ready = at + timedelta(minutes=max(metric_minutes)) + METRICS_LAG
        wait = (ready - datetime.now(UTC)).total_seconds()
        if wait > 0:
            click.echo(f"waiting {wait:.0f} s for the minutes after the deploy", err=True)
            time.sleep(wait)
    with httpx.Client(follow_redirects=True) as client:
        result, evidence = run_checks(
            checks,
            at,
            client,
            _series_reader(remote, env),
            _prometheus_reader(prometheus) if prometheus else None,
        )
    body: dict[str, Any] = {"result": result, "checks": evidence}
    if reason:
        body["reason"] = reason
    path = remote.env_path(env, f"/deploys/{quote(str(target['id']), safe='')}/verification")
    stored = remote.json("POST", path, json=body)
    if as_json:
        _echo_json(stored)
    else:
        for check in evidence:
            mark = "passed" if check["passed"] else "FAILED"
            problem = f": {check['problem']}" if check.get("problem") else ""
            click.echo(f"{mark}  {check['name']} ({check['kind']}){problem}")
        click.echo(f"verification {result}: {_deploy_line(stored)}")
    if result != "passed":
        failed = sum(1 for c in evidence if not c["passed"])
        raise VerificationFailed(f"verification failed: {failed} of {len(evidence)} check(s)")


def _target_deploy(
    remote: Remote, env: str, service: str | None, deploy_id: str | None
) -> Mapping[str, Any]:
    if deploy_id is not None:
        return remote.json("GET", remote.env_path(env, f"/deploys/{quote(deploy_id, safe='')}"))
    params = {"service": service, "limit": 1}
    found = field(
        remote.json("GET", remote.env_path(env, "/deploys"), params=params), "deploys", list
    )
    if not found:
        raise CliError(f"service '{service}' has no deploy in '{env}' to verify")
    first: Mapping[str, Any] = found[0]
    return first


@deploy.command(name="settings")
@env_option
@click.option(
    "--on-rollback",
    type=click.Choice(["off", "keep", "ask"]),
    default=None,
    help="What a deploy rollback does to a flag whose code it takes away.",
)
@remote_options
def settings_(remote: Remote, env: str, on_rollback: str | None) -> None:
    """Show (or set, admin) what a deploy rollback does to the flags it takes the code of."""
    path = remote.env_path(env, "/deploy-settings")
    if on_rollback is None:
        found = remote.json("GET", path)
    else:
        found = remote.json("PUT", path, json={"on_deploy_rollback": on_rollback})
    click.echo(f"on deploy rollback: {found.get('on_deploy_rollback')}")


# -- status and timeline ----------------------------------------------------------------------


@click.command()
@env_option
@json_option
@remote_options
def status(remote: Remote, env: str, as_json: bool) -> None:
    """What runs in ENV, what is deployed dark, what is released without code."""
    found = remote.json("GET", remote.env_path(env, "/status"))
    if as_json:
        _echo_json(found)
        return
    click.echo(f"{remote.project} / {env}")
    services = field(found, "services", list, "status")
    click.echo("services:" if services else "services: none deployed")
    for s in services:
        verified = s.get("verified") or "not verified"
        flags = ", ".join(s.get("flags") or []) or "-"
        click.echo(
            f"  {s.get('service')} {s.get('version')} ({s.get('deploy')}, {verified})  "
            f"flags: {flags}"
        )
    dark = field(found, "deployed_dark", list, "status")
    click.echo("deployed dark:" if dark else "deployed dark: none")
    for d in dark:
        click.echo(f"  {d.get('flag')}  ({', '.join(d.get('services') or [])}): {d.get('why')}")
    bare = field(found, "released_without_code", list, "status")
    if not found.get("scanned"):
        click.echo("released without code: unknown (no current deploy carries a code scan)")
    else:
        click.echo("released without code:" if bare else "released without code: none")
    for b in bare:
        click.echo(f"  {b.get('flag')}: {b.get('why')}")


@click.command()
@env_option
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 1000))
@json_option
@remote_options
def timeline(remote: Remote, env: str, limit: int, as_json: bool) -> None:
    """Deploys and releases of ENV in one order, oldest first, with who and why."""
    found = remote.json("GET", remote.env_path(env, "/timeline"), params={"limit": limit})
    marks = field(found, "marks", list, "timeline")
    if as_json:
        _echo_json(marks)
        return
    for m in marks:
        why = f"  -- {m['reason']}" if m.get("reason") else ""
        verified = f" [verification {m['verified']}]" if m.get("verified") else ""
        click.echo(
            f"{m.get('at')}  {m.get('kind'):7}  {m.get('summary')}{verified}  "
            f"by {m.get('actor')}{why}"
        )
