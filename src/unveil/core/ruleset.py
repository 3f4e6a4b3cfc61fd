"""A loaded, compiled set of flags: the one entry point for evaluation.

``Ruleset.from_data(data)`` validates and compiles; ``evaluate``, ``value``
and ``enabled`` answer for a flag and a context and never raise. Whatever
goes wrong (an unknown flag, a default of the wrong type, a context that is
not a mapping, a rollout without a key) comes back as the caller's default
with an OpenFeature error code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from copy import deepcopy
from dataclasses import dataclass, field, replace
from typing import Any

from unveil.core.codec import parse_document
from unveil.core.compiler import FlagFunction, compile_flags
from unveil.core.evaluation import Evaluation, as_context
from unveil.core.model import Document, ErrorCode, FlagKind, Reason
from unveil.core.operators import is_number

__all__ = ["Observer", "Ruleset", "default_fits"]

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
    # targeting keys already reported to the observer, per variant (see Ruleset)
    seen: dict[str | None, set[str]] = field(default_factory=dict)


#: How many keys per variant a ruleset remembers as reported before starting over.
SEEN_LIMIT = 100_000


#: Told of each answer a flag gave (flag key, evaluation, context); for exposure events.
Observer = Callable[[str, Evaluation, Mapping[str, Any]], None]


class Ruleset:
    """Flags ready to evaluate. Immutable: reloading makes a new one.

    ``observer``, if given, hears of evaluations that gave the flag's own
    answer (not a default after an error); the SDK counts exposures with it.
    It hears once per targeting key and variant until ``forget_seen``, so that
    observing costs the hot path one set lookup, not a call: the only state a
    ruleset keeps.
    """

    __slots__ = ("_entries", "_observer", "document")

    def __init__(self, document: Document, observer: Observer | None = None) -> None:
        self.document = document
        self._observer = observer
        functions = compile_flags(document)
        self._entries: dict[str, _Entry] = {
            key: _Entry(
                flag.kind,
                functions[key],
                _ACCEPTS[flag.kind],
                copies=flag.kind is FlagKind.JSON,
                boolean=flag.kind is FlagKind.BOOLEAN,
                off_variant=flag.off_variant,
            )
            for key, flag in document.flags.items()
        }

    @classmethod
    def from_data(cls, data: object) -> Ruleset:
        """Validate plain data (a parsed YAML or JSON flags file) and compile it."""
        return cls(parse_document(data))

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def flag_keys(self) -> list[str]:
        """The flag keys, in document order."""
        return list(self._entries)

    def _observe(
        self, entry: _Entry, key: str, result: Evaluation, context: Mapping[str, Any]
    ) -> None:
        who = context.get("key")
        if who.__class__ is str:
            seen = entry.seen.get(result.variant)
            if seen is not None and who in seen:
                return
            if seen is None or len(seen) >= SEEN_LIMIT:
                seen = entry.seen[result.variant] = set()
            seen.add(who)
        self._observer(key, result, context)  # type: ignore[misc]

    def forget_seen(self) -> None:
        """Report every key again from now on (the observer's window passed)."""
        for entry in self._entries.values():
            entry.seen.clear()

    def value(self, key: str, context: object = None, default: Any = None) -> Any:
        """The flag's value for the context, or ``default`` if anything is wrong."""
        entry = self._entries.get(key)
        if entry is None:
            return default
        if (
            default is not None
            and default.__class__ not in entry.accepts
            and not default_fits(entry.kind, default)
        ):
            return default
        if context.__class__ is not dict:
            context = as_context(context)
            if context is None:
                return default
        result = entry.run(context)
        if result.error_code is not None:
            return default
        if self._observer is not None:  # the seen-before check inline: no call per evaluation
            who = context.get("key")
            seen = entry.seen.get(result.variant)
            if seen is None or who.__class__ is not str or who not in seen:
                self._observe(entry, key, result, context)
        return deepcopy(result.value) if entry.copies else result.value

    def enabled(self, key: str, context: object = None, default: bool = False) -> bool:
        """Whether the flag is on for the context; ``default`` when that cannot be had.

        For a boolean flag this is its value (the same answer as ``value``,
        written out again because it is the call applications make most). For
        other kinds it is whether the context gets something other than the
        flag's off variant, so "is the feature on?" has one answer for every
        flag, including multi-variant flags imported from other systems.
        """
        entry = self._entries.get(key)
        if entry is None:
            return default
        if context.__class__ is not dict:
            context = as_context(context)
            if context is None:
                return default
        result = entry.run(context)
        if result.error_code is not None:
            return default
        if self._observer is not None:  # the seen-before check inline: no call per evaluation
            who = context.get("key")
            seen = entry.seen.get(result.variant)
            if seen is None or who.__class__ is not str or who not in seen:
                self._observe(entry, key, result, context)
        if entry.boolean:
            return result.value  # type: ignore[no-any-return]
        return result.variant != entry.off_variant

    def evaluate(self, key: str, context: object = None, default: Any = None) -> Evaluation:
        """The full answer: value, variant, reason and any error."""
        entry = self._entries.get(key)
        if entry is None:
            return _error(key, default, ErrorCode.FLAG_NOT_FOUND, f"no flag '{key}'")
        if not default_fits(entry.kind, default):
            return _error(
                key,
                default,
                ErrorCode.TYPE_MISMATCH,
                f"flag '{key}' is {entry.kind}, the default is {type(default).__name__}",
            )
        ctx = as_context(context)
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
        if self._observer is not None:
            self._observe(entry, key, result, ctx)
        return replace(result, value=deepcopy(result.value)) if entry.copies else result


def _error(key: str, default: Any, code: ErrorCode, message: str) -> Evaluation:
    return Evaluation(key, default, None, Reason.ERROR, code, message)
