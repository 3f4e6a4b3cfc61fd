"""Server answers written out for people, as the server gave them.

The server is the authority on what a flag is: ``flags show`` prints the
flag's data as it came, in YAML, and does not re-validate it as a document
of its own (a lone flag that names a segment or another flag is not a
valid document without them, and that was never the question).
"""

from __future__ import annotations

import io
import json
from typing import Any

from rich.console import Console
from rich.table import Table
from ruamel.yaml import YAML

from unveil.core import InvalidDocument
from unveil.sdk.files import read_data

__all__ = ["show_table", "yaml_text"]


def show_table(table: Table) -> None:
    """Print a table of what the server holds, every cell as the text it is.

    Rich reads ``[...]`` in a string as markup and ``:name:`` as an emoji, so a
    webhook URL ``http://x/[/x]`` crashed ``unveil webhooks list`` and
    ``[bold]`` in a reason restyled it: values people wrote are never markup.
    """
    Console(markup=False, emoji=False, highlight=False).print(table)


def yaml_text(data: Any) -> str:
    """``data`` as YAML 1.2 that reads back to exactly ``data`` (JSON, itself YAML, if not).

    Short collections inline read best, but the emitter writes some strings
    in ways its own reader takes differently; each attempt is read back and
    the first faithful one wins.
    """
    for flow, unicode in ((None, True), (False, True), (False, False)):
        out = io.StringIO()
        yaml = YAML(typ="safe", pure=True)
        yaml.default_flow_style = flow
        yaml.allow_unicode = unicode
        yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
        yaml.dump(data, out)
        text = out.getvalue()
        try:
            if read_data(text, "yaml") == data:
                return text
        except InvalidDocument:
            continue
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
