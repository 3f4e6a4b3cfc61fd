"""Turn each flag into one small Python function, once, when flags load.

Evaluation is the hot path of every application that uses flags, so the
compiler writes a function per flag with every decision laid out flat:
constants bound ahead of time (sets for ``in``, tuples for prefixes,
compiled patterns, precomputed results, rollout thresholds), no loops over
the model, no allocation on the way to an answer.

Generated source never contains text from the document: every attribute
name, value, number and result is passed in as a bound constant (``_a0``,
``_s0``, ``_r0``...), so no document can inject code, and flags of the same
shape have the same source. That source is compiled once; each flag's
function is that code with its own constants as the defaults of its
parameters after ``ctx`` (read as locals, the fastest names Python has).
Flags of one shape share one code object: a compiled flag holds a function
object and a tuple of its constants, not code of its own. Only this module
calls these functions, always with the context alone.

The fast path covers the common shapes (string attributes, string keys). If
it meets anything else it hands the context to ``ReferenceEvaluator``, the
definition of evaluation; tests check that both always agree.
"""

from __future__ import annotations

import builtins
from bisect import bisect_right
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache, partial
from types import CodeType, FunctionType, MappingProxyType
from typing import Any
from weakref import WeakValueDictionary

import mmh3

from unveil.core.bucketing import scheme
from unveil.core.evaluation import (
    ContextCheck,
    Evaluation,
    ReferenceEvaluator,
    predicate_of,
    sample_check,
    sole_variant,
)
from unveil.core.model import (
    DEFAULT_SCHEME,
    Clause,
    Condition,
    Document,
    Flag,
    Operator,
    Reason,
    Sample,
    Segment,
    SegmentMatch,
    Serve,
)

__all__ = ["FlagFunction", "closure", "compile_flag", "compile_flags"]

FlagFunction = Callable[[dict[str, Any]], Evaluation]


@dataclass(slots=True)
class _Source:
    """The text of one generated function and the constants it refers to."""

    lines: list[str]
    names: dict[str, object]

    def bind(self, prefix: str, value: object) -> str:
        name = f"_{prefix}{len(self.names)}"
        self.names[name] = value
        return name

    def emit(self, depth: int, text: str) -> None:
        self.lines.append("    " * depth + text)


@lru_cache(maxsize=65_536)
def _strings(values: tuple[str, ...]) -> frozenset[str]:
    """One set for all the clauses that list the same strings (sets are a fifth of a kB)."""
    return frozenset(values)


def _clause_expr(src: _Source, clause: Clause) -> str:
    attr = src.bind("a", clause.attr)
    strings_only = all(isinstance(v, str) for v in clause.values)
    plain = not clause.ignore_case
    if clause.op in (Operator.EQ, Operator.IN) and strings_only and plain:
        return f"(ctx.get({attr}) in {src.bind('s', _strings(clause.values))})"
    if clause.op in (Operator.STARTS_WITH, Operator.ENDS_WITH) and plain:
        method = "startswith" if clause.op is Operator.STARTS_WITH else "endswith"
        var = src.bind("v", None)
        needles = src.bind("x", tuple(clause.values))
        return f"(_isinstance({var} := ctx.get({attr}), _str) and {var}.{method}({needles}))"
    predicate = src.bind("p", predicate_of(clause))
    return f"{predicate}(ctx.get({attr}))"


#: A segment's name to the check of whether a context is in it.
SegmentChecks = Callable[[str], ContextCheck]


def _condition_expr(src: _Source, cond: Condition, in_segment: SegmentChecks, flag: Flag) -> str:
    if isinstance(cond, Clause):
        expr = _clause_expr(src, cond)
    elif isinstance(cond, Sample):
        expr = f"{src.bind('q', sample_check(flag, cond))}(ctx)"
    else:
        expr = f"{src.bind('g', in_segment(cond.segment))}(ctx)"
    return f"(not {expr})" if cond.negate else expr


def _result(flag: Flag, variant: str, reason: Reason, rule: int | None) -> Evaluation:
    return Evaluation(flag.key, flag.variants[variant], variant, reason, None, None, rule)


def _emit_serve(
    src: _Source, depth: int, flag: Flag, serve: Serve, reason: Reason, rule: int | None
) -> None:
    if isinstance(serve, str):
        src.emit(depth, f"return {src.bind('r', _result(flag, serve, reason, rule))}")
        return
    sole = sole_variant(serve)
    if sole is not None:
        src.emit(depth, f"return {src.bind('r', _result(flag, sole, Reason.SPLIT, rule))}")
        return
    by = src.bind("a", serve.by)
    salt = flag.bucket_salt if serve.salt is None else serve.salt
    src.emit(depth, f"v = ctx.get({by})")
    # keys that are not plain strings (numbers, missing, wrong type) take the walker
    src.emit(depth, "if v.__class__ is not _str:")
    src.emit(depth + 1, "return _walk(ctx)")
    total = src.bind("n", serve.total)
    if flag.bucketing == DEFAULT_SCHEME:
        # murmur3_bucket inlined: the hash of "salt.value", modulo the total
        prefix = src.bind("k", f"{salt}.")
        src.emit(depth, f"b = _hash({prefix} + v, 0, False) % {total}")
    else:
        bucket = src.bind("h", scheme(flag.bucketing).split)
        src.emit(depth, f"b = {bucket}({src.bind('k', salt)}, v, {total})")
    results = [_result(flag, variant, Reason.SPLIT, rule) for variant, _ in serve.weights]
    uppers: list[int] = []
    upper = 0
    for _, weight in serve.weights[:-1]:
        upper += weight
        uppers.append(upper)
    if len(results) == 2:
        first, second = src.bind("r", results[0]), src.bind("r", results[1])
        src.emit(depth, f"return {first} if b < {src.bind('n', uppers[0])} else {second}")
    else:
        table, bounds = src.bind("r", tuple(results)), src.bind("t", tuple(uppers))
        src.emit(depth, f"return {table}[_bisect({bounds}, b)]")


def _compile_flag(
    flag: Flag,
    in_segment: SegmentChecks,
    compiled: Mapping[str, FlagFunction],
    walk: FlagFunction,
) -> FlagFunction:
    if not flag.enabled:
        disabled = _result(flag, flag.off_variant, Reason.DISABLED, None)
        return lambda ctx: disabled
    src = _Source([], {"_walk": walk})
    body = 2
    if flag.prerequisites:
        failed = src.bind("r", _result(flag, flag.off_variant, Reason.PREREQUISITE_FAILED, None))
        for pre in flag.prerequisites:
            check = src.bind("f", compiled[pre.flag])
            wanted = src.bind("w", frozenset(pre.variants))
            src.emit(body, f"e = {check}(ctx)")
            src.emit(body, f"if e.error_code is not None or e.variant not in {wanted}:")
            src.emit(body + 1, f"return {failed}")
    if flag.targets:
        # one answer per variant, however many keys it is targeted to
        by_key = {
            key: answer
            for variant, keys in flag.targets.items()
            for answer in (_result(flag, variant, Reason.TARGETING_MATCH, None),)
            for key in keys
        }
        src.emit(body, f"r = {src.bind('m', by_key)}.get(ctx.get('key'))")
        src.emit(body, "if r is not None:")
        src.emit(body + 1, "return r")
    for index, rule in enumerate(flag.rules):
        test = " and ".join(_condition_expr(src, cond, in_segment, flag) for cond in rule.when)
        src.emit(body, f"if {test}:")
        _emit_serve(src, body + 1, flag, rule.serve, Reason.TARGETING_MATCH, index)
    _emit_serve(src, body, flag, flag.default, Reason.DEFAULT, None)
    src.emit(1, "except Exception:")
    src.emit(2, "return _walk(ctx)")
    code, source = _shape(", ".join(src.names), "\n".join(src.lines))
    function: FlagFunction = FunctionType(code, _SHARED, "_flag", tuple(src.names.values()))
    function.__doc__ = source
    return function


#: The names every generated function reads, shared by all of them.
_SHARED = {
    "__builtins__": builtins,
    "_hash": mmh3.hash,
    "_bisect": bisect_right,
    "_isinstance": isinstance,
    "_str": str,
}


@lru_cache(maxsize=4096)
def _shape(names: str, body: str) -> tuple[CodeType, str]:
    """The code of every flag whose generated source this is, and that source.

    A cache of a pure function (the same source always compiles to the same
    code), so that flags of one shape share one code object.
    """
    source = f"def _flag(ctx, {names}):\n    try:\n{body}"
    made: dict[str, FunctionType] = {}
    # the source holds only names we made; see the module docstring
    exec(compile(source, "<unveil flag>", "exec"), _SHARED, made)
    return made["_flag"].__code__, source


def closure(document: Document, flag: Flag) -> Document:
    """The part of ``document`` that ``flag``'s answers depend on.

    The flag, its prerequisites however far down, and every segment their
    rules reach (through other segments too). A flag compiled against its
    closure holds nothing else of the document: a client that keeps it across
    a patch keeps no older document alive with it.
    """
    flags: dict[str, Flag] = {}
    segments: dict[str, Segment] = {}
    pending_flags = [flag]
    pending_segments: list[str] = []
    while pending_flags:
        current = pending_flags.pop()
        if current.key in flags:
            continue
        flags[current.key] = current
        pending_flags.extend(document.flags[pre.flag] for pre in current.prerequisites)
        for rule in current.rules:
            pending_segments.extend(c.segment for c in rule.when if isinstance(c, SegmentMatch))
    _reached_segments(document, pending_segments, segments)
    return Document(
        flags=MappingProxyType(flags),
        segments=MappingProxyType(segments),
        version=document.version,
    )


def _reached_segments(document: Document, pending: list[str], into: dict[str, Segment]) -> None:
    """Add to ``into`` the segments named in ``pending`` and those their rules name."""
    while pending:
        name = pending.pop()
        if name in into:
            continue
        segment = into[name] = document.segments[name]
        for srule in segment.rules:
            pending.extend(c.segment for c in srule.when if isinstance(c, SegmentMatch))


def compile_flag(
    flag: Flag, document: Document, prerequisites: Mapping[str, FlagFunction]
) -> FlagFunction:
    """One flag's function; ``prerequisites`` holds the functions of the flags it needs.

    It holds no document and no walker of its own: its segment checks are
    shared with every flag compiled against the same segments
    (``segment_check``), and its reference walk (the fallback for unusual
    contexts) is made from its closure on first need (``_Fallback``). So a
    client that keeps compiled flags across patches keeps no older document
    alive with them, and ten thousand compiled flags stay small.
    """
    if not flag.enabled or not (
        flag.prerequisites
        or any(isinstance(cond, SegmentMatch) for rule in flag.rules for cond in rule.when)
    ):
        # its closure is the flag alone
        return _compile_flag(flag, _no_segments, prerequisites, _Fallback(flag, (flag,), ()))
    part = closure(document, flag)
    walk = _Fallback(flag, tuple(part.flags.values()), tuple(part.segments.values()))
    return _compile_flag(flag, partial(segment_check, document), prerequisites, walk)


def _no_segments(name: str) -> ContextCheck:
    raise AssertionError(f"a flag whose rules name no segment asked for segment '{name}'")


def segment_check(document: Document, name: str) -> ContextCheck:
    """Whether a context is in segment ``name`` of ``document``, shared while it holds.

    Flags compiled against documents whose segment ``name`` and the segments
    it names are the very same objects get the very same check: a walker
    over that segment's closure. The checks are held weakly, keyed by those
    objects' identities; a check keeps its segments alive, so a key's
    identities cannot be reused while its check lives.
    """
    segments: dict[str, Segment] = {}
    _reached_segments(document, [name], segments)
    identity = (name, *map(id, segments.values()))
    check = _SEGMENT_CHECKS.get(identity)
    if check is None:  # two threads may both make one: the same check, either is kept
        walker = ReferenceEvaluator(Document(segments=MappingProxyType(segments)))
        check = _SEGMENT_CHECKS[identity] = partial(walker.in_segment, name)
    return check


_SEGMENT_CHECKS: WeakValueDictionary[tuple[object, ...], partial[bool]] = WeakValueDictionary()


class _Fallback:
    """A flag's reference walk over its closure, made when first needed.

    Most compiled flags never meet a context their fast path hands over; a
    walker and its document are half a kB each flag would hold for nothing.
    It keeps the closure (the flag, the flags it needs however far down, the
    segments they reach) as two tuples until then.
    """

    __slots__ = ("_flags", "_key", "_segments", "_walker")

    def __init__(self, flag: Flag, flags: tuple[Flag, ...], segments: tuple[Segment, ...]) -> None:
        self._key = flag.key
        self._flags = flags
        self._segments = segments
        self._walker: ReferenceEvaluator | None = None

    def __call__(self, context: dict[str, Any]) -> Evaluation:
        walker = self._walker
        if walker is None:  # two threads may both make one: the same walk
            part = Document(
                flags=MappingProxyType({f.key: f for f in self._flags}),
                segments=MappingProxyType({s.key: s for s in self._segments}),
            )
            walker = self._walker = ReferenceEvaluator(part)
        return walker.evaluate(self._key, context)


def compile_flags(document: Document) -> dict[str, FlagFunction]:
    """One function per flag, prerequisites compiled before the flags that need them."""
    walker = ReferenceEvaluator(document)
    compiled: dict[str, FlagFunction] = {}
    # Post-order with a stack of our own: how long a chain of prerequisites is
    # never becomes the depth of Python's stack (the codec bounds it as well).
    entered: set[str] = set()
    for start in document.flags:
        stack: list[tuple[str, bool]] = [(start, False)]
        while stack:
            key, ready = stack.pop()
            if key in compiled:
                continue
            flag = document.flags[key]
            if ready:
                walk = partial(walker.evaluate, key)
                in_segment = partial(partial, walker.in_segment)
                compiled[key] = _compile_flag(flag, in_segment, compiled, walk)
                continue
            if key in entered:  # only a document built around the codec can get here
                raise ValueError(f"prerequisite cycle through flag '{key}'")
            entered.add(key)
            stack.append((key, True))
            stack.extend((pre.flag, False) for pre in flag.prerequisites)
    return compiled
