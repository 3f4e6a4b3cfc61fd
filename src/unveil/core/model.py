"""The flag model: immutable values that a flags document parses into.

Everything here is plain data. Validation lives in ``codec``, meaning in
``evaluation`` and speed in ``compiler``; these classes only hold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from enum import StrEnum
from types import MappingProxyType
from typing import Any, TypeAlias, TypeVar

__all__ = [
    "BOOLEAN_VARIANTS",
    "DEFAULT_SCHEME",
    "FULL_WEIGHT",
    "Clause",
    "Condition",
    "Document",
    "ErrorCode",
    "Flag",
    "FlagKind",
    "JsonValue",
    "Operator",
    "Prerequisite",
    "Reason",
    "Rollout",
    "Rule",
    "Sample",
    "Scalar",
    "Segment",
    "SegmentMatch",
    "SegmentRule",
    "Serve",
]

_C = TypeVar("_C")


def _quick_init(cls: type[_C]) -> type[_C]:
    """Give a frozen, slotted dataclass an ``__init__`` that stores into its slots directly.

    The ``__init__`` dataclasses writes for a frozen class calls
    ``object.__setattr__`` for every field, which made building the model of
    a large document cost as much as checking it. This one stores each field
    through its slot's own descriptor: the same parameters, defaults and
    factories, in about half the time. The source is made from the field
    names of the classes below, never from data.
    """
    params: list[str] = []
    lines: list[str] = []
    names: dict[str, Any] = {"_MISSING": MISSING}
    for f in fields(cls):  # type: ignore[arg-type]
        names[f"_set_{f.name}"] = vars(cls)[f.name].__set__  # the slot's member descriptor
        value = f.name
        if f.default is not MISSING:
            names[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        elif f.default_factory is not MISSING:
            names[f"_factory_{f.name}"] = f.default_factory
            params.append(f"{f.name}=_MISSING")
            value = f"_factory_{f.name}() if {f.name} is _MISSING else {f.name}"
        else:
            params.append(f.name)
        lines.append(f"    _set_{f.name}(self, {value})")
    source = f"def __init__(self, {', '.join(params)}):\n" + "\n".join(lines)
    exec(source, names)  # the source holds field names of this module's classes only
    init = names["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = cls.__init__.__doc__
    setattr(cls, "__init__", init)  # noqa: B010 - mypy refuses an assignment to a method
    return cls


JsonValue: TypeAlias = "bool | int | float | str | list[JsonValue] | dict[str, JsonValue] | None"
Scalar: TypeAlias = "str | int | float | bool"

#: Rollout weights are kept in thousandths of a percent: 100% is 100,000.
FULL_WEIGHT = 100_000

#: The bucketing scheme a flag uses unless it names another.
DEFAULT_SCHEME = "murmur3"


class FlagKind(StrEnum):
    """What type of value a flag serves."""

    BOOLEAN = "boolean"
    STRING = "string"
    NUMBER = "number"
    JSON = "json"


class Reason(StrEnum):
    """Why an evaluation gave the value it gave (OpenFeature's names)."""

    DISABLED = "DISABLED"
    PREREQUISITE_FAILED = "PREREQUISITE_FAILED"
    TARGETING_MATCH = "TARGETING_MATCH"
    SPLIT = "SPLIT"
    DEFAULT = "DEFAULT"
    ERROR = "ERROR"


class ErrorCode(StrEnum):
    """Why an evaluation fell back to the caller's default (OpenFeature's names)."""

    PROVIDER_NOT_READY = "PROVIDER_NOT_READY"
    FLAG_NOT_FOUND = "FLAG_NOT_FOUND"
    PARSE_ERROR = "PARSE_ERROR"
    TYPE_MISMATCH = "TYPE_MISMATCH"
    TARGETING_KEY_MISSING = "TARGETING_KEY_MISSING"
    INVALID_CONTEXT = "INVALID_CONTEXT"
    GENERAL = "GENERAL"


class Operator(StrEnum):
    """The comparisons a clause can make between an attribute and its values."""

    EQ = "eq"
    IN = "in"
    STARTS_WITH = "starts_with"
    ENDS_WITH = "ends_with"
    CONTAINS = "contains"
    MATCHES = "matches"
    LT = "lt"
    LTE = "lte"
    GT = "gt"
    GTE = "gte"
    SEMVER_EQ = "semver_eq"
    SEMVER_LT = "semver_lt"
    SEMVER_GT = "semver_gt"
    SEMVER_LTE = "semver_lte"
    SEMVER_GTE = "semver_gte"
    NUMBER_EQ = "number_eq"
    IN_CIDR = "in_cidr"
    BEFORE = "before"
    AFTER = "after"
    EXISTS = "exists"


@_quick_init
@dataclass(frozen=True, slots=True)
class Clause:
    """Compare one context attribute with the clause's values."""

    attr: str
    op: Operator
    values: tuple[Scalar, ...] = ()
    negate: bool = False
    #: compare text without regard to case (text operators only)
    ignore_case: bool = False


@_quick_init
@_quick_init
@dataclass(frozen=True, slots=True)
class SegmentMatch:
    """True when the context belongs to the named segment."""

    segment: str
    negate: bool = False


@_quick_init
@dataclass(frozen=True, slots=True)
class Sample:
    """True for a stable share of contexts: those whose bucket is below ``percent``.

    It lets a rule apply to some of the contexts it describes and let the rest
    fall through to the next rule, which a rollout cannot do. The bucket comes
    from the flag's bucketing scheme; ``percent`` is in thousandths.
    """

    percent: int
    by: str = "key"
    salt: str | None = None
    negate: bool = False


Condition: TypeAlias = "Clause | SegmentMatch | Sample"


@_quick_init
@dataclass(frozen=True, slots=True)
class Rollout:
    """Serve variants by weight, placing each context in a stable bucket.

    ``weights`` pairs variant names with whole-number weights and follows the
    order of the flag's variants, so reordering the document's mapping never
    moves anyone. Percentages are weights in thousandths (a total of
    ``FULL_WEIGHT``); imported flags may keep another total.
    """

    weights: tuple[tuple[str, int], ...]
    by: str = "key"
    salt: str | None = None

    @property
    def total(self) -> int:
        """The sum of the weights: buckets run from 0 to this."""
        return sum(weight for _, weight in self.weights)


Serve: TypeAlias = "str | Rollout"


@_quick_init
@dataclass(frozen=True, slots=True)
class Rule:
    """When every condition holds, serve."""

    when: tuple[Condition, ...]
    serve: Serve


@_quick_init
@dataclass(frozen=True, slots=True)
class Prerequisite:
    """Another flag must give this context one of these variants first."""

    flag: str
    variants: tuple[str, ...]


@_quick_init
@dataclass(frozen=True, slots=True)
class Flag:
    """One feature flag as a flags document describes it."""

    key: str
    kind: FlagKind
    variants: Mapping[str, JsonValue]
    off_variant: str
    default: Serve
    enabled: bool = True
    description: str = ""
    targets: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))
    prerequisites: tuple[Prerequisite, ...] = ()
    rules: tuple[Rule, ...] = ()
    salt: str | None = None
    bucketing: str = DEFAULT_SCHEME

    @property
    def bucket_salt(self) -> str:
        """The salt a rollout without its own uses: the flag's, else its key."""
        return self.key if self.salt is None else self.salt


@_quick_init
@_quick_init
@dataclass(frozen=True, slots=True)
class SegmentRule:
    """A context that meets every condition is in the segment."""

    when: tuple[Condition, ...]


@_quick_init
@dataclass(frozen=True, slots=True)
class Segment:
    """A named group of contexts: listed keys, or those that meet a rule.

    ``exclude`` wins over ``include`` and over the rules.
    """

    key: str
    description: str = ""
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    rules: tuple[SegmentRule, ...] = ()


@_quick_init
@dataclass(frozen=True, slots=True)
class Document:
    """An environment's flags and segments: what a flags file holds."""

    flags: Mapping[str, Flag] = field(default_factory=lambda: MappingProxyType({}))
    segments: Mapping[str, Segment] = field(default_factory=lambda: MappingProxyType({}))
    version: int = 1


BOOLEAN_VARIANTS: Mapping[str, JsonValue] = MappingProxyType({"on": True, "off": False})
