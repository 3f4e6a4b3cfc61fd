"""Where the source code refers to flags: a scan of a tree, file:line per flag key.

A deploy carries the flags its code references (``unveil deploy record --scan``)
and the stale-flag report says where a flag is still used, so the scan must be
right for Python, useful for other languages and fast on a large repository.
It runs inside CI pipelines through the CLI, so this module imports neither
SQLAlchemy nor FastAPI: the standard library and ``pathspec`` only.

Python is read through its syntax tree (``ast``), never by text. A call counts
as a flag reference when all of these hold (the rule, and its limits, are in
docs/code-references.md):

- it is a method call ``<anything>.<name>(...)`` whose name is an evaluation
  method of the unveil client (``enabled``, ``value``, ``evaluate``,
  ``experiment``) or of an OpenFeature client (``get_<type>_value``,
  ``get_<type>_details``, and their ``_async`` forms), whatever the receiver
  is called; or a bare call of a name the same file bound to such a method
  (``is_on = flags.enabled`` ... ``is_on("x")``);
- the key is a string literal, first positional or by keyword (``key=`` for
  unveil, ``flag_key=`` for OpenFeature), and is a valid flag key (no spaces,
  no ``/ \\ ? # %``, at most 200 characters);
- the call has the shape of that method: no more positional arguments than it
  takes, no keyword it does not know (a ``**mapping`` is allowed), and for
  OpenFeature a default value as well (it is required there);
- the receiver is not itself a literal (``"text".value(...)`` is no flag).

Other files are read by regular expressions with exactly one capture group,
the key: built-in ones for JavaScript/TypeScript, Go and Java OpenFeature
clients (by file extension) and any the caller gives (on every text file).
Files ignored by the tree's ``.gitignore`` files, by ``excludes`` (gitignore
syntax, relative to the root) or under ``.git`` are not read; nor are binary
files (a NUL byte in the first 8 KiB), files above ``MAX_FILE_BYTES`` or
symbolic links.
"""

from __future__ import annotations

import ast
import bisect
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pathspec

from unveil.core import UnveilError

__all__ = [
    "DEFAULT_PATTERNS",
    "MAX_FILE_BYTES",
    "Reference",
    "ScanError",
    "ScanResult",
    "references_payload",
    "scan",
    "scan_tree",
]

#: files larger than this are skipped (generated bundles, data dumps, lock files)
MAX_FILE_BYTES = 2_000_000
_SNIFF_BYTES = 8192

#: the same rule as the flags document's keys (core/codec.py)
_KEY = re.compile(r"[^\s\x00-\x1f\x7f/\\?#%]{1,200}")


class ScanError(UnveilError):
    """The scan cannot start: the root is missing or not a folder, or a pattern is bad.

    ``field`` names what was wrong (``path``, ``pattern``, ``exclude``) so the
    CLI and the API can say which of their inputs it was.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True, slots=True, order=True)
class Reference:
    """One place a flag key is written: ``path`` relative to the root, ``/`` separated."""

    flag: str
    path: str
    line: int


@dataclass(frozen=True, slots=True)
class ScanResult:
    """The references found, and what was passed over (so a report can say so)."""

    references: list[Reference]
    files: int
    skipped: dict[str, str] = field(default_factory=dict)  # path -> why it was not read


# --- Python: the call shapes -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Shape:
    """What a flag-evaluating method accepts: its parameters, in order."""

    key: str  # the key parameter's name
    positional: int  # how many arguments it takes by position, at most
    keywords: frozenset[str]  # every keyword it knows
    needs_default: str | None = None  # a parameter that must be given (OpenFeature's default)


_UNVEIL = _Shape("key", 3, frozenset({"key", "context", "default"}))
# The dark-launch call: experiment("k", control=..., candidate=...); its other options
# are keywords, so any keyword is taken and the positional count is kept small.
_EXPERIMENT = _Shape("key", 4, frozenset())
_OPENFEATURE = _Shape(
    "flag_key",
    4,
    frozenset({"flag_key", "default_value", "evaluation_context", "flag_evaluation_options"}),
    needs_default="default_value",
)
_SHAPES: dict[str, _Shape] = {
    "enabled": _UNVEIL,
    "value": _UNVEIL,
    "evaluate": _UNVEIL,
    "experiment": _EXPERIMENT,
}
for _type in ("boolean", "string", "integer", "float", "object"):
    for _form in ("value", "details"):
        _SHAPES[f"get_{_type}_{_form}"] = _OPENFEATURE
        _SHAPES[f"get_{_type}_{_form}_async"] = _OPENFEATURE

# A file is parsed only if one of the names is written in it, followed by "(" or by
# the end of a binding (``is_on = client.enabled``): most files of a tree are not.
_PYTHON_HINT = re.compile(
    r"\b(?:enabled|value|evaluate|experiment|get_(?:boolean|string|integer|float|object)_"
    r"(?:value|details)(?:_async)?)\b"
)
_LITERALS = (ast.Constant, ast.JoinedStr, ast.List, ast.Tuple, ast.Dict, ast.Set)


def _call_key(call: ast.Call, shape: _Shape) -> tuple[str, int] | None:
    """The key of ``call`` and its line, if the call has the method's shape; else None."""
    if any(isinstance(a, ast.Starred) for a in call.args):
        return None
    if len(call.args) > shape.positional:
        return None
    named = {k.arg: k.value for k in call.keywords if k.arg is not None}
    if shape.keywords and any(name not in shape.keywords for name in named):
        return None
    if call.args:
        if shape.key in named:  # given twice: not this method
            return None
        key: ast.expr = call.args[0]
    elif shape.key in named:
        key = named[shape.key]
    else:
        return None
    if shape.needs_default is not None and len(call.args) < 2 and shape.needs_default not in named:
        has_spread = any(k.arg is None for k in call.keywords)
        if not has_spread:
            return None
    if isinstance(key, ast.Constant) and isinstance(key.value, str) and _KEY.fullmatch(key.value):
        return key.value, key.lineno
    return None


def _hint_lines(text: str) -> list[int]:
    """The lines (1-based, ascending) on which an evaluation method's name is written."""
    lines: list[int] = []
    line, at = 1, 0
    for match in _PYTHON_HINT.finditer(text):
        line += text.count("\n", at, match.start())
        at = match.start()
        if not lines or lines[-1] != line:
            lines.append(line)
    return lines


def _touches(lines: list[int], start: int, end: int) -> bool:
    """Whether any of ``lines`` (ascending) is in [start, end]."""
    i = bisect.bisect_left(lines, start)
    return i < len(lines) and lines[i] <= end


def _collect(tree: ast.AST, lines: list[int] | None) -> tuple[list[ast.Call], dict[str, _Shape]]:
    """The calls of a tree, and the names bound to a client's method.

    With ``lines``, a statement on none of them is not entered: no call of an
    evaluation method by name can be in it, and most of a file is passed over.
    """
    calls: list[ast.Call] = []
    bound: dict[str, _Shape] = {}  # local names bound to a client's method
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                if lines is not None:
                    start = child.lineno
                    decorators = getattr(child, "decorator_list", None)
                    if decorators:
                        start = min(start, *(d.lineno for d in decorators))
                    if not _touches(lines, start, child.end_lineno or start):
                        continue
                if isinstance(child, ast.Assign) and isinstance(child.value, ast.Attribute):
                    shape = _SHAPES.get(child.value.attr)
                    if shape is not None and not isinstance(child.value.value, _LITERALS):
                        for target in child.targets:
                            if isinstance(target, ast.Name):
                                bound[target.id] = shape
            elif isinstance(child, ast.Call):
                calls.append(child)
            stack.append(child)
    return calls, bound


def _python_references(source: bytes, path: str, text: str) -> list[Reference] | None:
    """The flag references of one Python file; None if it does not parse."""
    try:
        tree = ast.parse(source, filename=path)
    except (SyntaxError, ValueError):  # not Python 3, or a NUL byte
        return None
    calls, bound = _collect(tree, _hint_lines(text))
    if bound:  # a bound method is called by its own name, on lines of its own: read it all
        calls, bound = _collect(tree, None)
    found: list[Reference] = []
    for call in calls:
        func = call.func
        if isinstance(func, ast.Attribute):
            shape = _SHAPES.get(func.attr)
            if shape is None or isinstance(func.value, _LITERALS):
                continue
        elif isinstance(func, ast.Name) and func.id in bound:
            shape = bound[func.id]
        else:
            continue
        key = _call_key(call, shape)
        if key is not None:
            found.append(Reference(key[0], path, key[1]))
    return found


# --- Other languages: patterns -----------------------------------------------------------------

_Q = r"""["'`]"""
_JS = (
    # OpenFeature web/server SDK: client.getBooleanValue('key', false), ...Details
    rf"\.get(?:Boolean|String|Number|Object)(?:Value|Details)\(\s*{_Q}([^\s\"'`]+){_Q}",
    # OpenFeature React: useBooleanFlagValue('key', false), useFlag('key', default)
    rf"\buse(?:(?:Boolean|String|Number|Object)Flag(?:Value|Details)|Flag)\(\s*{_Q}([^\s\"'`]+){_Q}",
)
_JVM = (r"\.get(?:Boolean|String|Integer|Double|Object)(?:Value|Details)\(\s*\"([^\s\"]+)\"",)
#: built-in patterns per file extension (each with one group: the key)
DEFAULT_PATTERNS: dict[str, tuple[str, ...]] = {
    ".js": _JS,
    ".jsx": _JS,
    ".mjs": _JS,
    ".cjs": _JS,
    ".ts": _JS,
    ".tsx": _JS,
    ".mts": _JS,
    ".cts": _JS,
    # OpenFeature Go: client.BooleanValue(ctx, "key", false, evalCtx), ...ValueDetails
    ".go": (
        r"\.(?:Boolean|String|Int|Float|Object)Value(?:Details)?\(\s*[^,()]+,\s*\"([^\s\"]+)\"",
    ),
    # OpenFeature Java/Kotlin: client.getBooleanValue("key", false), ...Details
    ".java": _JVM,
    ".kt": _JVM,
}


def _compile(pattern: str, where: str) -> re.Pattern[str]:
    """A caller's pattern, refused with a clear reason unless it has exactly one group."""
    try:
        compiled = re.compile(pattern, re.MULTILINE)
    except re.error as exc:
        raise ScanError(where, f"{pattern!r} is not a valid regular expression: {exc}") from None
    if compiled.groups != 1:
        raise ScanError(
            where,
            f"{pattern!r} has {compiled.groups} capture groups; it needs exactly one (the key)"
            " - write other groups as (?:...)",
        )
    return compiled


_BUILT_IN: dict[str, tuple[re.Pattern[str], ...]] = {
    ext: tuple(re.compile(p, re.MULTILINE) for p in pats) for ext, pats in DEFAULT_PATTERNS.items()
}


def _pattern_references(
    text: str, path: str, patterns: Iterable[re.Pattern[str]]
) -> Iterator[Reference]:
    """Each match's group as a reference, on the line where the key is written."""
    newlines: list[int] | None = None
    for pattern in patterns:
        for match in pattern.finditer(text):
            key = match.group(1)
            if key is None or not _KEY.fullmatch(key):
                continue
            if newlines is None:
                newlines = [i for i, c in enumerate(text) if c == "\n"]
            start = match.start(1)
            yield Reference(key, path, _line_of(newlines, start))


def _line_of(newlines: list[int], offset: int) -> int:
    """The 1-based line of ``offset``, given the offsets of every newline."""
    lo, hi = 0, len(newlines)
    while lo < hi:
        mid = (lo + hi) // 2
        if newlines[mid] < offset:
            lo = mid + 1
        else:
            hi = mid
    return lo + 1


# --- The walk ----------------------------------------------------------------------------------


def _gitignore_spec(lines: list[str]) -> pathspec.GitIgnoreSpec:
    """The patterns compiled by pathspec's fastest matcher, or by its plain one when the
    fast one gives up: re2's set (the default when google-re2 is installed, as the SDK
    needs it) fails to compile past a memory budget, some 20,000 patterns."""
    try:
        return pathspec.GitIgnoreSpec.from_lines(lines)
    except (ValueError, TypeError):  # a pattern that is not valid: the caller says so
        raise
    except Exception:  # the fast matcher's own limit (re2.Error): the plain one has none
        return pathspec.GitIgnoreSpec.from_lines(lines, backend="simple")


def _spec(lines: Iterable[str], where: str) -> pathspec.GitIgnoreSpec:
    try:
        return _gitignore_spec(list(lines))
    except (ValueError, TypeError) as exc:
        raise ScanError(where, f"not a valid gitignore pattern: {exc}") from None


def _read_gitignore(folder: Path) -> pathspec.GitIgnoreSpec | None:
    try:
        text = (folder / ".gitignore").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    try:
        return _gitignore_spec(text.splitlines())
    except (ValueError, TypeError):  # a broken line in someone's .gitignore: ignore the file
        return None


#: One .gitignore in force: the folder it is in relative to the root ('' for the root,
#: or for a folder above it), what to put before a path relative to that folder (for a
#: folder above the root: the way down to the root), and its patterns.
_Layer = tuple[str, str, pathspec.GitIgnoreSpec]


def _ignored(rel: str, is_dir: bool, layers: Sequence[_Layer]) -> bool:
    """Git's rule: the deepest .gitignore with a matching pattern decides (last match wins)."""
    for base, lead, spec in reversed(layers):
        inner = lead + (rel[len(base) :] if base else rel)
        result = spec.check_file(inner + "/" if is_dir else inner)
        if result.include is not None:
            return result.include
    return False


def scan(root: Path, *, patterns: Sequence[str] = (), excludes: Sequence[str] = ()) -> ScanResult:
    """Scan ``root``: the references, sorted, with the count of files read and those skipped."""
    root = Path(root)
    if not root.exists():
        raise ScanError("path", f"{str(root)!r} does not exist")
    if not root.is_dir():
        raise ScanError("path", f"{str(root)!r} is not a folder")
    extra = tuple(_compile(p, "pattern") for p in patterns)
    for number, glob in enumerate(excludes):
        if not glob.strip():
            raise ScanError("exclude", f"exclude {number + 1} is empty")
    excluded = _spec(excludes, "exclude") if excludes else None
    found: set[Reference] = set()
    skipped: dict[str, str] = {}
    files = 0
    layers = _above(root)
    for folder, names in _walk(root, layers, excluded):
        for name in names:
            rel = folder + name
            if excluded is not None and excluded.match_file(rel):
                continue
            if _ignored(rel, False, layers):
                continue
            why = _scan_file(root / rel, rel, extra, found)
            if why is None:
                files += 1
            else:
                skipped[rel] = why
    return ScanResult(sorted(found), files, skipped)


def _above(root: Path) -> list[_Layer]:
    """The .gitignore files between the root and the top of its git repository.

    Scanning ``services/api`` of a repository honours the repository's own
    .gitignore as git would. Outside a repository (no ``.git`` above) none
    is read; and a root that those files ignore (scanning ``build/`` on
    purpose) is scanned without them.
    """
    here = root.resolve()
    chain = [here, *here.parents]
    top = next((i for i, folder in enumerate(chain) if (folder / ".git").exists()), None)
    if top is None or top == 0:
        return []
    layers: list[_Layer] = []
    for folder in reversed(chain[1 : top + 1]):  # from the top down to the root's parent
        spec = _read_gitignore(folder)
        if spec is not None:
            layers.append(("", here.relative_to(folder).as_posix() + "/", spec))
    if layers and _ignored("", True, [(b, lead[:-1], s) for b, lead, s in layers]):
        return []
    return layers


def _walk(
    root: Path,
    layers: list[_Layer],
    excluded: pathspec.GitIgnoreSpec | None,
) -> Iterator[tuple[str, list[str]]]:
    """Depth-first over the folders not ignored, keeping ``layers`` to the current folder.

    An ignored folder is not entered at all: as in git, nothing under it can be
    taken back by a negated pattern.
    """
    stack: list[tuple[str, int]] = [("", len(layers))]
    while stack:
        folder, depth = stack.pop()
        del layers[depth:]
        spec = _read_gitignore(root / folder)
        if spec is not None:
            layers.append((folder, "", spec))
        dirs: list[str] = []
        names: list[str] = []
        try:
            entries = list(os.scandir(root / folder))
        except OSError:
            continue
        for entry in entries:
            if entry.is_symlink():
                continue
            if entry.is_dir(follow_symlinks=False):
                if entry.name == ".git":
                    continue
                rel = folder + entry.name
                if excluded is not None and excluded.match_file(rel + "/"):
                    continue
                if _ignored(rel, True, layers):
                    continue
                dirs.append(entry.name)
            elif entry.is_file(follow_symlinks=False):
                names.append(entry.name)
        names.sort()
        yield folder, names
        stack.extend((folder + name + "/", len(layers)) for name in sorted(dirs, reverse=True))


def _scan_file(
    full: Path, rel: str, extra: Sequence[re.Pattern[str]], found: set[Reference]
) -> str | None:
    """Add one file's references to ``found``; the reason it was skipped, or None."""
    try:
        size = full.stat().st_size
        if size > MAX_FILE_BYTES:
            return f"larger than {MAX_FILE_BYTES} bytes"
        data = full.read_bytes()
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if b"\0" in data[:_SNIFF_BYTES]:
        return "binary"
    suffix = os.path.splitext(rel)[1].lower()
    built_in = _BUILT_IN.get(suffix, ())
    text: str | None = None
    if suffix in (".py", ".pyi"):
        text = data.decode("utf-8", errors="replace")
        if _PYTHON_HINT.search(text):
            refs = _python_references(data, rel, text)
            if refs is None:
                if not extra:
                    return "not valid Python"
            else:
                found.update(refs)
    if not built_in and not extra:
        return None
    if text is None:
        text = data.decode("utf-8", errors="replace")
    found.update(_pattern_references(text, rel, (*built_in, *extra)))
    return None


def scan_tree(
    root: Path, *, patterns: Sequence[str] = (), excludes: Sequence[str] = ()
) -> list[Reference]:
    """Every flag reference under ``root``, sorted by (flag, path, line).

    Raises ScanError naming the problem for a root that does not exist or is
    not a folder, or a pattern that is not a valid regex with exactly one group.
    """
    return scan(root, patterns=patterns, excludes=excludes).references


def references_payload(refs: Sequence[Reference]) -> dict[str, list[str]]:
    """``{"flag-key": ["src/app.py:12", ...]}``: the JSON a deploy carries."""
    payload: dict[str, list[str]] = {}
    for ref in sorted(refs):
        payload.setdefault(ref.flag, []).append(f"{ref.path}:{ref.line}")
    return payload
