"""A loaded, compiled set of flags: the one entry point for evaluation.

``Ruleset.from_data(data)`` validates and compiles; ``evaluate``, ``value``
and ``enabled`` answer for a flag and a context and never raise. Whatever
goes wrong (an unknown flag, a default of the wrong type, a context that is
not a mapping, a rollout without a key) comes back as the caller's default
with an OpenFeature error code.
"""

from __future__ import annotations

from collections.abc import Mapping
from copy import deepcopy
from dataclasses import dataclass, replace
from typing import Any

from unveil.core.codec import _find_cycle, parse_document
from unveil.core.compiler import FlagFunction, compile_flag
from unveil.core.evaluation import Evaluation, as_context
from unveil.core.incremental import References, parse_patch, references
from unveil.core.model import Document, ErrorCode, FlagKind, Reason
from unveil.core.operators import is_number

__all__ = ["Ruleset", "default_fits"]

_ACCEPTS: Mapping[FlagKind, frozenset[type]] = {
    FlagKind.BOOLEAN: frozenset({bool}),
    FlagKind.STRING: frozenset({str}),
    FlagKind.NUMBER: frozenset({int, float}),
    FlagKind.JSON: frozenset({dict, list}),
}


def default_fits(kind: FlagKind, default: object) -> bool:
    """Whether a caller's default is of the flag's kind; None fits every kind."""
    if default is None:
        return True
    if kind is FlagKind.BOOLEAN:
        return isinstance(default, bool)
    if kind is FlagKind.STRING:
        return isinstance(default, str)
    if kind is FlagKind.NUMBER:
        return is_number(default)
    return isinstance(default, Mapping | list)


@dataclass(frozen=True, slots=True)
class _Entry:
    kind: FlagKind
    run: FlagFunction
    accepts: frozenset[type]
    copies: bool  # json values are copied out, so callers cannot change the flag
    boolean: bool
    off_variant: str


def _readable(context: object) -> dict[str, Any] | None:
    """``as_context``, and None too for a mapping that raises when it is read."""
    try:
        return as_context(context)
    except Exception:  # a caller's mapping may raise anything: evaluation never does
        return None


class Ruleset:
    """Flags ready to evaluate. Immutable in what it answers: a change makes a new one.

    It keeps no state between calls that shows: the same flag and context
    always give the same answer, and evaluating changes nothing. What an
    application wants to remember about evaluations (the SDK's exposure
    events) it keeps itself, from ``answer``.

    A flag is compiled on its first evaluation, not when the ruleset is made:
    a process with ten thousand flags starts serving after validation alone,
    and pays for compiling only the flags it uses (most processes use few of
    an environment's flags). Flags of one shape share one code object, each
    with its own constants, and flags that check one segment share that
    check (``unveil.core.compiler``). ``patched`` makes the ruleset after a
    patch by validating and compiling only what the patch touches; compiled
    flags it does not touch are kept.
    Two threads that evaluate a flag for the first time at once may both
    compile it; the two functions are the same, and either is kept.
    """

    __slots__ = ("_entries", "_references", "document")

    def __init__(
        self,
        document: Document,
        *,
        _compiled: dict[str, _Entry] | None = None,
        _references: References | None = None,
    ) -> None:
        self.document = document
        if _compiled is None:
            _refuse_cycles(document)
        self._entries: dict[str, _Entry] = {} if _compiled is None else _compiled
        self._references = _references

    def _load(self, key: str) -> _Entry | None:
        """Compile the flag (its prerequisites first) on its first evaluation."""
        flags = self.document.flags
        if key not in flags:
            return None
        entries = self._entries
        stack: list[tuple[str, bool]] = [(key, False)]
        while stack:
            name, ready = stack.pop()
            if name in entries:
                continue
            flag = flags[name]
            if not ready:
                stack.append((name, True))
                stack.extend((p.flag, False) for p in flag.prerequisites if p.flag not in entries)
                continue
            needed = {p.flag: entries[p.flag].run for p in flag.prerequisites}
            entries[name] = _Entry(
                flag.kind,
                compile_flag(flag, self.document, needed),
                _ACCEPTS[flag.kind],
                copies=flag.kind is FlagKind.JSON,
                boolean=flag.kind is FlagKind.BOOLEAN,
                off_variant=flag.off_variant,
            )
        return entries.get(key)

    def patched(self, patch: Mapping[str, Any]) -> Ruleset | None:
        """The ruleset after a patch (``unveil.core.patch``), or None to read the whole document.

        Only the flags and segments in the patch are validated, and only the
        flags whose answers they can move are compiled again (on their next
        evaluation); None means the incremental check found something, and
        the caller reads the whole patched document with ``from_data``, which
        refuses it with every problem (see ``unveil.core.incremental``).
        """
        refs = self._references
        if refs is None:
            refs = self._references = references(self.document)
        result = parse_patch(self.document, refs, patch)
        if result is None:
            return None
        entries = self._entries.copy()
        for key in result.stale:
            entries.pop(key, None)
        return Ruleset(result.document, _compiled=entries, _references=result.references)

    @classmethod
    def from_data(cls, data: object) -> Ruleset:
        """Validate plain data (a parsed YAML or JSON flags file) and compile it."""
        return cls(parse_document(data))

    def __contains__(self, key: object) -> bool:
        return key in self.document.flags

    def flag_keys(self) -> list[str]:
        """The flag keys, in document order."""
        return list(self.document.flags)

    def answer(self, key: str, context: object = None, default: Any = None) -> Evaluation | None:
        """The flag's own answer for the context, or None where ``value`` gives ``default``.

        It is what a caller that watches answers needs (the SDK counts
        exposures with it), at the cost of ``value``: watching costs no second
        evaluation. A json value is a copy, as from ``value``.
        """
        entry = self._entries.get(key) or self._load(key)
        if entry is None:
            return None
        if (
            default is not None
            and default.__class__ not in entry.accepts
            and not default_fits(entry.kind, default)
        ):
            return None
        if context.__class__ is not dict:
            context = _readable(context)
            if context is None:
                return None
        result = entry.run(context)
        if result.error_code is not None:
            return None
        if entry.copies:
            return replace(result, value=deepcopy(result.value))
        return result

    def is_on(self, result: Evaluation) -> bool:
        """What ``enabled`` says for an answer of ``answer`` (see ``enabled``)."""
        entry = self._entries.get(result.key) or self._load(result.key)
        if entry is None:  # a result of another ruleset, for a flag this one has not
            return bool(result.value)
        if entry.boolean:
            return result.value  # type: ignore[no-any-return]
        return result.variant != entry.off_variant

    def value(self, key: str, context: object = None, default: Any = None) -> Any:
        """The flag's value for the context, or ``default`` if anything is wrong."""
        entry = self._entries.get(key) or self._load(key)
        if entry is None:
            return default
        if (
            default is not None
            and default.__class__ not in entry.accepts
            and not default_fits(entry.kind, default)
        ):
            return default
        if context.__class__ is not dict:
            context = _readable(context)
            if context is None:
                return default
        result = entry.run(context)
        if result.error_code is not None:
            return default
        return deepcopy(result.value) if entry.copies else result.value

    def enabled(self, key: str, context: object = None, default: bool = False) -> bool:
        """Whether the flag is on for the context; ``default`` when that cannot be had.

        For a boolean flag this is its value (the same answer as ``value``,
        written out again because it is the call applications make most). For
        other kinds it is whether the context gets something other than the
        flag's off variant, so "is the feature on?" has one answer for every
        flag, including multi-variant flags imported from other systems.
        """
        entry = self._entries.get(key) or self._load(key)
        if entry is None:
            return default
        if context.__class__ is not dict:
            context = _readable(context)
            if context is None:
                return default
        result = entry.run(context)
        if result.error_code is not None:
            return default
        if entry.boolean:
            return result.value  # type: ignore[no-any-return]
        return result.variant != entry.off_variant

    def evaluate(self, key: str, context: object = None, default: Any = None) -> Evaluation:
        """The full answer: value, variant, reason and any error."""
        entry = self._entries.get(key) or self._load(key)
        if entry is None:
            return _error(key, default, ErrorCode.FLAG_NOT_FOUND, f"no flag '{key}'")
        if not default_fits(entry.kind, default):
            return _error(
                key,
                default,
                ErrorCode.TYPE_MISMATCH,
                f"flag '{key}' is {entry.kind}, the default is {type(default).__name__}",
            )
        try:
            ctx = as_context(context)
        except Exception as exc:  # a caller's mapping that raises when read
            return _error(
                key, default, ErrorCode.INVALID_CONTEXT, f"the context could not be read: {exc!r}"
            )
        if ctx is None:
            return _error(
                key,
                default,
                ErrorCode.INVALID_CONTEXT,
                f"a context must be a mapping, not {type(context).__name__}",
            )
        result = entry.run(ctx)
        if result.error_code is not None:
            return replace(result, value=default)
        return replace(result, value=deepcopy(result.value)) if entry.copies else result


def _error(key: str, default: Any, code: ErrorCode, message: str) -> Evaluation:
    return Evaluation(key, default, None, Reason.ERROR, code, message)


def _refuse_cycles(document: Document) -> None:
    """A prerequisite cycle can only come from a document built around the codec: refuse it."""
    graph = {
        k: [p.flag for p in f.prerequisites] for k, f in document.flags.items() if f.prerequisites
    }
    cycle = next(_find_cycle(graph), None) if graph else None
    if cycle is not None:
        raise ValueError(f"prerequisite cycle through flag '{cycle[0]}'")
