"""Flags files on disk: YAML 1.2 or JSON in, canonical YAML or JSON out.

YAML is read as version 1.2, where ``on``, ``off``, ``yes`` and ``no`` are
plain strings: ``serve: on`` names the variant ``on``. Duplicate keys are
refused in both formats. Timestamps that YAML reads as dates come back as
RFC 3339 text, so that a loaded file is plain JSON-shaped data.

JSON needs nothing beyond Python. YAML needs ruamel.yaml, which a plain
install of unveil does not bring (``pip install 'unveil[yaml]'``); without
it, reading or writing YAML raises ``MissingExtra``, which says so.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from unveil.core import (
    Document,
    InvalidDocument,
    Problem,
    UnveilError,
    document_to_data,
    parse_document,
)

if TYPE_CHECKING:
    from ruamel.yaml import YAML

__all__ = ["Format", "MissingExtra", "dump_document", "format_of", "load_document", "read_data"]

Format = Literal["yaml", "json"]

_BREAKS = frozenset("\x85\u2028\u2029")


class MissingExtra(UnveilError, ImportError):
    """A feature needs a package that this installation lacks; the message names the extra."""


def _yaml() -> YAML:
    """A YAML 1.2 reader and writer (safe, pure Python), or ``MissingExtra``."""
    try:
        from ruamel.yaml import YAML
    except ImportError:
        raise MissingExtra(
            "YAML flags files need the ruamel.yaml package: pip install 'unveil[yaml]' "
            "(or use a .json flags file)"
        ) from None
    return YAML(typ="safe", pure=True)


def format_of(path: str | Path) -> Format:
    """JSON for ``.json`` files, YAML for everything else."""
    return "json" if str(path).lower().endswith(".json") else "yaml"


#: the most values a YAML document may stand for once its aliases are expanded (or
#: one per character of its text, if more: a document without aliases is never
#: refused); an alias repeats a node without its text, so a few lines could
#: stand for billions
MAX_EXPANDED = 1_000_000


class _TooLarge(Exception):
    """A document that is not plain data: an alias inside itself, or too many values."""


def _plain(value: Any, left: list[int] | None = None, within: frozenset[int] = frozenset()) -> Any:
    """The value as plain data (dicts, lists, text), each alias's node copied out.

    ``left`` counts down the values still allowed (and holds the bound);
    ``within`` holds the nodes being copied, so a node met again inside itself
    (``a: &a [*a]``) is refused, not followed for ever.
    """
    if left is None:
        left = [MAX_EXPANDED, MAX_EXPANDED]
    left[0] -= 1
    if left[0] < 0:
        raise _TooLarge(f"its aliases stand for more than {left[1]} values")
    if isinstance(value, Mapping | list):
        if id(value) in within:
            raise _TooLarge("an alias refers to itself (the node holds its own alias)")
        inner = within | {id(value)}
        if isinstance(value, Mapping):
            return {k: _plain(v, left, inner) for k, v in value.items()}
        return [_plain(v, left, inner) for v in value]
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return value


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


_TOO_DEEP = "nested too deeply (lists and mappings within one another)"


def read_data(text: str, fmt: Format, source: str = "<text>") -> Any:
    """Plain data from YAML or JSON text; syntax errors name line and column."""
    if fmt == "json":
        try:
            return json.loads(text, object_pairs_hook=_refuse_duplicates)
        except json.JSONDecodeError as exc:
            where = f"{source}:{exc.lineno}:{exc.colno}"
            raise InvalidDocument([Problem(where, exc.msg)]) from None
        except ValueError as exc:
            raise InvalidDocument([Problem(source, str(exc))]) from None
        except RecursionError:
            raise InvalidDocument([Problem(source, _TOO_DEEP)]) from None
    yaml = _yaml()
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    try:
        bound = max(MAX_EXPANDED, len(text))
        return _plain(yaml.load(text), [bound, bound])
    except RecursionError:
        raise InvalidDocument([Problem(source, _TOO_DEEP)]) from None
    except _TooLarge as exc:
        raise InvalidDocument([Problem(source, str(exc))]) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = (exc.problem or exc.context or "invalid YAML").strip()
        raise InvalidDocument([Problem(where, problem)]) from None
    except YAMLError as exc:
        raise InvalidDocument([Problem(source, str(exc))]) from None


def load_document(path: str | Path) -> Document:
    """Read and validate a flags file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidDocument([Problem(str(path), f"cannot read: {exc}")]) from None
    return parse_document(read_data(text, format_of(path), str(path)))


def dump_document(document: Document, fmt: Format = "yaml") -> str:
    """The canonical text of a document."""
    data = document_to_data(document)
    if fmt == "json":
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    # Short collections inline reads best. The emitter writes some strings
    # plain in inline collections that its own reader refuses (":a"), so the
    # text is read back, and written all in block style when it differs.
    from ruamel.yaml.error import YAMLError

    for flow in (None, False):
        text = _dump_yaml(data, flow)
        try:
            if _plain(_yaml().load(text)) == data:
                return text
        except YAMLError:
            continue
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"  # JSON is YAML 1.2 too


def _dump_yaml(data: Any, flow: bool | None) -> str:
    yaml = _yaml()
    yaml.default_flow_style = flow
    # The emitter writes some line-break characters raw inside quotes, where a
    # reader folds them to spaces; such documents are written all-escaped.
    yaml.allow_unicode = not any(ch in _BREAKS for ch in json.dumps(data, ensure_ascii=False))
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()
