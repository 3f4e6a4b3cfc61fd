"""What changed between two versions of a flag, a segment or a whole document, for people.

``apply --dry-run`` and ``audit`` both have a before and an after in plain
data (the canonical flags-file form) and must say what differs in a way a
person can check at a glance: which flags and segments are added, changed
or removed, how many, and inside a changed one which fields moved from what
to what. Large changes stay readable: counts come first, the per-field
lines are bounded per item and left out when very many items changed, and
the keys listed are bounded too (an environment of ten thousand flags
applied for the first time shows its counts, fifty keys and "… and 9950
more flags added").
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "ABSENT",
    "DocumentDiff",
    "FieldChange",
    "KEYS_SHOWN",
    "diff_documents",
    "diff_values",
    "document_lines",
    "field_lines",
    "one_line",
]

PARTS: Final = ("flags", "segments")
#: below this depth a changed value is shown whole rather than taken apart
MAX_DEPTH: Final = 6
#: per-field lines shown for one changed flag or segment
FIELD_LINES: Final = 12
#: beyond this many changed items, only their keys are listed
DETAILED_ITEMS: Final = 25
#: keys listed per kind of change (added, changed, removed) of flags or of segments
KEYS_SHOWN: Final = 50
#: a value is cut to this many characters on a line
VALUE_WIDTH: Final = 100


class _Absent:
    """The side of a change where the field does not exist."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Final = _Absent()


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field that differs: where, and its value before and after (or ABSENT)."""

    path: str
    before: Any
    after: Any


def diff_values(before: Any, after: Any) -> list[FieldChange]:
    """Every field that differs between two JSON values, in the after's order.

    Mappings are compared key by key and lists item by item (so a rule put in
    front shows every rule after it as changed: honest, if not minimal).
    Depth is bounded: nothing recurses on how deeply the data nests.
    """
    out: list[FieldChange] = []
    # an explicit stack, not recursion: (path, before, after, depth), in reverse order
    stack: list[tuple[str, Any, Any, int]] = [("", before, after, 0)]
    while stack:
        path, old, new, depth = stack.pop()
        if _same(old, new):
            continue
        if depth < MAX_DEPTH and isinstance(old, Mapping) and isinstance(new, Mapping):
            keys = [*new, *(k for k in old if k not in new)]
            stack.extend(
                (_join(path, str(key)), old.get(key, ABSENT), new.get(key, ABSENT), depth + 1)
                for key in reversed(keys)
            )
        elif depth < MAX_DEPTH and _is_list(old) and _is_list(new):
            stack.extend(
                (
                    f"{path}[{i}]",
                    old[i] if i < len(old) else ABSENT,
                    new[i] if i < len(new) else ABSENT,
                    depth + 1,
                )
                for i in reversed(range(max(len(old), len(new))))
            )
        else:
            out.append(FieldChange(path or "(whole)", old, new))
    return out


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values: ``1 == True`` in Python, but not in a flags file."""
    if type(a) is not type(b):
        return False
    if not isinstance(a, Mapping | list | tuple):
        return bool(a == b)
    try:
        return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    except (RecursionError, TypeError, ValueError):
        return bool(a == b)


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def one_line(value: Any, width: int = VALUE_WIDTH) -> str:
    """A JSON value on one line, cut with an ellipsis when longer than ``width``."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def field_lines(changes: Sequence[FieldChange], limit: int = FIELD_LINES) -> list[str]:
    """``+ path: value``, ``- path: value`` and ``~ path: before -> after``, at most ``limit``."""
    lines = []
    for change in changes[:limit]:
        if change.before is ABSENT:
            lines.append(f"+ {change.path}: {one_line(change.after)}")
        elif change.after is ABSENT:
            lines.append(f"- {change.path}: {one_line(change.before)}")
        else:
            lines.append(
                f"~ {change.path}: {one_line(change.before, 60)} -> {one_line(change.after, 60)}"
            )
    if len(changes) > limit:
        lines.append(f"… and {len(changes) - limit} more")
    return lines


@dataclass(frozen=True, slots=True)
class DocumentDiff:
    """Per part (segments, flags): keys added, changed (with their fields) and removed."""

    added: Mapping[str, list[str]]
    changed: Mapping[str, dict[str, list[FieldChange]]]
    removed: Mapping[str, list[str]]

    @property
    def empty(self) -> bool:
        """Nothing differs."""
        return not any(self.added[p] or self.changed[p] or self.removed[p] for p in PARTS)


def _items(document: Any, part: str) -> Mapping[str, Any]:
    items = document.get(part) if isinstance(document, Mapping) else None
    return items if isinstance(items, Mapping) else {}


def diff_documents(before: Any, after: Any) -> DocumentDiff:
    """What differs between two flags documents, item by item and field by field."""
    added: dict[str, list[str]] = {}
    changed: dict[str, dict[str, list[FieldChange]]] = {}
    removed: dict[str, list[str]] = {}
    for part in PARTS:
        old, new = _items(before, part), _items(after, part)
        added[part] = [k for k in new if k not in old]
        removed[part] = [k for k in old if k not in new]
        changed[part] = {}
        for key in new:
            if key in old:
                fields = diff_values(old[key], new[key])
                if fields:
                    changed[part][key] = fields
    return DocumentDiff(added, changed, removed)


def _count_line(diff: DocumentDiff) -> str:
    parts = []
    for part in ("flags", "segments"):
        counts = [
            f"{n} {word}"
            for n, word in (
                (len(diff.added[part]), "added"),
                (len(diff.changed[part]), "changed"),
                (len(diff.removed[part]), "removed"),
            )
            if n
        ]
        if counts:
            parts.append(f"{part}: {', '.join(counts)}")
    return "; ".join(parts) if parts else "no changes"


def _capped(lines: list[str], limit: int, rest: str) -> list[str]:
    """The first ``limit`` lines, then one saying how many more (``rest`` names them)."""
    if len(lines) <= limit:
        return lines
    return [*lines[:limit], f"… and {len(lines) - limit} more {rest}"]


def document_lines(
    diff: DocumentDiff,
    keys: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
    detailed_items: int = DETAILED_ITEMS,
    keys_shown: int = KEYS_SHOWN,
) -> list[str]:
    """Counts first, then ``+``/``~``/``-`` per item and, under ``~``, its changed fields.

    At most ``keys_shown`` items of each kind (flags added, flags changed...)
    are listed; a last line says how many more.

    ``keys`` (``{"added": {"flags": [...]}, ...}``) is the server's own list of
    what it added, changed and removed, when it gave one: it decides the
    items; ``diff`` supplies the fields.
    """
    chosen: dict[str, Mapping[str, Sequence[str]]] = {
        "added": diff.added,
        "changed": {p: list(diff.changed[p]) for p in PARTS},
        "removed": diff.removed,
    }
    if keys is not None:
        chosen.update({b: keys[b] for b in chosen if isinstance(keys.get(b), Mapping)})
    shown = DocumentDiff(
        {p: list(chosen["added"].get(p, [])) for p in PARTS},
        {p: {k: diff.changed[p].get(k, []) for k in chosen["changed"].get(p, [])} for p in PARTS},
        {p: list(chosen["removed"].get(p, [])) for p in PARTS},
    )
    lines = [_count_line(shown)]
    many = sum(len(shown.changed[p]) for p in PARTS) > detailed_items
    for part in PARTS:
        noun = part[:-1]
        added = [f"+ {noun} {key}" for key in shown.added[part]]
        lines += _capped(added, keys_shown, f"{part} added")
        changed = list(shown.changed[part].items())
        for key, fields in changed[:keys_shown]:
            lines.append(f"~ {noun} {key}")
            if not many:
                lines += [f"    {line}" for line in field_lines(fields)]
        if len(changed) > keys_shown:
            lines.append(f"… and {len(changed) - keys_shown} more {part} changed")
        removed = [f"- {noun} {key}" for key in shown.removed[part]]
        lines += _capped(removed, keys_shown, f"{part} removed")
    if many:
        lines.append(f"(fields left out: more than {detailed_items} items changed)")
    return lines
