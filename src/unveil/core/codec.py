"""The flags document: parse plain data into the model, and back.

``parse_document`` takes what a YAML or JSON reader produced and returns an
immutable ``Document``, or raises ``InvalidDocument`` listing every problem
with its path (``flags.new-checkout.rules[1].when[0].op: unknown operator
'equal'``). A document is accepted whole or not at all.

``document_to_data`` writes the canonical form: what ``unveil export``
prints and what the server sends. ``parse_document(document_to_data(d)) ==
d`` for every document.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

from unveil.core.bucketing import SCHEMES
from unveil.core.errors import InvalidDocument, Problem
from unveil.core.model import (
    BOOLEAN_VARIANTS,
    DEFAULT_SCHEME,
    FULL_WEIGHT,
    Clause,
    Condition,
    Document,
    Flag,
    FlagKind,
    JsonValue,
    Operator,
    Prerequisite,
    Rollout,
    Rule,
    Sample,
    Scalar,
    Segment,
    SegmentMatch,
    SegmentRule,
    Serve,
)
from unveil.core.operators import (
    OPERATORS,
    TEXT_OPERATORS,
    Arity,
    _check_scalar,
    _check_string,
    describe_number,
    is_document_number,
    is_number,
)

__all__ = [
    "FORMAT_VERSION",
    "MAX_CONDITIONS",
    "MAX_DESCRIPTION",
    "MAX_FLAGS",
    "MAX_ITEM_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_KEYS",
    "MAX_PREREQUISITES",
    "MAX_PREREQUISITE_DEPTH",
    "MAX_RULES",
    "MAX_SEGMENTS",
    "MAX_SEGMENT_DEPTH",
    "MAX_TEXT",
    "MAX_VALUES",
    "MAX_VARIANTS",
    "document_to_data",
    "is_flag_key",
    "parse_document",
]

FORMAT_VERSION = 1

_T = TypeVar("_T")

# Any printable text without spaces: names from other systems (Unleash allows
# UTF-8) must survive an import unchanged. But a key is also one segment of a
# URL path (/flags/{key}, /ofrep/v1/evaluate/flags/{key}): characters that
# URLs give a meaning (/ \ ? # %) and the dot segments "." and ".." would
# make the flag unreachable through ordinary clients, so they are refused.
_KEY = re.compile(r"[^\s\x00-\x1f\x7f/\\?#%]{1,200}")
_DOT_SEGMENTS = frozenset({".", ".."})


def is_flag_key(value: object) -> bool:
    """Whether a document could hold a flag of this key (for names that must be one)."""
    return (
        isinstance(value, str)
        and _KEY.fullmatch(value) is not None
        and value.isprintable()
        and value not in _DOT_SEGMENTS
    )


_PLAIN_PATH_PART = re.compile(r"[A-Za-z0-9_-]+")
_MAX_NAME = 200

# -- limits ----------------------------------------------------------------------
# Everything a document may hold is bounded, so that no document can make
# parsing, compiling or evaluating recurse without end, run out of memory or
# take minutes. Beyond a limit the document is refused with the path and the
# limit named. docs/flags-file.md ("Limits") lists them; keep the two in step.

#: Flags in one document (issue 11: environments of ten thousand flags are served).
MAX_FLAGS = 20_000
#: Segments in one document.
MAX_SEGMENTS = 5_000
#: What one flag or one segment may weigh: the characters of its texts (keys in
#: lists, clause values, variant values, description) plus 8 for each list entry.
MAX_ITEM_BYTES = 512 * 1024
#: What each entry of a list adds to the weight, besides its text.
_ENTRY_WEIGHT = 8
#: Links in the longest chain of prerequisites (a needs b needs c: 2).
MAX_PREREQUISITE_DEPTH = 32
#: Links in the longest chain of segments that use segments.
MAX_SEGMENT_DEPTH = 32
#: Prerequisites of one flag.
MAX_PREREQUISITES = 100
#: Rules of one flag or one segment.
MAX_RULES = 1_000
#: Conditions in one rule's ``when``.
MAX_CONDITIONS = 100
#: Values of one clause.
MAX_VALUES = 10_000
#: Keys in one list of keys (a variant's targets, a segment's include or exclude).
MAX_KEYS = 10_000
#: Variants of one flag.
MAX_VARIANTS = 100
#: Characters of one text value in a clause, of a targeting key in a list, of a salt.
MAX_TEXT = 1_000
#: Characters of a description.
MAX_DESCRIPTION = 2_000
#: Levels of nesting in a JSON variant.
MAX_JSON_DEPTH = 32


def _join(path: str, key: str) -> str:
    if _PLAIN_PATH_PART.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f'{path}["{key}"]'


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, str):
        return "a string"
    refused = describe_number(value)
    if refused is not None:
        return refused
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__


class _Reader:
    """Collects problems while reading, so that all of them are reported."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []
        #: the weight read so far (see MAX_ITEM_BYTES), counted as the reading goes
        self.weight = 0
        self.segment_refs: list[tuple[str, str, str | None]] = []  # (path, name, owner)
        self.prerequisites: list[
            tuple[str, str, tuple[Prerequisite, ...]]
        ] = []  # (path, owner, ..)

    def fail(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def mapping(
        self, value: object, path: str, allowed: frozenset[str]
    ) -> Mapping[Any, Any] | None:
        if not isinstance(value, Mapping):
            self.fail(path, f"must be a mapping, not {_type_name(value)}")
            return None
        for key in value:
            if not isinstance(key, str):
                self.fail(path, f"field names must be strings, not {_type_name(key)} {key!r}")
            elif key not in allowed:
                self.fail(_join(path, key), f"unknown field '{key}'")
        return value

    def sequence(
        self, value: object, path: str, limit: int | None = None, noun: str = "items"
    ) -> list[Any] | None:
        if not isinstance(value, list | tuple):
            self.fail(path, f"must be a list, not {_type_name(value)}")
            return None
        if limit is not None and len(value) > limit:
            self.fail(path, f"has {len(value)} {noun}, more than the limit of {limit}")
            return None
        self.weight += _ENTRY_WEIGHT * len(value)
        return list(value)

    def text(self, value: object, path: str, limit: int) -> str | None:
        """A string of at most ``limit`` characters."""
        found = self.string(value, path)
        if found is not None and len(found) > limit:
            self.fail(path, f"is {len(found)} characters long, more than the limit of {limit}")
            return None
        if found is not None:
            self.weight += len(found)
        return found

    def string(self, value: object, path: str) -> str | None:
        if not isinstance(value, str):
            self.fail(path, f"must be a string, not {_type_name(value)}")
            return None
        return value

    def boolean(self, value: object, path: str) -> bool | None:
        if not isinstance(value, bool):
            self.fail(path, f"must be true or false, not {_type_name(value)}")
            return None
        return value

    def key(self, value: object, path: str, what: str) -> str | None:
        """The one check of flag and segment keys, wherever they appear."""
        if not isinstance(value, str) or not is_flag_key(value):
            self.fail(
                path,
                f"{what} {value!r} must be 1-200 printable characters without spaces "
                "or any of / \\ ? # %, and not '.' or '..'",
            )
            return None
        return value

    def name(self, value: object, path: str, what: str) -> str | None:
        if not isinstance(value, str) or not value or len(value) > _MAX_NAME:
            self.fail(path, f"{what} must be a non-empty string of at most {_MAX_NAME} characters")
            return None
        return value

    def key_list(self, value: object, path: str) -> tuple[str, ...]:
        items = self.sequence(value, path, MAX_KEYS, "keys")
        if items is None:
            return ()
        out: list[str] = []
        for i, item in enumerate(items):
            if not isinstance(item, str):
                self.fail(f"{path}[{i}]", f"must be a string, not {_type_name(item)}")
            elif not item:
                self.fail(f"{path}[{i}]", "must not be empty")
            elif len(item) > MAX_TEXT:
                self.fail(f"{path}[{i}]", f"is longer than the limit of {MAX_TEXT} characters")
            else:
                self.weight += len(item)
                out.append(item)
        return tuple(out)


# -- conditions ----------------------------------------------------------------

_CLAUSE_FIELDS = frozenset({"attr", "op", "values", "not", "ignore_case"})
_SEGMENT_FIELDS = frozenset({"segment", "not"})
_SAMPLE_FIELDS = frozenset({"sample", "by", "salt", "not"})


def _read_sample(
    r: _Reader, body: Mapping[str, Any], path: str, owner: str | None, negate: bool
) -> Sample | None:
    if owner is not None:
        r.fail(f"{path}.sample", "a sample belongs in a flag's rules, not in a segment")
        return None
    percent = _read_weight(r, body["sample"], f"{path}.sample")
    by = r.name(body.get("by", "key"), f"{path}.by", "by")
    salt = r.text(body["salt"], f"{path}.salt", MAX_TEXT) if "salt" in body else None
    if percent is None or by is None or ("salt" in body and salt is None):
        return None
    return Sample(percent, by, salt, negate)


def _read_condition(r: _Reader, raw: object, path: str, owner: str | None) -> Condition | None:
    is_segment = isinstance(raw, Mapping) and "segment" in raw
    is_sample = isinstance(raw, Mapping) and "sample" in raw
    fields = _SEGMENT_FIELDS if is_segment else _SAMPLE_FIELDS if is_sample else _CLAUSE_FIELDS
    body = r.mapping(raw, path, fields)
    if body is None:
        return None
    negate = False
    if "not" in body:
        negate = bool(r.boolean(body["not"], f"{path}.not"))
    if is_sample:
        return _read_sample(r, body, path, owner, negate)
    if is_segment:
        name = r.key(body["segment"], f"{path}.segment", "segment name")
        if name is None:
            return None
        r.segment_refs.append((f"{path}.segment", name, owner))
        return SegmentMatch(name, negate)

    if "attr" not in body:
        r.fail(path, "a clause needs 'attr' (or 'segment', or 'sample')")
    if "op" not in body:
        r.fail(path, "a clause needs 'op'")
    attr = r.name(body["attr"], f"{path}.attr", "attr") if "attr" in body else None
    op_raw = body.get("op")
    op: Operator | None = None
    if op_raw is not None:
        try:
            op = Operator(op_raw)
        except ValueError:
            known = ", ".join(o.value for o in Operator)
            r.fail(f"{path}.op", f"unknown operator {op_raw!r} (known: {known})")
    if op is None or attr is None:
        return None
    ignore_case = False
    if "ignore_case" in body:
        ignore_case = bool(r.boolean(body["ignore_case"], f"{path}.ignore_case"))
        if ignore_case and op not in TEXT_OPERATORS:
            known = ", ".join(sorted(o.value for o in TEXT_OPERATORS))
            r.fail(f"{path}.ignore_case", f"applies to text operators only ({known})")
            return None
    values = _read_values(r, op, body, path)
    if values is None:
        return None
    return Clause(attr, op, values, negate, ignore_case)


def _read_values(
    r: _Reader, op: Operator, body: Mapping[str, Any], path: str
) -> tuple[Scalar, ...] | None:
    spec = OPERATORS[op]
    vpath = f"{path}.values"
    if "values" not in body:
        if spec.arity is Arity.NONE:
            return ()
        r.fail(path, f"operator '{op}' needs 'values': {spec.arity.value}")
        return None
    items = r.sequence(body["values"], vpath, MAX_VALUES, "values")
    if items is None:
        return None
    if spec.arity is Arity.NONE and items:
        r.fail(vpath, f"operator '{op}' takes no values")
        return None
    if spec.arity is Arity.ONE and len(items) != 1:
        r.fail(vpath, f"operator '{op}' takes exactly one value, got {len(items)}")
        return None
    ok = True
    for i, item in enumerate(items):
        problem = spec.check(item)
        if isinstance(item, str):
            r.weight += len(item)
            if problem is None and len(item) > MAX_TEXT:
                problem = f"is longer than the limit of {MAX_TEXT} characters"
        if problem is not None:
            r.fail(f"{vpath}[{i}]", problem)
            ok = False
    return tuple(items) if ok else None


def _read_when(r: _Reader, raw: object, path: str, owner: str | None) -> tuple[Condition, ...]:
    items = r.sequence(raw, path, MAX_CONDITIONS, "conditions")
    if items is None:
        return ()
    if not items:
        r.fail(path, "needs at least one condition")
    out = []
    for i, item in enumerate(items):
        cond = _read_condition(r, item, f"{path}[{i}]", owner)
        if cond is not None:
            out.append(cond)
    return tuple(out)


# -- serving ---------------------------------------------------------------------

_SERVE_FIELDS = frozenset({"rollout", "weights", "by", "salt"})
#: The largest total a ``weights`` rollout may have.
MAX_TOTAL_WEIGHT = 1_000_000_000


def _read_weight(r: _Reader, raw: object, path: str) -> int | None:
    if not isinstance(raw, int | float) or not is_number(raw) or not 0 <= raw <= 100:
        r.fail(path, f"a percentage must be a number from 0 to 100, not {raw!r}")
        return None
    scaled = float(raw) * 1000
    weight = round(scaled)
    if not math.isclose(scaled, weight, abs_tol=1e-6):
        r.fail(path, f"{raw!r} has more than three decimals")
        return None
    return weight


def _read_serve(r: _Reader, raw: object, path: str, variants: Mapping[str, Any]) -> Serve | None:
    if isinstance(raw, str):
        if raw not in variants:
            r.fail(path, f"unknown variant '{raw}' (variants: {', '.join(variants)})")
            return None
        return raw
    if not isinstance(raw, Mapping):
        r.fail(path, f"must be a variant name or {{rollout: ...}}, not {_type_name(raw)}")
        return None
    body = r.mapping(raw, path, _SERVE_FIELDS)
    if body is None:
        return None
    if ("rollout" in body) == ("weights" in body):
        r.fail(
            path,
            "a mapping here needs either 'rollout': {variant: percent, ...} "
            "or 'weights': {variant: weight, ...}",
        )
        return None
    by = r.name(body.get("by", "key"), f"{path}.by", "by")
    salt = r.text(body["salt"], f"{path}.salt", MAX_TEXT) if "salt" in body else None
    in_percent = "rollout" in body
    rpath = f"{path}.rollout" if in_percent else f"{path}.weights"
    shares = r.mapping(body["rollout" if in_percent else "weights"], rpath, frozenset(variants))
    if shares is None or by is None:
        return None
    if not shares:
        r.fail(rpath, "needs at least one variant")
        return None
    weights: dict[str, int] = {}
    for name, share in shares.items():
        if isinstance(name, str) and name in variants:
            read = _read_weight if in_percent else _read_whole_weight
            weight = read(r, share, _join(rpath, name))
            if weight is not None:
                weights[name] = weight
    if len(weights) != len(shares):
        return None
    total = sum(weights.values())
    if in_percent and total != FULL_WEIGHT:
        r.fail(rpath, f"percentages add up to {_percent(total)}, not 100")
        return None
    if not in_percent and not 0 < total <= MAX_TOTAL_WEIGHT:
        r.fail(rpath, f"weights must add up to between 1 and {MAX_TOTAL_WEIGHT}, not {total}")
        return None
    ordered = tuple((v, weights[v]) for v in variants if v in weights)
    return Rollout(ordered, by, salt)


def _read_whole_weight(r: _Reader, raw: object, path: str) -> int | None:
    if raw.__class__ is not int or not 0 <= raw <= MAX_TOTAL_WEIGHT:
        r.fail(path, f"a weight must be a whole number from 0 to {MAX_TOTAL_WEIGHT}, not {raw!r}")
        return None
    return raw


def _percent(weight: int) -> int | float:
    whole, part = divmod(weight, 1000)
    return whole if part == 0 else weight / 1000


# -- flags -------------------------------------------------------------------------

_FLAG_FIELDS = frozenset(
    {
        "description",
        "kind",
        "enabled",
        "variants",
        "off_variant",
        "targets",
        "prerequisites",
        "rules",
        "default",
        "salt",
        "bucketing",
    }
)
_PREREQ_FIELDS = frozenset({"flag", "variants"})
_RULE_FIELDS = frozenset({"when", "serve"})


def _check_json(value: object, path: str, r: _Reader, depth: int = 0) -> bool:
    if depth > MAX_JSON_DEPTH:  # recursion stops here: the depth is bounded
        r.fail(path, f"nested more than {MAX_JSON_DEPTH} levels deep")
        return False
    if value is None or isinstance(value, str | bool):
        return True
    if isinstance(value, int | float):
        if is_document_number(value):
            return True
        r.fail(path, f"cannot be {describe_number(value)}")
        return False
    if isinstance(value, list | tuple):
        return all(_check_json(v, f"{path}[{i}]", r, depth + 1) for i, v in enumerate(value))
    if isinstance(value, Mapping):
        ok = True
        for k, v in value.items():
            if not isinstance(k, str):
                r.fail(path, f"JSON object keys must be strings, not {k!r}")
                ok = False
            elif not _check_json(v, _join(path, k), r, depth + 1):
                ok = False
        return ok
    r.fail(path, f"is not a JSON value ({type(value).__name__})")
    return False


_KIND_CHECKS: Mapping[FlagKind, tuple[Callable[[object], bool], str]] = MappingProxyType(
    {
        FlagKind.BOOLEAN: (lambda v: isinstance(v, bool), "true or false"),
        FlagKind.STRING: (lambda v: isinstance(v, str), "a string"),
        FlagKind.NUMBER: (is_document_number, "a number"),
    }
)


def _thaw(value: Any) -> JsonValue:
    """Plain dicts and lists, whatever mapping or sequence types the reader used."""
    if isinstance(value, Mapping):
        return {str(k): _thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_thaw(v) for v in value]
    return value  # type: ignore[no-any-return]


def _read_variants(
    r: _Reader, body: Mapping[str, Any], path: str, kind: FlagKind
) -> dict[str, JsonValue] | None:
    if "variants" not in body:
        if kind is FlagKind.BOOLEAN:
            return dict(BOOLEAN_VARIANTS)
        r.fail(path, f"a {kind} flag needs 'variants'")
        return None
    vpath = f"{path}.variants"
    raw = body["variants"]
    if not isinstance(raw, Mapping):
        r.fail(vpath, f"must be a mapping of variant name to value, not {_type_name(raw)}")
        return None
    if not raw:
        r.fail(vpath, "needs at least one variant")
        return None
    if len(raw) > MAX_VARIANTS:
        r.fail(vpath, f"has {len(raw)} variants, more than the limit of {MAX_VARIANTS}")
        return None
    out: dict[str, JsonValue] = {}
    for name, value in raw.items():
        if r.name(name, vpath, "a variant name") is None:
            continue
        vp = _join(vpath, name)
        r.weight += _ENTRY_WEIGHT + len(name)
        if kind is FlagKind.JSON:
            if _check_json(value, vp, r):
                out[name] = _thaw(value)
                r.weight += _weight(out[name]) or 0
            continue
        if isinstance(value, str):
            r.weight += len(value)
        test, wanted = _KIND_CHECKS[kind]
        if not test(value):
            r.fail(vp, f"a {kind} flag's variant must be {wanted}, not {_type_name(value)}")
            continue
        out[name] = value
    return out if len(out) == len(raw) else None


def _read_targets(
    r: _Reader, raw: object, path: str, variants: Mapping[str, Any]
) -> Mapping[str, tuple[str, ...]]:
    body = r.mapping(raw, path, frozenset(variants))
    if body is None:
        return MappingProxyType({})
    seen: dict[str, str] = {}
    out: dict[str, tuple[str, ...]] = {}
    for variant in variants:
        if variant not in body:
            continue
        keys = r.key_list(body[variant], _join(path, variant))
        for i, key in enumerate(keys):
            if key in seen:
                r.fail(
                    f"{_join(path, variant)}[{i}]",
                    f"'{key}' is already targeted to variant '{seen[key]}'",
                )
            seen[key] = variant
        if keys:
            out[variant] = keys
    return MappingProxyType(out)


def _read_prerequisites(r: _Reader, raw: object, path: str) -> tuple[Prerequisite, ...]:
    items = r.sequence(raw, path, MAX_PREREQUISITES, "prerequisites")
    if items is None:
        return ()
    out = []
    for i, item in enumerate(items):
        ipath = f"{path}[{i}]"
        body = r.mapping(item, ipath, _PREREQ_FIELDS)
        if body is None:
            continue
        if "flag" not in body or "variants" not in body:
            r.fail(ipath, "a prerequisite needs 'flag' and 'variants'")
            continue
        flag = r.key(body["flag"], f"{ipath}.flag", "flag key")
        variants = r.key_list(body["variants"], f"{ipath}.variants")
        if not variants and isinstance(body["variants"], list):
            r.fail(f"{ipath}.variants", "needs at least one variant")
        if flag is not None and variants:
            out.append(Prerequisite(flag, variants))
    return tuple(out)


def _read_rules(
    r: _Reader, raw: object, path: str, variants: Mapping[str, Any]
) -> tuple[Rule, ...]:
    items = r.sequence(raw, path, MAX_RULES, "rules")
    if items is None:
        return ()
    out = []
    for i, item in enumerate(items):
        ipath = f"{path}[{i}]"
        body = r.mapping(item, ipath, _RULE_FIELDS)
        if body is None:
            continue
        if "when" not in body or "serve" not in body:
            r.fail(ipath, "a rule needs 'when' and 'serve'")
            continue
        before = len(r.problems)
        when = _read_when(r, body["when"], f"{ipath}.when", None)
        serve = _read_serve(r, body["serve"], f"{ipath}.serve", variants)
        if serve is not None and len(r.problems) == before:
            out.append(Rule(when, serve))
    return tuple(out)


def _read_flag(r: _Reader, key: str, raw: object, path: str) -> Flag | None:
    body = r.mapping(raw, path, _FLAG_FIELDS)
    if body is None:
        return None
    before = len(r.problems)
    kind = FlagKind.BOOLEAN
    if "kind" in body:
        try:
            kind = FlagKind(body["kind"])
        except ValueError:
            known = ", ".join(k.value for k in FlagKind)
            r.fail(f"{path}.kind", f"unknown kind {body['kind']!r} (known: {known})")
            return None
    variants = _read_variants(r, body, path, kind)
    if variants is None:
        return None
    description = ""
    if "description" in body:
        description = r.text(body["description"], f"{path}.description", MAX_DESCRIPTION) or ""
    enabled = True
    if "enabled" in body:
        enabled = r.boolean(body["enabled"], f"{path}.enabled") is not False
    off_variant: str | None = None
    if "off_variant" in body:
        off_variant = r.string(body["off_variant"], f"{path}.off_variant")
        if off_variant is not None and off_variant not in variants:
            r.fail(f"{path}.off_variant", f"unknown variant '{off_variant}'")
    elif "off" in variants:
        off_variant = "off"
    else:
        r.fail(path, "needs 'off_variant': the variant served when the flag is disabled")
    targets: Mapping[str, tuple[str, ...]] = MappingProxyType({})
    if "targets" in body:
        targets = _read_targets(r, body["targets"], f"{path}.targets", variants)
    prerequisites: tuple[Prerequisite, ...] = ()
    if "prerequisites" in body:
        prerequisites = _read_prerequisites(r, body["prerequisites"], f"{path}.prerequisites")
        r.prerequisites.append((path, key, prerequisites))
    rules: tuple[Rule, ...] = ()
    if "rules" in body:
        rules = _read_rules(r, body["rules"], f"{path}.rules", variants)
    default: Serve | None = None
    if "default" not in body:
        r.fail(path, "needs 'default': a variant name or {rollout: ...}")
    else:
        default = _read_serve(r, body["default"], f"{path}.default", variants)
    salt = r.text(body["salt"], f"{path}.salt", MAX_TEXT) if "salt" in body else None
    bucketing = DEFAULT_SCHEME
    if "bucketing" in body:
        name = body["bucketing"]
        if name.__class__ is not str or name not in SCHEMES:  # an object or list is unhashable
            r.fail(
                f"{path}.bucketing",
                f"unknown bucketing scheme {name!r} (known: {', '.join(SCHEMES)})",
            )
        else:
            bucketing = name
    if len(r.problems) != before or default is None or off_variant is None:
        return None
    return Flag(
        key=key,
        kind=kind,
        variants=MappingProxyType(variants),
        off_variant=off_variant,
        default=default,
        enabled=enabled,
        description=description,
        targets=targets,
        prerequisites=prerequisites,
        rules=rules,
        salt=salt,
        bucketing=bucketing,
    )


# -- segments ------------------------------------------------------------------------

_SEGMENT_BODY_FIELDS = frozenset({"description", "include", "exclude", "rules"})
_SEGMENT_RULE_FIELDS = frozenset({"when"})


def _read_segment(r: _Reader, key: str, raw: object, path: str) -> Segment | None:
    body = r.mapping(raw, path, _SEGMENT_BODY_FIELDS)
    if body is None:
        return None
    before = len(r.problems)
    description = ""
    if "description" in body:
        description = r.text(body["description"], f"{path}.description", MAX_DESCRIPTION) or ""
    include = r.key_list(body["include"], f"{path}.include") if "include" in body else ()
    exclude = r.key_list(body["exclude"], f"{path}.exclude") if "exclude" in body else ()
    rules: list[SegmentRule] = []
    if "rules" in body:
        items = r.sequence(body["rules"], f"{path}.rules", MAX_RULES, "rules") or []
        for i, item in enumerate(items):
            ipath = f"{path}.rules[{i}]"
            rule = r.mapping(item, ipath, _SEGMENT_RULE_FIELDS)
            if rule is None:
                continue
            if "when" not in rule:
                r.fail(ipath, "a segment rule needs 'when'")
                continue
            rules.append(SegmentRule(_read_when(r, rule["when"], f"{ipath}.when", key)))
    if len(r.problems) != before:
        return None
    return Segment(key, description, include, exclude, tuple(rules))


# -- the whole document ----------------------------------------------------------------

_DOCUMENT_FIELDS = frozenset({"version", "flags", "segments"})


def _find_cycle(graph: Mapping[str, list[str]]) -> Iterator[list[str]]:
    """Yield each cycle once, as the path that closes it.

    A depth-first walk with its own stack, not Python's: a chain as long as
    the document allows cannot exhaust the interpreter's recursion limit.
    """
    state: dict[str, int] = {}  # 1 = on the path, 2 = done
    for start in graph:
        if start in state:
            continue
        path: list[str] = [start]
        pending: list[Iterator[str]] = [iter(graph.get(start, ()))]
        state[start] = 1
        while pending:
            nxt = next(pending[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                pending.pop()
            elif state.get(nxt) == 1:
                yield [*path[path.index(nxt) :], nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                pending.append(iter(graph.get(nxt, ())))


def _chain_lengths(graph: Mapping[str, list[str]]) -> dict[str, tuple[int, str | None]]:
    """For each node of an acyclic graph: the links of its longest chain, and its next node.

    Iterative, in post-order, so that the length of a chain is never the
    depth of Python's stack.
    """
    found: dict[str, tuple[int, str | None]] = {}
    for start in graph:
        if start in found:
            continue
        stack: list[tuple[str, bool]] = [(start, False)]
        while stack:
            node, expanded = stack.pop()
            if node in found:
                continue
            targets = graph.get(node, ())
            if not expanded:
                stack.append((node, True))
                stack.extend((t, False) for t in targets if t not in found)
                continue
            best: tuple[int, str | None] = (0, None)
            for target in targets:
                length = found[target][0] + 1 if target in found else 1
                if length > best[0]:
                    best = (length, target)
            found[node] = best
    return found


def _check_depth(
    r: _Reader, graph: Mapping[str, list[str]], section: str, noun: str, limit: int, suffix: str
) -> None:
    """Refuse chains longer than ``limit``, once per chain: at the flag (or segment) it starts."""
    lengths = _chain_lengths(graph)
    too_deep = {node for node, (length, _) in lengths.items() if length > limit}
    inner = {lengths[node][1] for node in too_deep}
    for node in graph:
        if node not in too_deep or node in inner:
            continue
        chain = [node]
        while len(chain) <= 4 and (after := lengths[chain[-1]][1]) is not None:
            chain.append(after)
        shown = " -> ".join(chain) + (" -> ..." if lengths[chain[-1]][1] is not None else "")
        r.fail(
            _join(section, node) + suffix,
            f"a chain of {lengths[node][0]} {noun} ({shown}), more than the limit of {limit}",
        )


def _weight(value: object) -> int | None:
    """How many bytes the value weighs as compact JSON; None if it cannot be measured."""
    try:
        return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str))
    except (ValueError, TypeError, RecursionError):  # other checks say what is wrong with it
        return None


def _read_section(
    r: _Reader,
    name: str,
    noun: str,
    raw: object,
    read: Callable[[_Reader, str, object, str], _T | None],
    limit: int,
) -> dict[str, _T]:
    """Read each entry of ``flags`` or ``segments``, keeping those without problems."""
    out: dict[str, _T] = {}
    if not isinstance(raw, Mapping):
        r.fail(name, f"must be a mapping of {noun} key to {noun}, not {_type_name(raw)}")
        return out
    if len(raw) > limit:
        r.fail(name, f"has {len(raw)} {noun}s, more than the limit of {limit}")
        return out
    for key, body in raw.items():
        item = read_entry(r, name, noun, key, body, read)
        if item is not None:
            out[key] = item
    return out


def read_entry(
    r: _Reader,
    name: str,
    noun: str,
    key: object,
    body: object,
    read: Callable[[_Reader, str, object, str], _T | None],
) -> _T | None:
    """One entry of ``flags`` or ``segments``, or None with its problems in ``r``.

    Checks of the entry alone (its key, its body, its weight); what it names
    elsewhere is left in ``r.segment_refs`` and ``r.prerequisites``. A patch
    is read with it too (``unveil.core.incremental``), so both ways of reading
    an entry are one.
    """
    path = _join(name, str(key))
    if r.key(key, path, f"{noun} key") is None:
        return None
    before = r.weight
    item = read(r, str(key), body, path)
    weight = r.weight - before
    if weight > MAX_ITEM_BYTES:
        r.fail(path, f"the {noun} weighs {weight} bytes, more than the limit of {MAX_ITEM_BYTES}")
        return None
    return item


def parse_document(data: object) -> Document:
    """Validate plain data as a flags document; raise InvalidDocument if it is not one.

    The quick reading (``read_quickly``, below) answers most documents; where
    it doubts, the whole document is read again with paths, and refused with
    every problem.
    """
    quick = read_quickly(data)
    return quick if quick is not None else read_whole(data)


def read_whole(data: object) -> Document:
    """``parse_document`` the slow way, with a path for every part: it reports every problem."""
    r = _Reader()
    body = r.mapping(data, "", _DOCUMENT_FIELDS)
    if body is None:
        raise InvalidDocument(r.problems)
    if "version" in body and (
        not isinstance(body["version"], int) or body["version"] != FORMAT_VERSION
    ):
        r.fail(
            "version",
            f"unsupported version {body['version']!r}: this reader knows {FORMAT_VERSION}",
        )

    raw_segments = {} if body.get("segments") is None else body["segments"]
    segments = _read_section(r, "segments", "segment", raw_segments, _read_segment, MAX_SEGMENTS)
    raw_flags = {} if body.get("flags") is None else body["flags"]
    flags = _read_section(r, "flags", "flag", raw_flags, _read_flag, MAX_FLAGS)

    return checked_document(r, raw_flags, raw_segments, flags, segments)


def checked_document(
    r: _Reader,
    raw_flags: object,
    raw_segments: object,
    flags: dict[str, Flag],
    segments: dict[str, Segment],
) -> Document:
    """The document of the entries read into ``r``, once what they name is checked, or
    ``InvalidDocument`` with every problem (the last step of every whole reading)."""
    _check_references(r, raw_flags, raw_segments, flags, segments)
    if r.problems:
        raise InvalidDocument(r.problems)
    return Document(
        flags=MappingProxyType(flags),
        segments=MappingProxyType(segments),
        version=FORMAT_VERSION,
    )


def _check_references(
    r: _Reader,
    raw_flags: object,
    raw_segments: object,
    flags: Mapping[str, Flag],
    segments: Mapping[str, Segment],
) -> None:
    known_segments = set(raw_segments) if isinstance(raw_segments, Mapping) else set()
    known_flags = set(raw_flags) if isinstance(raw_flags, Mapping) else set()
    segment_graph: dict[str, list[str]] = {}
    for path, name, owner in r.segment_refs:
        if name not in known_segments:
            r.fail(path, f"unknown segment '{name}'")
        if owner is not None:
            segment_graph.setdefault(owner, []).append(name)
    cyclic = False
    for cycle in _find_cycle(segment_graph):
        cyclic = True
        r.fail(_join("segments", cycle[0]), f"segment cycle: {' -> '.join(cycle)}")
    if not cyclic:
        _check_depth(r, segment_graph, "segments", "segments", MAX_SEGMENT_DEPTH, ".rules")

    flag_graph: dict[str, list[str]] = {}
    for path, owner, prerequisites in r.prerequisites:
        for i, pre in enumerate(prerequisites):
            ppath = f"{path}.prerequisites[{i}]"
            if pre.flag == owner:
                r.fail(f"{ppath}.flag", "a flag cannot be its own prerequisite")
                continue
            if pre.flag not in known_flags:
                r.fail(f"{ppath}.flag", f"unknown flag '{pre.flag}'")
                continue
            flag_graph.setdefault(owner, []).append(pre.flag)
            other = flags.get(pre.flag)
            if other is None:
                continue  # that flag has problems of its own, already reported
            for j, variant in enumerate(pre.variants):
                if variant not in other.variants:
                    r.fail(
                        f"{ppath}.variants[{j}]",
                        f"flag '{pre.flag}' has no variant '{variant}'",
                    )
    cyclic = False
    for cycle in _find_cycle(flag_graph):
        cyclic = True
        r.fail(
            _join("flags", cycle[0]) + ".prerequisites", f"prerequisite cycle: {' -> '.join(cycle)}"
        )
    if not cyclic:
        _check_depth(
            r, flag_graph, "flags", "prerequisites", MAX_PREREQUISITE_DEPTH, ".prerequisites"
        )


# -- the quick reading ------------------------------------------------------------------
#
# Most documents are valid and their entries have a few common shapes. The
# quick reading reads those with every check of the reading above, in the
# same terms, but builds no path and keeps no problem: it answers the
# document the reading above would, or it doubts (``_Doubt``) and
# ``parse_document`` reads the whole document the slow way, which finds and
# reports every problem. An entry of a shape the quick reading does not know
# (a sample, weights, json variants, a tuple for a list...) it hands to
# ``read_entry`` with a reader of its own, so an unusual entry costs its own
# slow reading, not the document's. It may doubt a valid document (that only
# costs time); it never accepts anything the reading above refuses:
# tests/test_quick_reading.py checks that on random documents, good and bad.

#: The value checks that every string passes
_ANY_TEXT = (_check_scalar, _check_string)
_KINDS: Mapping[str, FlagKind] = MappingProxyType(
    {k.value: k for k in FlagKind if k is not FlagKind.JSON}  # json values: read_entry
)
#: Per operator name: the operator, its arity, its check of one value, and whether
#: every string passes that check (then strings are not shown to it)
_OPERATOR_ROWS: Mapping[str, tuple[Operator, Arity, Callable[[object], str | None], bool]] = (
    MappingProxyType(
        {
            op.value: (op, spec_.arity, spec_.check, spec_.check in _ANY_TEXT)
            for op, spec_ in OPERATORS.items()
        }
    )
)


class _Doubt(Exception):
    """The quick reading cannot vouch for this: the reading with problems decides."""


def _quick_key(value: object) -> str:
    if (
        value.__class__ is not str
        or not _KEY.fullmatch(value)
        or not value.isprintable()
        or value in _DOT_SEGMENTS
    ):
        raise _Doubt
    return value


def _quick_name(value: object) -> str:
    if value.__class__ is not str or not value or len(value) > _MAX_NAME:
        raise _Doubt
    return value


def _quick_flag_bool(value: object) -> bool:
    if value.__class__ is not bool:
        raise _Doubt
    return value


def _quick_body(value: object, fields: frozenset[str], needed: frozenset[str]) -> None:
    """A mapping with only these fields, and at least the needed ones."""
    if value.__class__ is not dict or not fields.issuperset(value) or not needed <= value.keys():
        raise _Doubt


def _quick_percent(raw: object) -> int:
    """``_read_weight`` without its messages."""
    if raw.__class__ is int and 0 <= raw <= 100:
        return raw * 1000
    if not isinstance(raw, int | float) or not is_number(raw) or not 0 <= raw <= 100:
        raise _Doubt
    scaled = float(raw) * 1000
    weight = round(scaled)
    if not math.isclose(scaled, weight, abs_tol=1e-6):
        raise _Doubt
    return weight


class _Quick:
    """One quick reading: what it weighed and what the entries name, for the checks after."""

    __slots__ = ("clauses", "prerequisites", "rollouts", "segment_refs", "weight")

    def __init__(self) -> None:
        self.weight = 0
        # equal parts are read into one object, which every flag that has them shares
        # (a document of ten thousand flags repeats its rollouts and clauses a lot)
        self.clauses: dict[tuple[Any, ...], Clause] = {}
        self.rollouts: dict[tuple[Any, ...], Rollout] = {}
        self.segment_refs: list[tuple[str, str | None]] = []  # (name, owner)
        self.prerequisites: list[tuple[str, tuple[Prerequisite, ...]]] = []  # (owner, ..)

    def text(self, value: object, limit: int) -> str:
        if value.__class__ is not str or len(value) > limit:
            raise _Doubt
        self.weight += len(value)
        return value

    def items(self, value: object, limit: int) -> list[Any]:
        if value.__class__ is not list or len(value) > limit:
            raise _Doubt
        self.weight += _ENTRY_WEIGHT * len(value)
        return value

    def keys(self, value: object) -> tuple[str, ...]:
        items = self.items(value, MAX_KEYS)
        weight = 0
        for item in items:
            if item.__class__ is not str or not item or len(item) > MAX_TEXT:
                raise _Doubt
            weight += len(item)
        self.weight += weight
        return tuple(items)

    def when(self, raw: object, owner: str | None) -> tuple[Condition, ...]:
        if raw.__class__ is not list or not raw or len(raw) > MAX_CONDITIONS:
            raise _Doubt
        items: list[Any] = raw
        weight = _ENTRY_WEIGHT * len(items)
        out: list[Condition] = []
        for body in items:
            if body.__class__ is not dict:
                raise _Doubt
            negate = body.get("not", False)
            if negate is not False and negate is not True:
                raise _Doubt
            if "segment" in body:
                if not _SEGMENT_FIELDS.issuperset(body):
                    raise _Doubt
                name = _quick_key(body["segment"])
                self.segment_refs.append((name, owner))
                out.append(SegmentMatch(name, negate))
                continue
            if "sample" in body or not _CLAUSE_FIELDS.issuperset(body):
                raise _Doubt  # a sample: read_entry
            attr = body.get("attr")
            if attr.__class__ is not str or not attr or len(attr) > _MAX_NAME:
                raise _Doubt
            op_name = body.get("op")
            row = _OPERATOR_ROWS.get(op_name) if op_name.__class__ is str else None
            if row is None:
                raise _Doubt
            op, arity, check, any_text = row
            ignore_case = body.get("ignore_case", False)
            if ignore_case is not False and (ignore_case is not True or op not in TEXT_OPERATORS):
                raise _Doubt
            if "values" in body:
                values = body["values"]
                if values.__class__ is not list or len(values) > MAX_VALUES:
                    raise _Doubt
                count = len(values)
                if (arity is Arity.ONE and count != 1) or (arity is Arity.NONE and count):
                    raise _Doubt
                weight += _ENTRY_WEIGHT * count
                text_only = True
                for value in values:
                    if value.__class__ is str:
                        if len(value) > MAX_TEXT or not (any_text or check(value) is None):
                            raise _Doubt
                        weight += len(value)
                    elif isinstance(value, str) or check(value) is not None:
                        raise _Doubt  # a str of another class: read_entry
                    else:
                        text_only = False
                found = tuple(values)
                if not text_only:  # 1 == True == 1.0 as keys: only texts are shared
                    out.append(Clause(attr, op, found, negate, ignore_case))
                    continue
                key = (attr, op, found, negate, ignore_case)
                clause = self.clauses.get(key)
                if clause is None:
                    clause = self.clauses[key] = Clause(attr, op, found, negate, ignore_case)
                out.append(clause)
            elif arity is Arity.NONE:
                out.append(Clause(attr, op, (), negate, ignore_case))
            else:
                raise _Doubt
        self.weight += weight
        return tuple(out)

    def serve(self, raw: object, variants: Mapping[str, JsonValue]) -> Serve:
        if raw.__class__ is str:
            if raw not in variants:
                raise _Doubt
            return raw
        if (
            raw.__class__ is not dict
            or "rollout" not in raw
            or "weights" in raw
            or not _SERVE_FIELDS.issuperset(raw)
        ):
            raise _Doubt  # weights: read_entry
        body: dict[str, Any] = raw
        by = _quick_name(body["by"]) if "by" in body else "key"
        salt = self.text(body["salt"], MAX_TEXT) if "salt" in body else None
        shares = body["rollout"]
        if shares.__class__ is not dict or not shares:
            raise _Doubt
        weights: dict[str, int] = {}
        for name, share in shares.items():
            if name not in variants:
                raise _Doubt
            weights[name] = _quick_percent(share)
        if sum(weights.values()) != FULL_WEIGHT:
            raise _Doubt
        key = (tuple([(v, weights[v]) for v in variants if v in weights]), by, salt)
        rollout = self.rollouts.get(key)
        if rollout is None:
            rollout = self.rollouts[key] = Rollout(*key)
        return rollout

    def variants(self, body: Mapping[str, Any], kind: FlagKind) -> dict[str, JsonValue]:
        if "variants" not in body:
            if kind is FlagKind.BOOLEAN:
                return _BOOLEAN_VARIANTS
            raise _Doubt
        raw = body["variants"]
        if raw.__class__ is not dict or not raw or len(raw) > MAX_VARIANTS:
            raise _Doubt
        test = _KIND_CHECKS[kind][0]
        weight = 0
        for name, value in raw.items():
            _quick_name(name)
            weight += _ENTRY_WEIGHT + len(name)
            if value.__class__ is str:
                weight += len(value)
            elif isinstance(value, str):
                raise _Doubt
            if not test(value):
                raise _Doubt
        self.weight += weight
        return dict(raw)

    def targets(
        self, raw: object, variants: Mapping[str, JsonValue]
    ) -> Mapping[str, tuple[str, ...]]:
        if raw.__class__ is not dict or not raw.keys() <= variants.keys():
            raise _Doubt
        body: dict[str, Any] = raw
        seen: set[str] = set()
        out: dict[str, tuple[str, ...]] = {}
        for variant in variants:
            if variant not in body:
                continue
            keys = self.keys(body[variant])
            for key in keys:
                if key in seen:
                    raise _Doubt
                seen.add(key)
            if keys:
                out[variant] = keys
        return MappingProxyType(out)

    def prerequisite_list(self, raw: object) -> tuple[Prerequisite, ...]:
        out: list[Prerequisite] = []
        for body in self.items(raw, MAX_PREREQUISITES):
            _quick_body(body, _PREREQ_FIELDS, _PREREQ_FIELDS)
            variants = self.keys(body["variants"])
            if not variants:
                raise _Doubt
            out.append(Prerequisite(_quick_key(body["flag"]), variants))
        return tuple(out)

    def flag(self, key: str, raw: object) -> Flag:
        if raw.__class__ is not dict or not _FLAG_FIELDS.issuperset(raw):
            raise _Doubt
        body: dict[str, Any] = raw
        kind_name = body.get("kind", "boolean")
        kind = _KINDS.get(kind_name) if kind_name.__class__ is str else None
        if kind is None:
            raise _Doubt
        variants = self.variants(body, kind)
        shown = _SHARED_BOOLEAN_VARIANTS if variants is _BOOLEAN_VARIANTS else None
        description = (
            self.text(body["description"], MAX_DESCRIPTION) if "description" in body else ""
        )
        enabled = _quick_flag_bool(body["enabled"]) if "enabled" in body else True
        if "off_variant" in body:
            off_variant = body["off_variant"]
            if off_variant.__class__ is not str or off_variant not in variants:
                raise _Doubt
        elif "off" in variants:
            off_variant = "off"
        else:
            raise _Doubt
        targets: Mapping[str, tuple[str, ...]] = (
            self.targets(body["targets"], variants) if "targets" in body else _NO_TARGETS
        )
        prerequisites: tuple[Prerequisite, ...] = ()
        if "prerequisites" in body:
            prerequisites = self.prerequisite_list(body["prerequisites"])
            self.prerequisites.append((key, prerequisites))
        rules: list[Rule] = []
        if "rules" in body:
            for rule in self.items(body["rules"], MAX_RULES):
                _quick_body(rule, _RULE_FIELDS, _RULE_FIELDS)
                rules.append(
                    Rule(self.when(rule["when"], None), self.serve(rule["serve"], variants))
                )
        if "default" not in body:
            raise _Doubt
        default = self.serve(body["default"], variants)
        salt = self.text(body["salt"], MAX_TEXT) if "salt" in body else None
        bucketing = body.get("bucketing", DEFAULT_SCHEME)
        if bucketing.__class__ is not str or bucketing not in SCHEMES:
            raise _Doubt
        return Flag(  # by position: the fields' order, and a little faster
            key,
            kind,
            MappingProxyType(variants) if shown is None else shown,
            off_variant,
            default,
            enabled,
            description,
            targets,
            prerequisites,
            tuple(rules),
            salt,
            bucketing,
        )

    def segment(self, key: str, raw: object) -> Segment:
        if raw.__class__ is not dict or not _SEGMENT_BODY_FIELDS.issuperset(raw):
            raise _Doubt
        body: dict[str, Any] = raw
        description = (
            self.text(body["description"], MAX_DESCRIPTION) if "description" in body else ""
        )
        include = self.keys(body["include"]) if "include" in body else ()
        exclude = self.keys(body["exclude"]) if "exclude" in body else ()
        rules: list[SegmentRule] = []
        if "rules" in body:
            for rule in self.items(body["rules"], MAX_RULES):
                _quick_body(rule, _SEGMENT_RULE_FIELDS, _SEGMENT_RULE_FIELDS)
                rules.append(SegmentRule(self.when(rule["when"], key)))
        return Segment(key, description, include, exclude, tuple(rules))

    def section(
        self,
        raw: object,
        limit: int,
        section: str,
        noun: str,
        quick: Callable[[str, object], _T],
        slow: Callable[[_Reader, str, object, str], _T | None],
    ) -> dict[str, _T]:
        """The entries of ``flags`` or ``segments``: each read quickly, else by ``read_entry``
        alone (an entry of a shape the quick reading does not know); a problem is a doubt."""
        if raw is None:
            return {}
        if raw.__class__ is not dict or len(raw) > limit:
            raise _Doubt
        out: dict[str, _T] = {}
        for key, body in raw.items():
            name = _quick_key(key)
            weight, refs, needs = self.weight, len(self.segment_refs), len(self.prerequisites)
            try:
                out[name] = quick(name, body)
            except _Doubt:
                del self.segment_refs[refs:], self.prerequisites[needs:]
                r = _Reader()
                found = read_entry(r, section, noun, key, body, slow)
                if found is None or r.problems:
                    raise
                out[name] = found
                self.weight = weight  # read_entry weighed it
                self.segment_refs.extend((seg, owner) for _, seg, owner in r.segment_refs)
                self.prerequisites.extend((owner, pres) for _, owner, pres in r.prerequisites)
                continue
            if self.weight - weight > MAX_ITEM_BYTES:
                raise _Doubt
        return out

    def document(self, data: object) -> Document:
        if data.__class__ is not dict or not _DOCUMENT_FIELDS.issuperset(data):
            raise _Doubt
        body: dict[str, Any] = data
        if "version" in body and (
            not isinstance(body["version"], int) or body["version"] != FORMAT_VERSION
        ):
            raise _Doubt
        segments = self.section(
            body.get("segments"), MAX_SEGMENTS, "segments", "segment", self.segment, _read_segment
        )
        flags = self.section(body.get("flags"), MAX_FLAGS, "flags", "flag", self.flag, _read_flag)
        check = _Reader()  # the chain checks report into one; any problem is a doubt
        segment_graph: dict[str, list[str]] = {}
        for name, owner in self.segment_refs:
            if name not in segments:
                raise _Doubt
            if owner is not None:
                segment_graph.setdefault(owner, []).append(name)
        if segment_graph:
            if next(_find_cycle(segment_graph), None) is not None:
                raise _Doubt
            _check_depth(check, segment_graph, "segments", "segments", MAX_SEGMENT_DEPTH, "")
        flag_graph: dict[str, list[str]] = {}
        for owner, prerequisites in self.prerequisites:
            for pre in prerequisites:
                other = flags.get(pre.flag)
                if pre.flag == owner or other is None:
                    raise _Doubt
                if any(variant not in other.variants for variant in pre.variants):
                    raise _Doubt
                flag_graph.setdefault(owner, []).append(pre.flag)
        if flag_graph:
            if next(_find_cycle(flag_graph), None) is not None:
                raise _Doubt
            _check_depth(check, flag_graph, "flags", "prerequisites", MAX_PREREQUISITE_DEPTH, "")
        if check.problems:
            raise _Doubt
        return Document(
            flags=MappingProxyType(flags),
            segments=MappingProxyType(segments),
            version=FORMAT_VERSION,
        )


_NO_TARGETS: Mapping[str, tuple[str, ...]] = MappingProxyType({})
#: the variants of every boolean flag that names none: one read-only mapping for all
_BOOLEAN_VARIANTS: dict[str, JsonValue] = dict(BOOLEAN_VARIANTS)
_SHARED_BOOLEAN_VARIANTS: Mapping[str, JsonValue] = MappingProxyType(_BOOLEAN_VARIANTS)


def read_quickly(data: object) -> Document | None:
    """The document ``parse_document`` would read, or None where it has to read it itself."""
    try:
        return _Quick().document(data)
    except _Doubt:
        return None


# -- back to data ----------------------------------------------------------------------


def _condition_to_data(cond: Condition) -> dict[str, Any]:
    out: dict[str, Any]
    if isinstance(cond, SegmentMatch):
        out = {"segment": cond.segment}
    elif isinstance(cond, Sample):
        out = {"sample": _percent(cond.percent)}
        if cond.by != "key":
            out["by"] = cond.by
        if cond.salt is not None:
            out["salt"] = cond.salt
    else:
        out = {"attr": cond.attr, "op": cond.op.value}
        if OPERATORS[cond.op].arity is not Arity.NONE:
            out["values"] = list(cond.values)
        if cond.ignore_case:
            out["ignore_case"] = True
    if cond.negate:
        out["not"] = True
    return out


def _serve_to_data(serve: Serve) -> Any:
    if isinstance(serve, str):
        return serve
    out: dict[str, Any]
    if serve.total == FULL_WEIGHT:
        out = {"rollout": {v: _percent(w) for v, w in serve.weights}}
    else:
        out = {"weights": dict(serve.weights)}
    if serve.by != "key":
        out["by"] = serve.by
    if serve.salt is not None:
        out["salt"] = serve.salt
    return out


def _flag_to_data(flag: Flag) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if flag.description:
        out["description"] = flag.description
    out["kind"] = flag.kind.value
    out["enabled"] = flag.enabled
    out["variants"] = {k: _thaw(v) for k, v in flag.variants.items()}
    out["off_variant"] = flag.off_variant
    if flag.targets:
        out["targets"] = {v: list(keys) for v, keys in flag.targets.items()}
    if flag.prerequisites:
        out["prerequisites"] = [
            {"flag": p.flag, "variants": list(p.variants)} for p in flag.prerequisites
        ]
    if flag.rules:
        out["rules"] = [
            {
                "when": [_condition_to_data(c) for c in rule.when],
                "serve": _serve_to_data(rule.serve),
            }
            for rule in flag.rules
        ]
    out["default"] = _serve_to_data(flag.default)
    if flag.salt is not None:
        out["salt"] = flag.salt
    if flag.bucketing != DEFAULT_SCHEME:
        out["bucketing"] = flag.bucketing
    return out


def _segment_to_data(segment: Segment) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if segment.description:
        out["description"] = segment.description
    if segment.include:
        out["include"] = list(segment.include)
    if segment.exclude:
        out["exclude"] = list(segment.exclude)
    if segment.rules:
        out["rules"] = [{"when": [_condition_to_data(c) for c in r.when]} for r in segment.rules]
    return out


def document_to_data(document: Document) -> dict[str, Any]:
    """The canonical plain-data form of a document (JSON- and YAML-ready)."""
    out: dict[str, Any] = {"version": document.version}
    if document.segments:
        out["segments"] = {k: _segment_to_data(s) for k, s in document.segments.items()}
    out["flags"] = {k: _flag_to_data(f) for k, f in document.flags.items()}
    return out
