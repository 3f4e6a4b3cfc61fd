"""``unveil code scan``: where the source refers to flags, file:line per flag.

It reads the tree on this machine and talks to no server, so a CI step can
run it anywhere; ``unveil deploy record --scan`` sends the same result with
a deploy. The rules of what counts as a reference are in
``unveil.service.references`` and docs/code-references.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from unveil.service.references import ScanResult, references_payload, scan

__all__ = ["code"]

pattern_option = click.option(
    "--pattern",
    "patterns",
    multiple=True,
    metavar="REGEX",
    help="A regular expression with one group, the key, tried on every text file (repeatable).",
)
exclude_option = click.option(
    "--exclude",
    "excludes",
    multiple=True,
    metavar="GLOB",
    help="Leave out paths matching this gitignore-style pattern, from the root (repeatable).",
)


@click.group()
def code() -> None:
    """Find where the code refers to flags."""


@code.command(name="scan")
@click.argument("path", type=click.Path(path_type=Path))
@pattern_option
@exclude_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON: {flag: [path:line, ...]}.")
def scan_(path: Path, patterns: tuple[str, ...], excludes: tuple[str, ...], as_json: bool) -> None:
    """Scan PATH: Python through its syntax tree, other languages through patterns.

    The tree's .gitignore files are honoured; binary files, files over 2 MB
    and symbolic links are not read.
    """
    result = scan(path, patterns=patterns, excludes=excludes)
    if as_json:
        click.echo(json.dumps(_json(result), indent=2, ensure_ascii=False))
        return
    _table(result, path)


def _json(result: ScanResult) -> dict[str, object]:
    """The deploy's ``references`` object, with what was read and skipped beside it."""
    return {
        "references": references_payload(result.references),
        "files": result.files,
        "skipped": result.skipped,
    }


def _table(result: ScanResult, path: Path) -> None:
    console = Console()
    flags = len({ref.flag for ref in result.references})
    table = Table(title=f"flag references under {path}")
    for column in ("flag", "where"):
        table.add_column(column)
    previous = None
    for ref in result.references:
        table.add_row(ref.flag if ref.flag != previous else "", f"{ref.path}:{ref.line}")
        previous = ref.flag
    if result.references:
        console.print(table)
    skipped = f", {len(result.skipped)} skipped" if result.skipped else ""
    console.print(
        f"{flags} flag(s) in {len(result.references)} place(s); "
        f"{result.files} file(s) read{skipped}"
    )
