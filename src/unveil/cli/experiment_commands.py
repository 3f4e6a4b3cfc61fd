"""``unveil experiment``: dark-launch experiments as the server reports them.

``list`` shows every experiment an environment has data of; ``show NAME``
prints one report (docs/dark-launches.md, "Reading the report"): runs by
outcome, the mismatch rate with its interval, both paths' latency and the
candidate's difference with intervals, errors by type and the latest
examples. ``--json`` prints the API's answer as it is, for scripts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import click
from rich.console import Console
from rich.table import Table

from unveil.cli.errors import field
from unveil.cli.remote import Remote, remote_options

__all__ = ["experiment"]

env_option = click.option("--env", "-e", required=True, help="The environment.")
#: the most examples ``show`` prints (the server keeps 50; --examples asks for more)
SHOWN_EXAMPLES = 5
#: how much of an example's value ``show`` prints
_VALUE_WIDTH = 200


def _share(value: object) -> str:
    return "-" if not isinstance(value, int | float) else f"{value * 100:.2f}%"


def _rate(rate: object) -> str:
    """A mismatch rate with its interval: ``3.03% (2.35%..3.88%)``."""
    if not isinstance(rate, Mapping) or rate.get("value") is None:
        return "-"
    return f"{_share(rate['value'])} ({_share(rate.get('low'))}..{_share(rate.get('high'))})"


def _ms(value: object) -> str:
    return "-" if not isinstance(value, int | float) else f"{value:.2f}"


def _interval(estimate: object, signed: bool = False) -> str:
    """An estimate with its interval in ms; an open end is shown as ``?``."""
    if not isinstance(estimate, Mapping) or estimate.get("value") is None:
        return "-"

    def one(x: object) -> str:
        if not isinstance(x, int | float):
            return "?"
        return f"{x:+.2f}" if signed else f"{x:.2f}"

    return f"{one(estimate['value'])} ({one(estimate.get('low'))}..{one(estimate.get('high'))})"


def _path(remote: Remote, env: str, name: str = "") -> str:
    return remote.env_path(env, "/experiments" + (f"/{quote(name, safe='')}" if name else ""))


@click.group()
def experiment() -> None:
    """Dark launches: what the experiments' candidates did beside their controls."""


@experiment.command(name="list")
@env_option
@remote_options
def list_(remote: Remote, env: str) -> None:
    """Every experiment with data kept: runs, mismatch rate (95% interval), last seen."""
    found = field(remote.json("GET", _path(remote, env)), "experiments", list)
    table = Table(title=f"{remote.project} / {env}: experiments")
    for column in ("experiment", "runs", "mismatch rate (95%)", "errors", "last seen"):
        table.add_column(column)
    for item in found:
        outcomes = item.get("outcomes") if isinstance(item.get("outcomes"), Mapping) else {}
        table.add_row(
            str(field(item, "name", str, "experiment")),
            str(item.get("runs", 0)),
            _rate(item.get("mismatch_rate")),
            str(outcomes.get("error", 0)),
            str(item.get("last_seen", ""))[:19],
        )
    Console().print(table)


@experiment.command()
@click.argument("name")
@env_option
@click.option("--since", default=None, help="From this time (RFC 3339 or epoch seconds).")
@click.option("--until", default=None, help="Up to this time (default: now).")
@click.option("--examples", "shown", default=SHOWN_EXAMPLES, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the API's answer as JSON.")
@remote_options
def show(
    remote: Remote,
    name: str,
    env: str,
    since: str | None,
    until: str | None,
    shown: int,
    as_json: bool,
) -> None:
    """One experiment's report (default: the last hour)."""
    params = {k: v for k, v in (("since", since), ("until", until)) if v is not None}
    report = remote.json("GET", _path(remote, env, name), params=params)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    console = Console()
    outcomes = field(report, "outcomes", dict)
    console.print(
        f"[bold]{name}[/] in {remote.project} / {env}, "
        f"{str(report.get('since', ''))[:19]} to {str(report.get('until', ''))[:19]}"
    )
    console.print(
        f"runs: {report.get('runs', 0)}  "
        + "  ".join(f"{outcome}: {n}" for outcome, n in outcomes.items())
    )
    console.print(f"mismatch rate (95%): {_rate(report.get('mismatch_rate'))}")
    _latency(console, field(report, "latency", dict))
    errors = field(report, "errors", list)
    if errors:
        table = Table(title="candidate errors")
        for column in ("type", "count", "share of runs"):
            table.add_column(column)
        for item in errors:
            table.add_row(str(item.get("type")), str(item.get("count")), _share(item.get("share")))
        console.print(table)
    examples = field(report, "examples", list)
    if examples and shown > 0:
        table = Table(title=f"latest mismatches ({min(shown, len(examples))} of {len(examples)})")
        for column in ("at", "context", "control", "candidate"):
            table.add_column(column, overflow="fold")
        for item in examples[:shown]:
            table.add_row(
                str(item.get("at", ""))[:19],
                str(item.get("context") or "-"),
                _value(item.get("control")),
                _value(item.get("candidate")),
            )
        console.print(table)


def _value(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _VALUE_WIDTH else text[: _VALUE_WIDTH - 3] + "..."


_PARTS = ("control", "candidate", "difference")


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _latency(console: Console, latency: Mapping[str, Any]) -> None:
    """Both paths' quantiles and the candidate's difference, each with its interval."""
    control, candidate, difference = (_mapping(latency.get(k)) for k in _PARTS)
    table = Table(title="latency, ms (95% intervals)")
    for column in ("", "control", "candidate", "candidate - control"):
        table.add_column(column)
    for q in ("p50", "p95", "p99"):
        table.add_row(
            q,
            _interval(control.get(q)),
            _interval(candidate.get(q)),
            _interval(difference.get(q), signed=True),
        )
    table.add_row("runs timed", str(control.get("count", 0)), str(candidate.get("count", 0)), "")
    table.add_row("mean", _ms(control.get("mean")), _ms(candidate.get("mean")), "")
    console.print(table)
