"""What evaluating a flag means, written plainly.

``ReferenceEvaluator`` walks the model in the order the product promises:

1. disabled -> off_variant (DISABLED)
2. a prerequisite not met -> off_variant (PREREQUISITE_FAILED)
3. individually targeted key -> that variant (TARGETING_MATCH)
4. the first rule whose conditions all hold -> its serve (TARGETING_MATCH or SPLIT)
5. the default -> (DEFAULT or SPLIT)

It is the definition of evaluation. The compiler produces faster code with
the same answers, falls back to this walker whenever its fast path meets
something unusual, and is tested against it.

Results with an error carry ``value=None``; the ruleset puts the caller's
default there.

Prerequisites and segments that use segments are followed by calls, one
level of Python's stack per link: the codec bounds those chains
(``MAX_PREREQUISITE_DEPTH``, ``MAX_SEGMENT_DEPTH``), so no valid document
comes near the interpreter's recursion limit, and a document built around
the codec that does still gets an answer, never an exception.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from unveil.core.bucketing import bucket_text, scheme
from unveil.core.model import (
    Clause,
    Condition,
    Document,
    ErrorCode,
    Flag,
    Operator,
    Reason,
    Rollout,
    Sample,
    Scalar,
    Serve,
)
from unveil.core.operators import Predicate, build_predicate

__all__ = [
    "Evaluation",
    "ReferenceEvaluator",
    "as_context",
    "predicate_of",
    "rollout_pick",
    "sample_check",
    "sole_variant",
]

ContextCheck = Callable[[Mapping[str, Any]], bool]


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The answer for one flag and one context, and why."""

    key: str
    value: Any
    variant: str | None
    reason: Reason
    error_code: ErrorCode | None = None
    error_message: str | None = None
    #: index of the rule that decided, when a rule did
    rule: int | None = None


def as_context(context: object) -> dict[str, Any] | None:
    """A context as a dict, or None when it cannot be one.

    None means "no attributes"; any mapping is accepted as it is.
    """
    if context.__class__ is dict:
        return context
    if context is None:
        return {}
    if isinstance(context, Mapping):
        return dict(context)
    return None


@lru_cache(maxsize=65_536)
def _predicate(
    op: Operator, values: tuple[Scalar, ...], types: tuple[type, ...], ignore_case: bool
) -> Predicate:
    return build_predicate(op, values, ignore_case)


def predicate_of(clause: Clause) -> Predicate:
    """The clause's predicate, one for every clause with the same operator and values.

    A predicate is a pure function of the operator, the values and
    ``ignore_case``, so flags that compare alike (and the walkers of every
    flag that uses one segment) share one. The values' types are part of
    the key: ``1 == True`` in Python, not in a clause.
    """
    values = clause.values
    return _predicate(clause.op, values, tuple(map(type, values)), clause.ignore_case)


def rollout_pick(rollout: Rollout, bucket: int) -> str:
    """The variant that owns ``bucket``: variants own consecutive ranges in order."""
    upper = 0
    for variant, weight in rollout.weights:
        upper += weight
        if bucket < upper:
            return variant
    return rollout.weights[-1][0]  # unreachable while buckets stay below the total


def sole_variant(rollout: Rollout) -> str | None:
    """The variant that has all the weight, if one has: then no bucket is needed."""
    total = rollout.total
    for variant, weight in rollout.weights:
        if weight == total:
            return variant
    return None


def sample_check(flag: Flag, sample: Sample) -> ContextCheck:
    """Whether a context falls in the sample, under the flag's bucketing scheme.

    A context without the ``by`` attribute, or with one that cannot be
    bucketed, is outside the sample: a sample narrows a rule and never fails.
    """
    place = scheme(flag.bucketing).sample
    salt = flag.bucket_salt if sample.salt is None else sample.salt
    by, percent = sample.by, sample.percent

    def check(context: Mapping[str, Any]) -> bool:
        text = bucket_text(context.get(by))
        return text is not None and place(salt, text) < percent

    return check


class ReferenceEvaluator:
    """Evaluates flags of one document by walking the model.

    A clause's predicate (and a sample's check) is built the first time the
    walk meets it: every compiled flag keeps a walker for its fallbacks and
    segments, and most of those never walk most of their conditions.
    """

    __slots__ = ("_predicates", "_samples", "document")

    def __init__(self, document: Document) -> None:
        self.document = document
        self._predicates: dict[Clause, Predicate] = {}
        self._samples: dict[tuple[str, Sample], ContextCheck] = {}

    def evaluate(self, key: str, context: Mapping[str, Any]) -> Evaluation:
        """Evaluate flag ``key``; never raises."""
        flag = self.document.flags.get(key)
        if flag is None:
            return Evaluation(
                key, None, None, Reason.ERROR, ErrorCode.FLAG_NOT_FOUND, f"no flag '{key}'"
            )
        try:
            return self._evaluate(flag, context)
        except Exception as exc:  # the contract: callers never see an exception
            return Evaluation(
                key, None, None, Reason.ERROR, ErrorCode.GENERAL, f"evaluation failed: {exc!r}"
            )

    def _evaluate(self, flag: Flag, context: Mapping[str, Any]) -> Evaluation:
        if not flag.enabled:
            return self._variant(flag, flag.off_variant, Reason.DISABLED)
        for pre in flag.prerequisites:
            result = self.evaluate(pre.flag, context)
            if result.error_code is not None or result.variant not in pre.variants:
                return self._variant(flag, flag.off_variant, Reason.PREREQUISITE_FAILED)
        key = context.get("key")
        if isinstance(key, str):
            for variant, keys in flag.targets.items():
                if key in keys:
                    return self._variant(flag, variant, Reason.TARGETING_MATCH)
        for index, rule in enumerate(flag.rules):
            if all(self.condition(cond, context, flag.key) for cond in rule.when):
                return self.serve(flag, rule.serve, context, Reason.TARGETING_MATCH, index)
        return self.serve(flag, flag.default, context, Reason.DEFAULT, None)

    def condition(
        self, cond: Condition, context: Mapping[str, Any], flag_key: str | None = None
    ) -> bool:
        """Whether one condition holds for the context (samples need their flag)."""
        if isinstance(cond, Clause):
            predicate = self._predicates.get(cond)
            if predicate is None:  # two threads may both look it up: the same predicate
                predicate = self._predicates[cond] = predicate_of(cond)
            held = predicate(context.get(cond.attr))
        elif isinstance(cond, Sample):
            held = flag_key is not None and self._sample(flag_key, cond)(context)
        else:
            held = self.in_segment(cond.segment, context)
        return held != cond.negate

    def _sample(self, flag_key: str, sample: Sample) -> ContextCheck:
        check = self._samples.get((flag_key, sample))
        if check is None:
            check = sample_check(self.document.flags[flag_key], sample)
            self._samples[flag_key, sample] = check
        return check

    def in_segment(self, name: str, context: Mapping[str, Any]) -> bool:
        """Excluded keys are out, included keys are in, else any rule decides."""
        segment = self.document.segments[name]
        key = context.get("key")
        if isinstance(key, str):
            if key in segment.exclude:
                return False
            if key in segment.include:
                return True
        return any(
            all(self.condition(cond, context) for cond in srule.when) for srule in segment.rules
        )

    def serve(
        self, flag: Flag, serve: Serve, context: Mapping[str, Any], reason: Reason, rule: int | None
    ) -> Evaluation:
        """The evaluation a rule's or the default's serve gives."""
        if isinstance(serve, str):
            return self._variant(flag, serve, reason, rule)
        sole = sole_variant(serve)
        if sole is not None:
            return self._variant(flag, sole, Reason.SPLIT, rule)
        raw = context.get(serve.by)
        text = bucket_text(raw)
        if text is None:
            return rollout_error(flag.key, serve.by, raw)
        salt = flag.bucket_salt if serve.salt is None else serve.salt
        bucket = scheme(flag.bucketing).split(salt, text, serve.total)
        return self._variant(flag, rollout_pick(serve, bucket), Reason.SPLIT, rule)

    @staticmethod
    def _variant(flag: Flag, variant: str, reason: Reason, rule: int | None = None) -> Evaluation:
        return Evaluation(flag.key, flag.variants[variant], variant, reason, None, None, rule)


def rollout_error(flag_key: str, by: str, raw: object) -> Evaluation:
    """The error a rollout gives when the context cannot be bucketed."""
    if raw is None:
        return Evaluation(
            flag_key,
            None,
            None,
            Reason.ERROR,
            ErrorCode.TARGETING_KEY_MISSING,
            f"rollout by '{by}' but the context has no '{by}'",
        )
    return Evaluation(
        flag_key,
        None,
        None,
        Reason.ERROR,
        ErrorCode.INVALID_CONTEXT,
        f"rollout by '{by}' needs a string or whole number, not {type(raw).__name__}",
    )
