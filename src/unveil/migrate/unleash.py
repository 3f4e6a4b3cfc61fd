"""Unleash's client features document, translated into a native flags document.

Every Unleash feature becomes one flag under the ``unleash`` bucketing
scheme, so percentages and variants place each user exactly where Unleash
placed them. The translation is plain data to plain data:

- a feature's strategies become rules, in order; a strategy's percentage
  becomes a ``sample`` condition, so a user outside it falls through to the
  next strategy as in Unleash; constraints become clauses (``inverted`` is
  ``not``, ``caseInsensitive`` is ``ignore_case``); segments become segments.
- variants keep their names and their payloads (the flag is of kind json,
  each variant's value its payload); a feature without variants is a boolean
  flag. ``disabled`` is the off variant. Where Unleash says "enabled, but no
  variant" (its ``disabled`` variant with ``feature_enabled`` true), the flag
  serves a variant named ``enabled``, so that one name never means two things.
- dependencies become prerequisites.

What cannot be carried over with the same behaviour (a custom strategy, a
random percentage between 0 and 100) is a problem: the whole import is
refused with every problem named, and nothing is half imported. What is
carried over with a remark (an unknown operator that Unleash treats as "no
match", a dependency that Unleash never satisfies) is a note.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from unveil.core import InvalidDocument, Problem, parse_document
from unveil.core.bucketing import UNLEASH_SCHEME
from unveil.core.model import Operator
from unveil.core.operators import OPERATORS
from unveil.core.timestamps import parse_instant

__all__ = ["DISABLED", "ON_WITHOUT_VARIANT", "ImportRefused", "Imported", "import_unleash"]

#: The variant Unleash reports when a feature is off.
DISABLED = "disabled"
#: The variant served when a feature is on but has no variant to give.
ON_WITHOUT_VARIANT = "enabled"

# Unleash's default stickiness: the first of these the context has.
_STRATEGY_STICKINESS = ("userId", "sessionId")
_VARIANT_STICKINESS = ("userId", "sessionId", "remoteAddress")

_SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?"
)
_NUMBER_OPS = {
    "NUM_EQ": "number_eq",
    "NUM_LT": "lt",
    "NUM_LTE": "lte",
    "NUM_GT": "gt",
    "NUM_GTE": "gte",
}
_SEMVER_OPS = {
    "SEMVER_EQ": "semver_eq",
    "SEMVER_LT": "semver_lt",
    "SEMVER_GT": "semver_gt",
    "SEMVER_LTE": "semver_lte",
    "SEMVER_GTE": "semver_gte",
}
_TEXT_OPS = {
    "STR_STARTS_WITH": "starts_with",
    "STR_ENDS_WITH": "ends_with",
    "STR_CONTAINS": "contains",
}
_DATE_OPS = {"DATE_AFTER": "after", "DATE_BEFORE": "before"}

Condition = dict[str, Any]
Arm = tuple[list[Condition], Any]  # conditions, then what to serve


@dataclass(frozen=True, slots=True)
class Imported:
    """A flags document ready to write or apply, and what to know about it."""

    document: dict[str, Any]
    notes: tuple[Problem, ...] = ()


class ImportRefused(InvalidDocument):
    """Something cannot be imported with the same behaviour; nothing was imported."""

    subject = "the Unleash import was refused:"


def unleash_context(context: Mapping[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """An Unleash context as an unveil context.

    Fields keep their names, ``properties`` are lifted to the top (a field of
    the context itself wins over a property of the same name), the targeting
    key ``key`` is the ``userId``, and ``currentTime`` defaults to now, as in
    Unleash.
    """
    out: dict[str, Any] = {}
    properties = context.get("properties")
    if isinstance(properties, Mapping):
        out.update(properties)
    out.update((k, v) for k, v in context.items() if k != "properties")
    if out.get("userId") is not None:
        out["key"] = out["userId"]
    if out.get("currentTime") is None:
        out["currentTime"] = (now or datetime.now(UTC)).isoformat()
    return out


def import_unleash(source: Mapping[str, Any]) -> Imported:
    """Translate an Unleash client features document (or delta events) to flags.

    Raises ``ImportRefused`` naming every feature that cannot be carried over.
    """
    features, segments = _read_source(source)
    job = _Job(features={}, problems=[], notes=[])
    for i, feature in enumerate(features):
        name = feature.get("name") if isinstance(feature, Mapping) else None
        if not isinstance(name, str) or not name:
            job.problems.append(Problem(f"features[{i}]", "a feature needs a name"))
        elif _well_formed(feature, _feature_path(name), job):
            job.features[name] = feature
    job.segments = _translate_segments(segments, job)
    job.variant_names = {name: _variant_names(name, f, job) for name, f in job.features.items()}
    flags = {name: _translate_feature(name, feature, job) for name, feature in job.features.items()}
    if job.problems:
        raise ImportRefused(job.problems)
    out_segments = {key: body for key, body in job.segments.values() if body is not None}
    document = {"version": 1, "segments": out_segments, "flags": flags}
    try:
        parse_document(document)
    except InvalidDocument as exc:  # a translation we made is wrong: say where
        raise ImportRefused(exc.problems) from exc
    return Imported(document, tuple(job.notes))


@dataclass(slots=True)
class _Job:
    features: dict[str, Mapping[str, Any]]
    problems: list[Problem]
    notes: list[Problem]
    # Unleash segment id -> (our key, body or None when it matches everyone)
    segments: dict[Any, tuple[str, dict[str, Any] | None]] = field(default_factory=dict)
    variant_names: dict[str, list[str]] = field(default_factory=dict)

    def problem(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def note(self, path: str, message: str) -> None:
        self.notes.append(Problem(path, message))


# -- the source ------------------------------------------------------------------------


def _read_source(source: Mapping[str, Any]) -> tuple[list[Any], list[Any]]:
    """Features and segments, from a features document or from delta events."""
    if not isinstance(source, Mapping):
        raise ImportRefused([Problem("", "an Unleash features document must be a mapping")])
    if "events" in source and "features" not in source:
        return _replay_events(source["events"])
    features = source.get("features")
    segments = source.get("segments") or []
    if not isinstance(features, list):
        raise ImportRefused([Problem("features", "must be a list of features")])
    if not isinstance(segments, list):
        raise ImportRefused([Problem("segments", "must be a list of segments")])
    return features, segments


def _replay_events(events: object) -> tuple[list[Any], list[Any]]:
    """The state that Unleash's delta events leave, applied in order."""
    if not isinstance(events, list):
        raise ImportRefused([Problem("events", "must be a list of events")])
    features: dict[str, Any] = {}
    segments: dict[Any, Any] = {}
    for i, event in enumerate(events):
        try:
            _replay(event, features, segments)
        except (KeyError, TypeError, AttributeError):
            kind = event.get("type") if isinstance(event, Mapping) else None
            raise ImportRefused(
                [Problem(f"events[{i}]", f"not a well-formed {kind!r} event")]
            ) from None
    return list(features.values()), list(segments.values())


def _replay(event: Any, features: dict[str, Any], segments: dict[Any, Any]) -> None:
    kind = event.get("type")
    if kind == "hydration":
        features.clear()
        features.update((f["name"], f) for f in event.get("features") or [])
        segments.clear()
        segments.update((s["id"], s) for s in event.get("segments") or [])
    elif kind == "feature-updated":
        features[event["feature"]["name"]] = event["feature"]
    elif kind == "feature-removed":
        features.pop(event.get("featureName"), None)
    elif kind == "segment-updated":
        segments[event["segment"]["id"]] = event["segment"]
    elif kind == "segment-removed":
        segments.pop(event.get("segmentId"), None)
    else:
        raise KeyError(kind)


def _list_of_mappings(value: object, path: str, job: _Job) -> bool:
    if value is None:
        return True
    if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
        job.problem(path, "must be a list of mappings")
        return False
    return True


def _variants_well_formed(variants: object, path: str, job: _Job) -> bool:
    if not _list_of_mappings(variants, path, job):
        return False
    ok = True
    items: list[Mapping[str, Any]] = variants or []  # type: ignore[assignment]
    for i, variant in enumerate(items):
        vpath = f"{path}[{i}]"
        if not isinstance(variant.get("name"), str):
            job.problem(f"{vpath}.name", "a variant needs a name")
            ok = False
        weight = variant.get("weight", 0)
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
            job.problem(f"{vpath}.weight", f"must be a whole number of at least 0, not {weight!r}")
            ok = False
        overrides = variant.get("overrides")
        if not _list_of_mappings(overrides, f"{vpath}.overrides", job):
            ok = False
            continue
        for j, override in enumerate(overrides or []):
            if not isinstance(override.get("contextName"), str) or not isinstance(
                override.get("values", []), list
            ):
                job.problem(f"{vpath}.overrides[{j}]", "needs a contextName and a list of values")
                ok = False
    return ok


def _well_formed(feature: Mapping[str, Any], path: str, job: _Job) -> bool:
    """Whether the feature has the shape Unleash gives it; problems named if not."""
    ok = _variants_well_formed(feature.get("variants"), f"{path}.variants", job)
    dependencies = feature.get("dependencies")
    if _list_of_mappings(dependencies, f"{path}.dependencies", job):
        for i, dep in enumerate(dependencies or []):
            wanted = dep.get("variants", [])
            if not isinstance(dep.get("feature"), str) or not isinstance(wanted, list):
                job.problem(
                    f"{path}.dependencies[{i}]", "needs a feature name (and a list of variants)"
                )
                ok = False
    else:
        ok = False
    strategies = feature.get("strategies")
    if not _list_of_mappings(strategies, f"{path}.strategies", job):
        return False
    for i, strategy in enumerate(strategies or []):
        spath = f"{path}.strategies[{i}]"
        ok = _variants_well_formed(strategy.get("variants"), f"{spath}.variants", job) and ok
        ok = _list_of_mappings(strategy.get("constraints"), f"{spath}.constraints", job) and ok
        segments = strategy.get("segments")
        if segments is not None and (
            not isinstance(segments, list) or not all(_is_id(s) for s in segments)
        ):
            job.problem(f"{spath}.segments", "must be a list of segment ids")
            ok = False
        params = strategy.get("parameters")
        if params is not None and not isinstance(params, Mapping):
            job.problem(f"{spath}.parameters", "must be a mapping")
            ok = False
    return ok


# -- segments --------------------------------------------------------------------------


def _translate_segments(
    segments: list[Any], job: _Job
) -> dict[Any, tuple[str, dict[str, Any] | None]]:
    out: dict[Any, tuple[str, dict[str, Any] | None]] = {}
    used: set[str] = set()
    for i, segment in enumerate(segments):
        path = f"segments[{i}]"
        if not isinstance(segment, Mapping) or not _is_id(segment.get("id")):
            job.problem(path, "a segment needs an id (a number or a string)")
            continue
        if not _list_of_mappings(segment.get("constraints"), f"{path}.constraints", job):
            continue
        name = segment.get("name")
        key = name if isinstance(name, str) and _is_key(name) else f"segment-{segment['id']}"
        if key in used:
            key = f"segment-{segment['id']}"
        used.add(key)
        when = _constraints(segment.get("constraints") or [], f"{path}.constraints", job)
        body = {"rules": [{"when": when}]} if when else None
        if isinstance(segment.get("description"), str) and body is not None:
            body["description"] = segment["description"]
        out[segment["id"]] = (key, body)
    return out


def _is_id(value: object) -> bool:
    return value.__class__ in (int, str)


def _is_key(text: str) -> bool:
    return 0 < len(text) <= 200 and text.isprintable() and not any(c.isspace() for c in text)


# -- variants ----------------------------------------------------------------------------


def _variant_lists(feature: Mapping[str, Any]) -> list[list[Mapping[str, Any]]]:
    lists = [feature.get("variants") or []]
    lists += [s.get("variants") or [] for s in feature.get("strategies") or []]
    return [list(v) for v in lists]


def _variant_names(name: str, feature: Mapping[str, Any], job: _Job) -> list[str]:
    """The flag's variants, in an order every one of the feature's lists agrees with."""
    order: list[str] = []
    for variants in _variant_lists(feature):
        for variant in variants:
            if str(variant.get("name")) not in order:
                order.append(str(variant.get("name")))
    for variants in _variant_lists(feature):
        positions = [order.index(str(v.get("name"))) for v in variants]
        if positions != sorted(positions):
            job.problem(
                _feature_path(name),
                "its strategies list the same variants in different orders; "
                "unveil keeps one order per flag",
            )
    return order


def _payload(variant: Mapping[str, Any]) -> Any:
    payload = variant.get("payload")
    return dict(payload) if isinstance(payload, Mapping) else None


def _variant_values(name: str, feature: Mapping[str, Any], job: _Job) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for variants in _variant_lists(feature):
        for variant in variants:
            vname = variant.get("name")
            if not isinstance(vname, str) or not _is_key(vname):
                job.problem(_feature_path(name), f"variant name {vname!r} cannot be a variant key")
                continue
            if vname in (DISABLED, ON_WITHOUT_VARIANT):
                job.problem(
                    _feature_path(name),
                    f"a variant named '{vname}' would clash with the name unveil gives "
                    "to a feature that is off or on without a variant",
                )
                continue
            if vname in values and values[vname] != _payload(variant):
                job.problem(
                    _feature_path(name), f"variant '{vname}' has different payloads in places"
                )
            values.setdefault(vname, _payload(variant))
    return values


def _variant_arms(
    variants: list[Mapping[str, Any]],
    stickiness: str,
    salt: str,
    path: str,
    job: _Job,
) -> list[Arm] | None:
    """How Unleash picks among variants: overrides first, then a stable split."""
    weights: dict[str, int] = {}
    for variant in variants:
        weight = variant.get("weight", 0)
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
            job.problem(path, f"variant {variant.get('name')!r} has weight {weight!r}")
            return None
        weights[variant["name"]] = weight
    total = sum(weights.values())
    if not variants or total == 0:
        return [([], ON_WITHOUT_VARIANT)]
    arms: list[Arm] = []
    for variant in variants:
        for override in variant.get("overrides") or []:
            values = [str(v) for v in override.get("values") or []]
            clause = {"attr": override.get("contextName"), "op": "in", "values": values}
            arms.append(([clause], variant["name"]))
    winners = [v for v, w in weights.items() if w == total]
    if winners:
        return [*arms, ([], winners[0])]
    if stickiness == "random":
        job.problem(path, "variants with random stickiness give no stable assignment")
        return None
    chain = _VARIANT_STICKINESS if stickiness == "default" else (stickiness,)
    split = {"weights": weights, "salt": salt}
    for i, attr in enumerate(chain):
        absent = [_absent(earlier) for earlier in chain[:i]]
        arms.append(([*absent, {"attr": attr, "op": "exists"}], {**split, "by": attr}))
    # Unleash draws at random when the context has none of these; unveil stays stable
    first = next(v for v, w in weights.items() if w > 0)
    arms.append(([], first))
    return arms


def _absent(attr: str) -> Condition:
    return {"attr": attr, "op": "exists", "not": True}


# -- strategies ----------------------------------------------------------------------------


def _percentage(raw: object) -> float | None:
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _sample_cases(
    percentage: object,
    chain: tuple[str, ...],
    random_fallback: bool,
    salt: str,
    path: str,
    job: _Job,
) -> list[list[Condition]] | None:
    """The conditions for "in the percentage": one list per way in, None for nobody."""
    pct = _percentage(percentage)
    if pct is None or pct <= 0:
        return None
    if pct >= 100:
        if random_fallback:
            return [[]]
        return [[{"attr": chain[0], "op": "exists"}]]
    if not chain:
        job.problem(path, f"a random {pct:g}% rollout gives no stable assignment")
        return None
    whole = math.floor(pct)  # Unleash compares a whole 1..100 with the percentage
    cases = []
    for i, attr in enumerate(chain):
        absent = [_absent(earlier) for earlier in chain[:i]]
        cases.append([*absent, {"sample": whole, "by": attr, "salt": salt}])
    if random_fallback:
        job.note(
            path,
            f"contexts without {' or '.join(chain)} are outside the {pct:g}%; "
            "Unleash would draw them at random",
        )
    return cases


def _strategy_cases(
    feature_name: str, strategy: Mapping[str, Any], path: str, job: _Job
) -> list[list[Condition]] | None:
    """The strategy's own test, as lists of conditions (any one list lets a context in)."""
    kind = strategy.get("name")
    params = strategy.get("parameters") or {}
    group = str(params.get("groupId") or feature_name)
    if kind == "default":
        return [[]]
    if kind == "userWithId":
        ids = [part.strip() for part in str(params.get("userIds", "")).split(",") if part.strip()]
        return [[{"attr": "userId", "op": "in", "values": ids}]]
    if kind == "gradualRolloutUserId":
        return _sample_cases(params.get("percentage"), ("userId",), False, group, path, job)
    if kind == "gradualRolloutSessionId":
        return _sample_cases(params.get("percentage"), ("sessionId",), False, group, path, job)
    if kind == "gradualRolloutRandom":
        return _sample_cases(params.get("percentage"), (), True, group, path, job)
    if kind == "flexibleRollout":
        stickiness = str(params.get("stickiness") or "default")
        rollout = params.get("rollout")
        if stickiness == "default":
            return _sample_cases(rollout, _STRATEGY_STICKINESS, True, group, path, job)
        if stickiness == "random":
            return _sample_cases(rollout, (), True, group, path, job)
        return _sample_cases(rollout, (stickiness,), False, group, path, job)
    if kind == "remoteAddress":
        ips = [part.strip() for part in str(params.get("IPs", "")).split(",") if part.strip()]
        return [[{"attr": "remoteAddress", "op": "in_cidr", "values": _networks(ips, path, job)}]]
    job.problem(path, f"custom strategy {kind!r} has no equivalent; unveil cannot run its code")
    return None


def _networks(values: list[str], path: str, job: _Job) -> list[str]:
    valid = []
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            job.note(path, f"{value!r} is not an address or range; Unleash ignores it too")
        else:
            valid.append(value)
    return valid


# -- constraints ----------------------------------------------------------------------------


def _constraints(raw: list[Any], path: str, job: _Job) -> list[Condition]:
    return [_constraint(c, f"{path}[{i}]", job) for i, c in enumerate(raw)]


def _never(attr: str, negate: bool) -> Condition:
    """A clause that never holds (or, negated, always does)."""
    clause: Condition = {"attr": attr, "op": "in", "values": []}
    if negate:
        clause["not"] = True
    return clause


def _constraint(raw: object, path: str, job: _Job) -> Condition:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("contextName"), str):
        job.problem(path, "a constraint needs a contextName")
        return _never("x", False)
    attr, op = raw["contextName"], raw.get("operator")
    inverted = raw.get("inverted") is True
    ignore_case = raw.get("caseInsensitive") is True
    values = [str(v) for v in raw.get("values") or []]
    value = raw.get("value")
    if value is None and len(values) == 1:
        value = values[0]
    clause: Condition
    if op in ("IN", "NOT_IN"):
        clause = {"attr": attr, "op": "in", "values": values}
        inverted = inverted != (op == "NOT_IN")
    elif op in _TEXT_OPS:
        clause = {"attr": attr, "op": _TEXT_OPS[op], "values": values}
        if ignore_case:
            clause["ignore_case"] = True
    elif op in _NUMBER_OPS:
        number = _percentage(value)
        if number is None:
            job.note(path, f"{value!r} is not a number: the constraint never holds, as in Unleash")
            return _never(attr, inverted)
        clause = {"attr": attr, "op": _NUMBER_OPS[op], "values": [_plain_number(number)]}
    elif op in _DATE_OPS:
        if parse_instant(value, require_offset=True) is None:
            job.note(path, f"{value!r} is not a date: the constraint never holds, as in Unleash")
            return _never(attr, inverted)
        clause = {"attr": attr, "op": _DATE_OPS[op], "values": [value]}
    elif op in _SEMVER_OPS:
        if not isinstance(value, str) or not _SEMVER.fullmatch(value):
            job.note(path, f"{value!r} is not a semantic version: the constraint never holds")
            return _never(attr, inverted)
        clause = {"attr": attr, "op": _SEMVER_OPS[op], "values": [value]}
    elif op == "REGEX":
        problem = OPERATORS[Operator.MATCHES].check(value)
        if problem is not None:
            job.note(path, f"the pattern is not usable ({problem}): it never matches")
            return _never(attr, inverted)
        clause = {"attr": attr, "op": "matches", "values": [value]}
        if ignore_case:
            clause["ignore_case"] = True
    elif op == "IN_CIDR":
        clause = {"attr": attr, "op": "in_cidr", "values": _networks(values, path, job)}
    else:
        job.note(path, f"unknown operator {op!r}: the constraint never holds, as in Unleash")
        return _never(attr, inverted)
    if inverted:
        clause["not"] = True
    return clause


def _plain_number(number: float) -> int | float:
    return int(number) if number.is_integer() and abs(number) < 2**53 else number


# -- features ------------------------------------------------------------------------------


def _feature_path(name: str) -> str:
    return f'features["{name}"]'


def _prerequisites(name: str, feature: Mapping[str, Any], job: _Job) -> list[Any] | None:
    """Prerequisites for the feature's dependencies; None when Unleash never satisfies them."""
    out = []
    for i, dep in enumerate(feature.get("dependencies") or []):
        path = f"{_feature_path(name)}.dependencies[{i}]"
        parent_name = dep.get("feature")
        parent = job.features.get(parent_name)
        if parent is None:
            job.note(path, f"feature '{parent_name}' does not exist: Unleash keeps this one off")
            return None
        if parent.get("dependencies"):
            job.note(path, f"'{parent_name}' has dependencies of its own: Unleash keeps this off")
            return None
        parent_variants = [*job.variant_names[parent_name], ON_WITHOUT_VARIANT]
        if dep.get("enabled", True) is False:
            wanted = [DISABLED]
        elif dep.get("variants"):
            named = [ON_WITHOUT_VARIANT if v == DISABLED else v for v in dep["variants"]]
            wanted = [v for v in named if v in parent_variants]
        else:
            wanted = parent_variants
        wanted = [v for v in wanted if v == DISABLED or _serves(parent_name, v, job)]
        if not wanted:
            job.note(path, f"no variant of '{parent_name}' satisfies it: Unleash keeps this off")
            return None
        out.append({"flag": parent_name, "variants": wanted})
    return out


def _serves(name: str, variant: str, job: _Job) -> bool:
    """Whether the translated flag has this variant at all."""
    if variant == ON_WITHOUT_VARIANT:
        return _needs_on_without_variant(job.features[name])
    return variant in job.variant_names[name]


def _needs_on_without_variant(feature: Mapping[str, Any]) -> bool:
    own = feature.get("variants") or []
    strategies = feature.get("strategies") or []
    if not strategies:
        return not _has_weight(own)
    return any(not _has_weight(s.get("variants") or own) for s in strategies)


def _has_weight(variants: list[Any]) -> bool:
    return any(isinstance(v.get("weight"), int) and v.get("weight", 0) > 0 for v in variants)


def _translate_feature(name: str, feature: Mapping[str, Any], job: _Job) -> dict[str, Any]:
    path = _feature_path(name)
    values = _variant_values(name, feature, job)
    flag: dict[str, Any] = {"bucketing": UNLEASH_SCHEME}
    if isinstance(feature.get("description"), str) and feature["description"]:
        flag["description"] = feature["description"]
    if values:
        flag["kind"] = "json"
        flag["variants"] = {v: values[v] for v in job.variant_names[name] if v in values}
        if _needs_on_without_variant(feature):
            flag["variants"][ON_WITHOUT_VARIANT] = None
        flag["variants"][DISABLED] = None
    else:
        flag["kind"] = "boolean"
        flag["variants"] = {ON_WITHOUT_VARIANT: True, DISABLED: False}
    flag["off_variant"] = DISABLED
    flag["enabled"] = feature.get("enabled") is True
    prerequisites = _prerequisites(name, feature, job)
    if prerequisites is None:
        flag["enabled"] = False
    elif prerequisites:
        flag["prerequisites"] = prerequisites
    rules, default = _rules(name, feature, path, job)
    if rules:
        flag["rules"] = rules
    flag["default"] = default
    return flag


def _rules(
    name: str, feature: Mapping[str, Any], path: str, job: _Job
) -> tuple[list[dict[str, Any]], Any]:
    """The feature's strategies as rules; the first unconditional one is the default."""
    own_variants = list(feature.get("variants") or [])
    own_stickiness = str((own_variants[0].get("stickiness") if own_variants else None) or "default")
    strategies = feature.get("strategies") or []
    if not strategies:
        arms = _variant_arms(own_variants, own_stickiness, name, path, job) or []
        return _arms_to_rules(arms)
    all_arms: list[Arm] = []
    for i, strategy in enumerate(strategies):
        spath = f"{path}.strategies[{i}]"
        conditions = _strategy_conditions(strategy, spath, job)
        cases = _strategy_cases(name, strategy, spath, job)
        if conditions is None or cases is None:
            continue  # this strategy lets nobody in
        params = strategy.get("parameters") or {}
        if strategy.get("variants"):
            variants = list(strategy["variants"])
            stickiness = str(params.get("stickiness") or "default")
            salt = str(params.get("groupId") or name)
        else:
            variants, stickiness, salt = own_variants, own_stickiness, name
        serves = _variant_arms(variants, stickiness, salt, spath, job)
        if serves is None:
            continue
        for case in cases:
            for extra, serve in serves:
                all_arms.append(([*conditions, *case, *extra], serve))
    return _arms_to_rules(all_arms)


def _strategy_conditions(
    strategy: Mapping[str, Any], path: str, job: _Job
) -> list[Condition] | None:
    conditions = _constraints(strategy.get("constraints") or [], f"{path}.constraints", job)
    for segment_id in strategy.get("segments") or []:
        found = job.segments.get(segment_id)
        if found is None:
            job.note(path, f"segment {segment_id!r} does not exist: Unleash lets nobody in here")
            return None
        key, body = found
        if body is not None:
            conditions.append({"segment": key})
    return conditions


def _arms_to_rules(arms: list[Arm]) -> tuple[list[dict[str, Any]], Any]:
    rules: list[dict[str, Any]] = []
    for conditions, serve in arms:
        if not conditions:
            return rules, serve  # everyone left gets this: later arms are unreachable
        rules.append({"when": conditions, "serve": serve})
    return rules, DISABLED
