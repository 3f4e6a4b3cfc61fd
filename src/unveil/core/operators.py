"""The operator table: each operator is one row of small functions.

A row says how many values the operator takes, how to check one value when a
document is loaded, and how to build a predicate from the values. Predicates
take whatever the context holds and answer True or False; a value of the
wrong type is "no match", never an exception.
"""

from __future__ import annotations

import ipaddress
import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Any

import re2  # linear-time matching: no pattern can make evaluation hang

from unveil.core.model import Operator, Scalar
from unveil.core.semver import parse_semver
from unveil.core.timestamps import parse_instant

__all__ = [
    "MAX_PATTERN_LENGTH",
    "MAX_SUBJECT_LENGTH",
    "OPERATORS",
    "Arity",
    "OperatorSpec",
    "Predicate",
    "TEXT_OPERATORS",
    "as_number",
    "build_predicate",
    "LARGEST_NUMBER",
    "describe_number",
    "is_document_number",
    "is_number",
]

Predicate = Callable[[object], bool]

#: The longest pattern ``matches`` accepts, and the longest text it looks at.
MAX_PATTERN_LENGTH = 1_000
MAX_SUBJECT_LENGTH = 10_000

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.max_mem = 1 << 20
_RE2_OPTIONS.log_errors = False  # a refused pattern is reported as a problem, not logged


class Arity(Enum):
    """How many values a clause with this operator carries."""

    NONE = "no values"
    ONE = "exactly one value"
    MANY = "a list of values"


Builder = Callable[[tuple[Scalar, ...], bool], Predicate]


@dataclass(frozen=True, slots=True)
class OperatorSpec:
    """One row of the table. ``build`` takes the values and ``ignore_case``."""

    arity: Arity
    check: Callable[[object], str | None]
    build: Builder


def is_number(value: object) -> bool:
    """Numbers are ints and finite floats; a bool is not a number here."""
    cls = value.__class__
    if cls is int:
        return True
    if cls is float:
        return math.isfinite(value)  # type: ignore[arg-type]
    return isinstance(value, int | float) and not isinstance(value, bool)


#: The largest magnitude a number in a document may have: what a double holds. Most
#: readers of JSON (other languages' SDKs, OFREP clients) read numbers as doubles, so a
#: longer integer would reach them as infinity.
LARGEST_NUMBER = int(sys.float_info.max)


def is_document_number(value: object) -> bool:
    """A number a document may hold: one that every reader gets back as a number."""
    if not is_number(value):
        return False
    return not isinstance(value, int) or -LARGEST_NUMBER <= value <= LARGEST_NUMBER


def describe_number(value: object) -> str | None:
    """Why a number may not be in a document, or None when it may."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value!r} (numbers must be finite)"
    if isinstance(value, int) and not isinstance(value, bool) and not is_document_number(value):
        return "an integer beyond what a double holds (numbers must be within ±1.8e308)"
    return None


_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def as_number(value: object) -> int | float | None:
    """A number, or a decimal number written as a string, as a number.

    Attributes often arrive as text (headers, query strings, other systems'
    contexts), so the number operators read "12.5" as 12.5; anything else
    is not a number.
    """
    if is_number(value):
        return value  # type: ignore[return-value]
    if isinstance(value, str) and len(value) < 100 and _DECIMAL.fullmatch(value.strip()):
        number = float(value)
        return number if math.isfinite(number) else None
    return None


# -- value checks, used when a document is loaded ---------------------------


def _check_scalar(value: object) -> str | None:
    if isinstance(value, str | bool) or is_document_number(value):
        return None
    return f"must be a string, number or boolean, not {_type_name(value)}"


def _check_string(value: object) -> str | None:
    return None if isinstance(value, str) else f"must be a string, not {_type_name(value)}"


def _check_number(value: object) -> str | None:
    return None if is_document_number(value) else f"must be a number, not {_type_name(value)}"


def _check_pattern(value: object) -> str | None:
    if not isinstance(value, str):
        return f"must be a string, not {_type_name(value)}"
    if len(value) > MAX_PATTERN_LENGTH:
        return f"pattern is longer than {MAX_PATTERN_LENGTH} characters"
    try:
        re2.compile(value, _RE2_OPTIONS)
    except re2.error as exc:
        return f"invalid regular expression {value!r}: {exc}"
    return None


def _check_semver(value: object) -> str | None:
    if parse_semver(value) is None:
        return f"{value!r} is not a semantic version"
    return None


def _check_instant(value: object) -> str | None:
    if parse_instant(value, require_offset=True) is None:
        return f"{value!r} is not an RFC 3339 timestamp with offset or epoch seconds"
    return None


def _check_network(value: object) -> str | None:
    if not isinstance(value, str):
        return f"must be a string, not {_type_name(value)}"
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return f"{value!r} is not an IP address or CIDR range"
    return None


def _no_check(value: object) -> str | None:
    return "takes no values"


def _type_name(value: object) -> str:
    refused = describe_number(value)
    if refused is not None:
        return refused
    names = {dict: "a mapping", list: "a list", type(None): "null"}
    return names.get(type(value), type(value).__name__)


# -- predicate builders -------------------------------------------------------


def _fold(value: Scalar, ignore_case: bool) -> Scalar:
    return value.casefold() if ignore_case and isinstance(value, str) else value


def _build_in(values: tuple[Scalar, ...], ignore_case: bool = False) -> Predicate:
    strings = frozenset(_fold(v, ignore_case) for v in values if isinstance(v, str))
    numbers = frozenset(v for v in values if is_number(v))
    bools = frozenset(v for v in values if isinstance(v, bool))

    def match(a: object) -> bool:
        if isinstance(a, str):
            return (a.casefold() if ignore_case else a) in strings
        if isinstance(a, bool):
            return a in bools
        return is_number(a) and a in numbers

    return match


def _build_affix(method: str) -> Builder:
    def build(values: tuple[Scalar, ...], ignore_case: bool = False) -> Predicate:
        affixes = tuple(str(_fold(v, ignore_case)) for v in values)
        if ignore_case:
            return lambda a: isinstance(a, str) and getattr(a.casefold(), method)(affixes)
        test = getattr(str, method)
        return lambda a: isinstance(a, str) and test(a, affixes)

    return build


def _build_contains(values: tuple[Scalar, ...], ignore_case: bool = False) -> Predicate:
    """Substring of a string attribute, or member of a list attribute."""
    texts = tuple(str(_fold(v, ignore_case)) for v in values if isinstance(v, str))
    member = _build_in(values, ignore_case)

    def match(a: object) -> bool:
        if isinstance(a, str):
            folded = a.casefold() if ignore_case else a
            return any(t in folded for t in texts)
        if isinstance(a, list | tuple):
            return any(member(item) for item in a)
        return False

    return match


def _build_matches(values: tuple[Scalar, ...], ignore_case: bool = False) -> Predicate:
    flags = "(?i)" if ignore_case else ""
    patterns = [re2.compile(flags + str(v), _RE2_OPTIONS) for v in values]

    def match(a: object) -> bool:
        if not isinstance(a, str) or len(a) > MAX_SUBJECT_LENGTH:
            return False
        return any(p.search(a) is not None for p in patterns)

    return match


def _build_compare(test: Callable[[Any, Any], bool]) -> Builder:
    def build(values: tuple[Scalar, ...], ignore_case: bool = False) -> Predicate:
        bound = values[0]

        def match(a: object) -> bool:
            number = as_number(a)
            return number is not None and test(number, bound)

        return match

    return build


def _build_semver(test: Callable[[Any, Any], bool]) -> Builder:
    def build(values: tuple[Scalar, ...], ignore_case: bool = False) -> Predicate:
        bound = parse_semver(values[0])

        def match(a: object) -> bool:
            key = parse_semver(a)
            return key is not None and test(key, bound)

        return match

    return build


def _build_instant(test: Callable[[Any, Any], bool]) -> Builder:
    def build(values: tuple[Scalar, ...], ignore_case: bool = False) -> Predicate:
        bound = parse_instant(values[0], require_offset=True)

        def match(a: object) -> bool:
            when = parse_instant(a)
            return when is not None and test(when, bound)

        return match

    return build


def _build_in_cidr(values: tuple[Scalar, ...], ignore_case: bool = False) -> Predicate:
    networks = tuple(ipaddress.ip_network(str(v), strict=False) for v in values)

    def match(a: object) -> bool:
        if not isinstance(a, str) or len(a) > 100:
            return False
        try:
            address = ipaddress.ip_address(a.strip())
        except ValueError:
            return False
        return any(address in network for network in networks)

    return match


def _build_exists(values: Sequence[Scalar], ignore_case: bool = False) -> Predicate:
    return lambda a: a is not None


def build_predicate(op: Operator, values: tuple[Scalar, ...], ignore_case: bool) -> Predicate:
    """The predicate of one clause."""
    return OPERATORS[op].build(values, ignore_case)


#: The operators that compare text and so may ignore case.
TEXT_OPERATORS = frozenset(
    {
        Operator.EQ,
        Operator.IN,
        Operator.STARTS_WITH,
        Operator.ENDS_WITH,
        Operator.CONTAINS,
        Operator.MATCHES,
    }
)

OPERATORS: Mapping[Operator, OperatorSpec] = MappingProxyType(
    {
        Operator.EQ: OperatorSpec(Arity.ONE, _check_scalar, _build_in),
        Operator.IN: OperatorSpec(Arity.MANY, _check_scalar, _build_in),
        Operator.STARTS_WITH: OperatorSpec(Arity.MANY, _check_string, _build_affix("startswith")),
        Operator.ENDS_WITH: OperatorSpec(Arity.MANY, _check_string, _build_affix("endswith")),
        Operator.CONTAINS: OperatorSpec(Arity.MANY, _check_scalar, _build_contains),
        Operator.MATCHES: OperatorSpec(Arity.MANY, _check_pattern, _build_matches),
        Operator.LT: OperatorSpec(Arity.ONE, _check_number, _build_compare(lambda a, b: a < b)),
        Operator.LTE: OperatorSpec(Arity.ONE, _check_number, _build_compare(lambda a, b: a <= b)),
        Operator.GT: OperatorSpec(Arity.ONE, _check_number, _build_compare(lambda a, b: a > b)),
        Operator.GTE: OperatorSpec(Arity.ONE, _check_number, _build_compare(lambda a, b: a >= b)),
        Operator.NUMBER_EQ: OperatorSpec(
            Arity.ONE, _check_number, _build_compare(lambda a, b: a == b)
        ),
        Operator.SEMVER_EQ: OperatorSpec(
            Arity.ONE, _check_semver, _build_semver(lambda a, b: a == b)
        ),
        Operator.SEMVER_LT: OperatorSpec(
            Arity.ONE, _check_semver, _build_semver(lambda a, b: a < b)
        ),
        Operator.SEMVER_GT: OperatorSpec(
            Arity.ONE, _check_semver, _build_semver(lambda a, b: a > b)
        ),
        Operator.SEMVER_LTE: OperatorSpec(
            Arity.ONE, _check_semver, _build_semver(lambda a, b: a <= b)
        ),
        Operator.SEMVER_GTE: OperatorSpec(
            Arity.ONE, _check_semver, _build_semver(lambda a, b: a >= b)
        ),
        Operator.BEFORE: OperatorSpec(
            Arity.ONE, _check_instant, _build_instant(lambda a, b: a < b)
        ),
        Operator.AFTER: OperatorSpec(Arity.ONE, _check_instant, _build_instant(lambda a, b: a > b)),
        Operator.IN_CIDR: OperatorSpec(Arity.MANY, _check_network, _build_in_cidr),
        Operator.EXISTS: OperatorSpec(Arity.NONE, _no_check, _build_exists),
    }
)
