"""The ``unveil`` command.

Exit codes (``unveil.cli.errors`` maps every failure to one, in one place):
0 done; 1 the input was refused (a bad flags file, or the server said no);
2 the command was used wrongly; 3 something needed is not there (the server
is unreachable or failed, the port to serve on is taken); 4 the server's
answer could not be read; 5 a deploy's verification failed; 70 a bug in unveil.
"""

from __future__ import annotations

import errno
import json
import socket
from importlib.resources import files
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from unveil.cli.change_commands import changes
from unveil.cli.code_commands import code
from unveil.cli.deploy_commands import deploy, status, timeline
from unveil.cli.errors import CliError, Unavailable, UnveilGroup
from unveil.cli.experiment_commands import experiment
from unveil.cli.launch_commands import launches, templates
from unveil.cli.promote_commands import promote
from unveil.cli.release_commands import release
from unveil.cli.remote import DEFAULT_PROJECT, resolve_remote
from unveil.cli.schedule_commands import schedules
from unveil.cli.server_commands import apply, audit, export, flags, push_document
from unveil.cli.stale_commands import stale, stale_after
from unveil.cli.webhook_commands import webhooks
from unveil.core import Ruleset, UnveilError, parse_document
from unveil.migrate import import_unleash
from unveil.sdk.files import dump_document, format_of, load_document, read_data

DEMO_CONTEXTS: list[dict[str, Any]] = [
    {"key": "user-1", "country": "US", "plan": "free", "email": "ana@mail.test"},
    {
        "key": "user-7",
        "country": "FR",
        "plan": "pro",
        "email": "ben@mail.test",
        "app_version": "3.9.1",
    },
    {
        "key": "user-42",
        "country": "NL",
        "plan": "enterprise",
        "email": "cy@example.com",
        "app_version": "4.2.0",
        "now": "2026-12-24T10:00:00Z",
    },
    {
        "key": "user-108",
        "country": "DE",
        "plan": "free",
        "email": "di@unveil.test",
        "app_version": "4.0.0",
    },
    {"country": "BE", "plan": "pro"},
]


def _demo_path() -> Path:
    return Path(str(files("unveil.cli").joinpath("demo-flags.yaml")))


def _evaluation_table(ruleset: Ruleset, contexts: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for column in ("flag", "context", "value", "variant", "reason"):
        table.add_column(column, overflow="fold")
    for key in ruleset.flag_keys():
        for i, context in enumerate(contexts):
            result = ruleset.evaluate(key, context)
            shown = (
                f"[red]{result.error_code}[/]"
                if result.error_code is not None
                else json.dumps(result.value)
            )
            table.add_row(
                key if i == 0 else "",
                str(context.get("key", "(no key)")),
                shown,
                result.variant or "-",
                result.reason.value,
                end_section=i == len(contexts) - 1,
            )
    return table


@click.group(cls=UnveilGroup)
@click.version_option(package_name="unveil")
def main() -> None:
    """unveil: deploy dark, release on purpose."""


@main.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def validate(path: Path) -> None:
    """Check a flags file; print every problem with its path (exit 1 if any)."""
    document = load_document(path)
    Console().print(f"[green]ok[/]: {len(document.flags)} flags, {len(document.segments)} segments")


@main.command(name="format")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--to",
    "fmt",
    type=click.Choice(["yaml", "json"]),
    default=None,
    help="Output format (default: the file's own).",
)
def format_(path: Path, fmt: str | None) -> None:
    """Print a flags file in canonical form."""
    document = load_document(path)
    click.echo(dump_document(document, fmt or format_of(path)), nl=False)  # type: ignore[arg-type]


@main.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("flag")
@click.option("--context", "-c", "context_json", default="{}", help="The context as JSON.")
def evaluate(path: Path, flag: str, context_json: str) -> None:
    """Evaluate one flag of a flags file for one context; print the result as JSON."""
    try:
        context = json.loads(context_json)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc.msg}", param_hint="--context") from None
    ruleset = Ruleset(load_document(path))
    result = ruleset.evaluate(flag, context)
    click.echo(
        json.dumps(
            {
                "key": result.key,
                "value": result.value,
                "variant": result.variant,
                "reason": result.reason.value,
                "error_code": result.error_code.value if result.error_code else None,
                "error_message": result.error_message,
                "rule": result.rule,
            },
            indent=2,
        )
    )


DEMO_ENVIRONMENTS = ("development", "staging", "production")
#: the CLI's default project, so that the demo answers without --project
DEMO_PROJECT = DEFAULT_PROJECT

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("data"),
    show_default=True,
    help="Where the SQLite database lives when no --database-url is given.",
)
database_url_option = click.option(
    "--database-url",
    envvar="UNVEIL_DATABASE_URL",
    default=None,
    help="postgresql+psycopg://... to use PostgreSQL (or UNVEIL_DATABASE_URL).",
)


@main.group()
def db() -> None:
    """The server's database."""


@db.command(name="upgrade")
@data_dir_option
@database_url_option
def db_upgrade(data_dir: Path, database_url: str | None) -> None:
    """Apply every migration not yet applied (the server also does this on start)."""
    from unveil.store.database import default_url, upgrade

    upgrade(database_url or default_url(data_dir))
    click.echo("the database is up to date")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8400, show_default=True, type=int)
@data_dir_option
@database_url_option
@click.option("--demo", is_flag=True, help="Create a demo project and print tokens to try it.")
@click.option(
    "--stream-heartbeat",
    default=15.0,
    show_default=True,
    type=click.FloatRange(0.05, 3600),
    help="Seconds between heartbeats on idle SDK streams.",
)
@click.option(
    "--events-memory",
    default=64,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="Megabytes of event counts held in memory before the intake answers 429.",
)
@click.option(
    "--events-series",
    default=10_000,
    show_default=True,
    type=click.IntRange(1, 10_000_000),
    help="New series (flag, variant, metric, minute) per environment and minute.",
)
@click.option(
    "--worker-interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0.05, 60),
    help="Seconds between looks for due background work (and at the leadership).",
)
@click.option(
    "--release-tick",
    default=5.0,
    show_default=True,
    type=click.FloatRange(0.1, 300),
    help="Seconds between the worker's looks at each running release.",
)
@click.option(
    "--prometheus-url",
    default=None,
    envvar="UNVEIL_PROMETHEUS_URL",
    help="A Prometheus server whose queries release guards may name (source: prometheus).",
)
@click.option(
    "--metrics-lag",
    default=30,
    show_default=True,
    type=click.IntRange(1, 3600),
    help="Seconds after a metrics window ends before releases judge it (SDKs report late).",
)
@click.option("--webhook-retry-base", default=10.0, type=click.FloatRange(0.01, 3600), hidden=True)
@click.option(
    "--webhook-give-up", default=86_400.0, type=click.FloatRange(1, 7 * 86_400), hidden=True
)
@click.option("--stale-check", default=3600.0, type=click.FloatRange(0.05, 86_400), hidden=True)
# below the 60 s lease of a claimed delivery: an attempt always ends before another may begin
@click.option("--webhook-deadline", default=30.0, type=click.FloatRange(0.5, 50), hidden=True)
@click.option(
    "--document-limit",
    default=16,
    show_default=True,
    type=click.IntRange(1, 4096),
    envvar="UNVEIL_DOCUMENT_LIMIT",
    help="MiB a whole flags document (PUT .../document, a scheduled apply) or a deploy "
    "with its references may send; other bodies stay at 1 MiB (or UNVEIL_DOCUMENT_LIMIT).",
)
@click.option(
    "--body-timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0.1, 3600),
    envvar="UNVEIL_BODY_TIMEOUT",
    help="Seconds a request's body may stop arriving before the request gets 408 "
    "and its connection is closed.",
)
@click.option(
    "--forwarded-allow-ips",
    default="127.0.0.1",
    show_default=True,
    envvar="UNVEIL_FORWARDED_ALLOW_IPS",
    help="Proxies (comma-separated addresses, or *) whose X-Forwarded-For and "
    "X-Forwarded-Proto are believed: the client's address and whether it came over HTTPS.",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.option(
    "--access-log/--no-access-log",
    default=False,
    show_default=True,
    envvar="UNVEIL_ACCESS_LOG",
    help="Log every request (one JSON line each). Off by default: every answer is "
    "counted in /metrics by route and status, and at thousands of SDK requests a second "
    "the lines would be most of the server's work.",
)
def serve(
    host: str,
    port: int,
    data_dir: Path,
    database_url: str | None,
    demo: bool,
    stream_heartbeat: float,
    events_memory: int,
    events_series: int,
    worker_interval: float,
    release_tick: float,
    prometheus_url: str | None,
    metrics_lag: int,
    document_limit: int,
    body_timeout: float,
    webhook_retry_base: float,
    webhook_give_up: float,
    stale_check: float,
    webhook_deadline: float,
    forwarded_allow_ips: str,
    log_level: str,
    access_log: bool,
) -> None:
    """Run the server: admin API, SDK API, health and metrics.

    The port is taken first: if another process holds it, nothing else
    happens (no migration, no token minted) and the command exits 3.
    """
    import os

    import uvicorn

    from unveil.server.app import create_app
    from unveil.server.guard import Limits
    from unveil.server.logs import configure_logging
    from unveil.server.runtime import tune_garbage_collector
    from unveil.service.access import AccessService
    from unveil.store.database import default_url, make_engine, upgrade
    from unveil.store.unit import Store

    listening = _listen(host, port)
    try:
        url = database_url or default_url(data_dir)
        upgrade(url)
        engine = make_engine(url)
        store = Store(engine)
        access = AccessService(store)
        given = os.environ.get("UNVEIL_ADMIN_TOKEN")
        if given and access.authenticate(given) is None:
            access.create_token("admin (UNVEIL_ADMIN_TOKEN)", "admin", "admin", secret=given)
        elif not given and not demo and not access.has_admin():  # --demo prints its own
            secret = access.create_token("first admin", "admin", "admin")
            click.echo(f"admin token (shown once): {secret}", err=True)
        if demo:
            _seed_demo(store, access, _reachable_url(host, port))
        click.echo(f"unveil serving on http://{_url_host(host)}:{port}", err=True)
        app = create_app(
            engine,
            limits=Limits(document=document_limit << 20, idle=body_timeout),
            heartbeat_seconds=stream_heartbeat,
            events_memory=events_memory << 20,
            events_series=events_series,
            worker_interval=worker_interval,
            release_tick=release_tick,
            prometheus_url=prometheus_url,
            metrics_lag=metrics_lag,
            webhook_retry_base=webhook_retry_base,
            webhook_give_up=webhook_give_up,
            stale_check_seconds=stale_check,
            webhook_deadline=webhook_deadline,
        )
        configure_logging(log_level)
        tune_garbage_collector()
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            log_level=log_level,
            access_log=access_log,
            forwarded_allow_ips=forwarded_allow_ips,
        )
        uvicorn.Server(config).run(sockets=[listening])
    finally:
        listening.close()


def _listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port, or Unavailable saying why (taken, not ours).

    Listening at once (not only binding) holds the port: nobody can take it
    between this check and the server's start, and early clients wait in
    the queue instead of being refused.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        where = f"{_url_host(host)}:{port}"
        if exc.errno == errno.EADDRINUSE:
            raise Unavailable(
                f"port {port} is taken ({where} is in use by another process): "
                "stop that process or choose another port with --port; nothing was started"
            ) from None
        raise Unavailable(f"cannot listen on {where}: {exc.strerror or exc}") from None
    return sock


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _reachable_url(host: str, port: int) -> str:
    """Where a CLI on this machine reaches the server (any-address hosts are loopback)."""
    local = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104
    return f"http://{_url_host(local)}:{port}"


def _seed_demo(store: Any, access: Any, url: str) -> None:
    """The demo flags in project 'default' (what the CLI uses when no project is named)."""
    import secrets

    from unveil.core import document_to_data
    from unveil.service.flags import Change, FlagService

    service = FlagService(store)
    data = document_to_data(load_document(_demo_path()))
    for env in DEMO_ENVIRONMENTS:
        access.ensure_environment(DEMO_PROJECT, env)
        if not service.list_items("flags", DEMO_PROJECT, env):
            service.apply_document(DEMO_PROJECT, env, data, Change("demo seed", "demo data"))
    run = secrets.token_hex(3)  # token names are unique for ever: one pair per start
    admin = access.create_token(f"demo admin {run}", "admin", "admin")
    sdk = access.create_token(
        f"demo sdk (production) {run}",
        "sdk",
        environment_id=access.environment_of(DEMO_PROJECT, "production"),
    )
    environments = ", ".join(DEMO_ENVIRONMENTS)
    click.echo(f"demo project '{DEMO_PROJECT}' with environments {environments}", err=True)
    click.echo(f"demo admin token: {admin}", err=True)
    click.echo(f"demo SDK key (production): {sdk}", err=True)
    click.echo(f"for the CLI: export UNVEIL_URL={url} UNVEIL_TOKEN={admin}", err=True)


@main.group(name="import")
def import_() -> None:
    """Bring flags over from another system."""


@import_.command(name="unleash")
@click.argument("path", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the flags file here (YAML or JSON by its extension); default: print it.",
)
@click.option(
    "--env",
    "-e",
    default=None,
    help="Apply the result to this environment of a server instead of writing a file.",
)
@click.option("--dry-run", is_flag=True, help="With --env: show what would change.")
@click.option("--url", default=None, help="With --env: the server (or UNVEIL_URL).")
@click.option("--token", default=None, help="With --env: an admin token (or UNVEIL_TOKEN).")
@click.option("--project", "-p", default=None, help="With --env: the project.")
def import_unleash_(
    path: Path,
    output: Path | None,
    env: str | None,
    dry_run: bool,
    url: str | None,
    token: str | None,
    project: str | None,
) -> None:
    """Import Unleash's client features document (GET /api/client/features).

    Users keep their buckets: percentages and variants use Unleash's own
    hashing. Anything that cannot be carried over is listed and nothing is
    written or applied.
    """
    if env is not None and output is not None:
        raise click.UsageError("give either --output or --env, not both")
    errors = Console(stderr=True)
    # a refused import is an InvalidDocument too: every problem, exit 1
    source = read_data(path.read_text(encoding="utf-8"), format_of(path), str(path))
    imported = import_unleash(source)
    for note in imported.notes:
        errors.print(f"[yellow]note[/] [cyan]{note.path}[/]: {note.message}", highlight=False)
    if env is not None:
        remote = resolve_remote(url, token, project)
        reason = f"imported from {path.name}"
        push_document(remote, env, imported.document, dry_run, reason, "the import")
        return
    text = dump_document(parse_document(imported.document), format_of(output) if output else "yaml")
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        count = len(imported.document["flags"])
        errors.print(f"[green]imported[/] {count} flags into {output}")


@main.command()
def demo() -> None:
    """Validate the bundled demo flags and show what some users would get."""
    console = Console()
    path = _demo_path()
    try:
        ruleset = Ruleset(load_document(path))
    except UnveilError as exc:  # the bundled file is ours; this would be our bug
        raise CliError(f"the bundled demo flags are refused: {exc}") from None
    console.print(f"[green]valid[/]: {path}")
    console.print(_evaluation_table(ruleset, DEMO_CONTEXTS, "unveil demo: who gets what"))


_commands = (flags, apply, export, audit, release, experiment, schedules, changes, webhooks)
for _command in (*_commands, promote, code, templates, launches, deploy, status, timeline):
    main.add_command(_command)
flags.add_command(stale)
flags.add_command(stale_after)


if __name__ == "__main__":  # pragma: no cover
    main()
