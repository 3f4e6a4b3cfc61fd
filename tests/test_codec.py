"""Reading flags documents: defaults, and every problem reported with its path."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from unveil.core import (
    Document,
    FlagKind,
    InvalidDocument,
    Rollout,
    document_to_data,
    parse_document,
)


def problems(data: Any) -> list[str]:
    with pytest.raises(InvalidDocument) as info:
        parse_document(data)
    return [str(p) for p in info.value.problems]


DEEP: Any = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]


def one_flag(**body: Any) -> dict[str, Any]:
    return {"version": 1, "flags": {"f": body}}


def test_boolean_flag_defaults() -> None:
    doc = parse_document(one_flag(default="on"))
    flag = doc.flags["f"]
    assert flag.kind is FlagKind.BOOLEAN
    assert dict(flag.variants) == {"on": True, "off": False}
    assert (flag.off_variant, flag.enabled, flag.default) == ("off", True, "on")
    assert flag.bucket_salt == "f"


def test_empty_document_is_valid() -> None:
    assert parse_document({}) == Document()
    assert parse_document({"version": 1, "flags": {}, "segments": {}}) == Document()


def test_rollout_weights_in_thousandths_follow_variant_order() -> None:
    doc = parse_document(
        one_flag(
            kind="string",
            variants={"a": "A", "b": "B", "c": "C"},
            off_variant="a",
            default={"rollout": {"c": 0.001, "a": 33.333, "b": 66.666}},
        )
    )
    assert doc.flags["f"].default == Rollout((("a", 33_333), ("b", 66_666), ("c", 1)), "key")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            one_flag(
                default="on",
                rules=[{"when": [{"attr": "x", "op": "equal", "values": [1]}], "serve": "on"}],
            ),
            "flags.f.rules[0].when[0].op: unknown operator 'equal'",
        ),
        (one_flag(default="maybe"), "flags.f.default: unknown variant 'maybe'"),
        (
            one_flag(default={"rollout": {"on": 50, "off": 49.5}}),
            "flags.f.default.rollout: percentages add up to 99.5, not 100",
        ),
        (
            one_flag(default={"rollout": {"on": 50.0001, "off": 49.9999}}),
            "flags.f.default.rollout.on: 50.0001 has more than three decimals",
        ),
        (
            one_flag(default={"rollout": {"on": 150, "off": -50}}),
            "flags.f.default.rollout.on: a percentage must be a number from 0 to 100",
        ),
        (
            one_flag(default={"rollout": {"on": True, "off": 0}}),
            "flags.f.default.rollout.on: a percentage must be a number",
        ),
        (
            one_flag(default={"rollout": {"maybe": 100}}),
            "flags.f.default.rollout.maybe: unknown field 'maybe'",
        ),
        (one_flag(default={"rollout": {}}), "flags.f.default.rollout: needs at least one variant"),
        (one_flag(default={"roll": {}}), "flags.f.default.roll: unknown field 'roll'"),
        (one_flag(default=3), "flags.f.default: must be a variant name or {rollout: ...}"),
        (one_flag(), "flags.f: needs 'default'"),
        (one_flag(kind="string", default="a"), "flags.f: a string flag needs 'variants'"),
        (one_flag(kind="bool", default="on"), "flags.f.kind: unknown kind 'bool'"),
        (
            one_flag(kind="string", variants={"a": 1}, off_variant="a", default="a"),
            "flags.f.variants.a: a string flag's variant must be a string, not a number",
        ),
        (
            one_flag(variants={"on": "yes", "off": False}, default="on"),
            "flags.f.variants.on: a boolean flag's variant must be true or false",
        ),
        (
            one_flag(kind="number", variants={"a": True}, off_variant="a", default="a"),
            "flags.f.variants.a: a number flag's variant must be a number, not a boolean",
        ),
        (
            one_flag(kind="number", variants={"a": float("nan")}, off_variant="a", default="a"),
            "flags.f.variants.a: a number flag's variant must be a number",
        ),
        (
            one_flag(
                kind="json", variants={"a": {"x": float("inf")}}, off_variant="a", default="a"
            ),
            "flags.f.variants.a.x: cannot be inf (numbers must be finite)",
        ),
        (one_flag(kind="string", variants={"a": "A"}, default="a"), "flags.f: needs 'off_variant'"),
        (one_flag(off_variant="nope", default="on"), "flags.f.off_variant: unknown variant 'nope'"),
        (one_flag(enabled="yes", default="on"), "flags.f.enabled: must be true or false"),
        (one_flag(colour="red", default="on"), "flags.f.colour: unknown field 'colour'"),
        (
            one_flag(targets={"on": ["a"], "off": ["a"]}, default="on"),
            "flags.f.targets.off[0]: 'a' is already targeted to variant 'on'",
        ),
        (
            one_flag(targets={"maybe": ["a"]}, default="on"),
            "flags.f.targets.maybe: unknown field 'maybe'",
        ),
        (
            one_flag(rules=[{"when": [], "serve": "on"}], default="on"),
            "flags.f.rules[0].when: needs at least one condition",
        ),
        (
            one_flag(rules=[{"when": [{"attr": "x", "op": "eq"}], "serve": "on"}], default="on"),
            "flags.f.rules[0].when[0]: operator 'eq' needs 'values'",
        ),
        (
            one_flag(
                rules=[{"when": [{"attr": "x", "op": "eq", "values": [1, 2]}], "serve": "on"}],
                default="on",
            ),
            "flags.f.rules[0].when[0].values: operator 'eq' takes exactly one value, got 2",
        ),
        (
            one_flag(
                rules=[{"when": [{"attr": "x", "op": "exists", "values": [1]}], "serve": "on"}],
                default="on",
            ),
            "flags.f.rules[0].when[0].values: operator 'exists' takes no values",
        ),
        (
            one_flag(
                rules=[{"when": [{"attr": "x", "op": "lt", "values": ["5"]}], "serve": "on"}],
                default="on",
            ),
            "flags.f.rules[0].when[0].values[0]: must be a number, not str",
        ),
        (
            one_flag(
                rules=[{"when": [{"attr": "x", "op": "matches", "values": ["(a"]}], "serve": "on"}],
                default="on",
            ),
            "flags.f.rules[0].when[0].values[0]: invalid regular expression '(a'",
        ),
        (
            one_flag(
                rules=[
                    {"when": [{"attr": "x", "op": "matches", "values": ["(a)\\1"]}], "serve": "on"}
                ],
                default="on",
            ),
            "flags.f.rules[0].when[0].values[0]: invalid regular expression",
        ),
        (
            one_flag(
                rules=[
                    {"when": [{"attr": "x", "op": "semver_lt", "values": ["one"]}], "serve": "on"}
                ],
                default="on",
            ),
            "flags.f.rules[0].when[0].values[0]: 'one' is not a semantic version",
        ),
        (
            one_flag(
                rules=[
                    {
                        "when": [{"attr": "x", "op": "before", "values": ["2026-01-01T00:00:00"]}],
                        "serve": "on",
                    }
                ],
                default="on",
            ),
            "is not an RFC 3339 timestamp with offset",
        ),
        (
            one_flag(
                rules=[{"when": [{"attr": "x", "op": "in", "values": [[1]]}], "serve": "on"}],
                default="on",
            ),
            "flags.f.rules[0].when[0].values[0]: must be a string, number or boolean, not a list",
        ),
        (
            one_flag(rules=[{"when": [{"segment": "nope"}], "serve": "on"}], default="on"),
            "flags.f.rules[0].when[0].segment: unknown segment 'nope'",
        ),
        (
            one_flag(
                rules=[
                    {
                        "when": [{"attr": "x", "op": "eq", "values": [1], "not": "yes"}],
                        "serve": "on",
                    }
                ],
                default="on",
            ),
            "flags.f.rules[0].when[0].not: must be true or false",
        ),
        (
            one_flag(rules=[{"serve": "on"}], default="on"),
            "flags.f.rules[0]: a rule needs 'when' and 'serve'",
        ),
        (
            one_flag(prerequisites=[{"flag": "f", "variants": ["on"]}], default="on"),
            "flags.f.prerequisites[0].flag: a flag cannot be its own prerequisite",
        ),
        (
            one_flag(prerequisites=[{"flag": "g", "variants": ["on"]}], default="on"),
            "flags.f.prerequisites[0].flag: unknown flag 'g'",
        ),
        (
            one_flag(prerequisites=[{"flag": "g", "variants": []}], default="on"),
            "flags.f.prerequisites[0].variants: needs at least one variant",
        ),
        (
            one_flag(bucketing="md5", default="on"),
            "flags.f.bucketing: unknown bucketing scheme 'md5'",
        ),
        (  # not a name at all: refused the same way (it raised TypeError: unhashable)
            one_flag(bucketing={}, default="on"),
            "flags.f.bucketing: unknown bucketing scheme {}",
        ),
        (
            one_flag(bucketing=["murmur3"], default="on"),
            "flags.f.bucketing: unknown bucketing scheme ['murmur3']",
        ),
        ({"flags": {"bad key!": {"default": "on"}}}, "flags[\"bad key!\"]: flag key 'bad key!'"),
        ({"flags": []}, "flags: must be a mapping of flag key to flag, not a list"),
        ({"flags": {}, "version": 2}, "version: unsupported version 2"),
        ({"flags": {}, "extra": 1}, "extra: unknown field 'extra'"),
        ([], "must be a mapping, not a list"),
        ({"segments": {"s": {"include": "a"}}}, "segments.s.include: must be a list, not a string"),
        (
            {"segments": {"s": {"rules": [{"when": [{"segment": "s"}]}]}}},
            "segments.s: segment cycle: s -> s",
        ),
        (
            {"flags": {"f": {1: "x", "default": "on"}}},
            "flags.f: field names must be strings, not a number 1",
        ),
        (
            one_flag(description=5, default="on"),
            "flags.f.description: must be a string, not a number",
        ),
        (
            one_flag(rules=[{"when": [{"attr": "", "op": "exists"}], "serve": "on"}], default="on"),
            "flags.f.rules[0].when[0].attr: attr must be a non-empty string",
        ),
        (
            one_flag(rules=[{"when": [{"values": [1]}], "serve": "on"}], default="on"),
            "flags.f.rules[0].when[0]: a clause needs 'attr' (or 'segment', or 'sample')",
        ),
        (
            one_flag(rules=[{"when": [{"attr": "x"}], "serve": "on"}], default="on"),
            "flags.f.rules[0].when[0]: a clause needs 'op'",
        ),
        (
            one_flag(rules=[{"when": "x", "serve": "on"}], default="on"),
            "flags.f.rules[0].when: must be a list, not a string",
        ),
        (one_flag(rules={"a": 1}, default="on"), "flags.f.rules: must be a list, not a mapping"),
        (one_flag(rules=[None], default="on"), "flags.f.rules[0]: must be a mapping, not null"),
        (
            one_flag(targets={"on": [5, ""]}, default="on"),
            "flags.f.targets.on[0]: must be a string, not a number",
        ),
        (one_flag(targets={"on": [""]}, default="on"), "flags.f.targets.on[0]: must not be empty"),
        (one_flag(targets=[], default="on"), "flags.f.targets: must be a mapping, not a list"),
        (
            one_flag(kind="json", variants={"a": {1: 2}}, off_variant="a", default="a"),
            "flags.f.variants.a: JSON object keys must be strings",
        ),
        (
            one_flag(kind="json", variants={"a": {"x": object()}}, off_variant="a", default="a"),
            "flags.f.variants.a.x: is not a JSON value (object)",
        ),
        (
            one_flag(kind="json", variants={"a": DEEP}, off_variant="a", default="a"),
            "nested more than 32 levels deep",
        ),
        (
            one_flag(kind="string", variants=["a"], default="a"),
            "flags.f.variants: must be a mapping of variant name to value, not a list",
        ),
        (
            one_flag(kind="string", variants={}, default="a"),
            "flags.f.variants: needs at least one variant",
        ),
        (
            one_flag(prerequisites={"flag": "g"}, default="on"),
            "flags.f.prerequisites: must be a list, not a mapping",
        ),
        (
            one_flag(prerequisites=[{"flag": "g"}], default="on"),
            "flags.f.prerequisites[0]: a prerequisite needs 'flag' and 'variants'",
        ),
        (
            one_flag(prerequisites=[5], default="on"),
            "flags.f.prerequisites[0]: must be a mapping, not a number",
        ),
        ({"segments": {"s": {"rules": [{}]}}}, "segments.s.rules[0]: a segment rule needs 'when'"),
        ({"segments": {"s": {"rules": [5]}}}, "segments.s.rules[0]: must be a mapping"),
        ({"segments": {"s": []}}, "segments.s: must be a mapping, not a list"),
        ({"segments": {"s": {"description": 1}}}, "segments.s.description: must be a string"),
        ({"segments": 3}, "segments: must be a mapping of segment key to segment, not a number"),
    ],
)
def test_bad_document_names_path_and_problem(data: Any, expected: str) -> None:
    found = problems(data)
    assert any(expected in p for p in found), found


def test_every_problem_is_reported_not_just_the_first() -> None:
    found = problems(
        {
            "flags": {
                "a": {"kind": "strin", "default": "x"},
                "b": {
                    "default": {"rollout": {"on": 50, "off": 40}},
                    "prerequisites": [{"flag": "c", "variants": ["on"]}],
                },
                "c": {"default": "on", "prerequisites": [{"flag": "b", "variants": ["on"]}]},
                "d": {"default": "on", "prerequisites": [{"flag": "c", "variants": ["blue"]}]},
            }
        }
    )
    assert "flags.a.kind: unknown kind 'strin' (known: boolean, string, number, json)" in found
    assert "flags.b.default.rollout: percentages add up to 90, not 100" in found
    assert "flags.b.prerequisites: prerequisite cycle: b -> c -> b" in found
    assert "flags.d.prerequisites[0].variants[0]: flag 'c' has no variant 'blue'" in found


def test_bucketing_may_be_named_explicitly() -> None:
    doc = parse_document(one_flag(bucketing="murmur3", default="on"))
    assert doc.flags["f"].bucketing == "murmur3"


def test_longer_prerequisite_cycle() -> None:
    found = problems(
        {
            "flags": {
                k: {"default": "on", "prerequisites": [{"flag": n, "variants": ["on"]}]}
                for k, n in (("a", "b"), ("b", "c"), ("c", "a"))
            }
        }
    )
    assert "flags.a.prerequisites: prerequisite cycle: a -> b -> c -> a" in found


def test_dotted_keys_are_quoted_in_paths() -> None:
    found = problems({"flags": {"F1.beta": {"default": "nope"}}})
    assert found == ["flags[\"F1.beta\"].default: unknown variant 'nope' (variants: on, off)"]


def test_canonical_form_spells_everything_out() -> None:
    data = document_to_data(parse_document(one_flag(default={"rollout": {"off": 75, "on": 25}})))
    assert data == {
        "version": 1,
        "flags": {
            "f": {
                "kind": "boolean",
                "enabled": True,
                "variants": {"on": True, "off": False},
                "off_variant": "off",
                "default": {"rollout": {"on": 25, "off": 75}},
            }
        },
    }


def test_canonical_form_round_trips_every_field() -> None:
    data = {
        "version": 1,
        "segments": {
            "s": {
                "description": "d",
                "include": ["a"],
                "exclude": ["b"],
                "rules": [{"when": [{"attr": "x", "op": "exists"}]}],
            }
        },
        "flags": {
            "g": {
                "kind": "boolean",
                "enabled": False,
                "variants": {"on": True, "off": False},
                "off_variant": "off",
                "default": "on",
            },
            "f": {
                "description": "desc",
                "kind": "json",
                "enabled": True,
                "variants": {"a": {"k": [1, 2.5, None]}, "b": "text"},
                "off_variant": "b",
                "targets": {"a": ["u1"]},
                "prerequisites": [{"flag": "g", "variants": ["on", "off"]}],
                "rules": [
                    {
                        "when": [
                            {"segment": "s", "not": True},
                            {"attr": "v", "op": "semver_gt", "values": ["1.0.0"]},
                        ],
                        "serve": {"rollout": {"a": 12.5, "b": 87.5}, "by": "org", "salt": "x"},
                    }
                ],
                "default": "b",
                "salt": "pepper",
            },
        },
    }
    assert document_to_data(parse_document(data)) == data


@pytest.mark.parametrize(
    ("flag", "path"),
    [
        (
            {"kind": "number", "variants": {"a": float("inf"), "off": 0}, "default": "a"},
            "variants.a",
        ),
        (
            {
                "default": "off",
                "rules": [
                    {"when": [{"attr": "n", "op": "gt", "values": [float("-inf")]}], "serve": "on"}
                ],
            },
            "rules[0].when[0].values[0]",
        ),
        (
            {
                "default": "off",
                "rules": [
                    {"when": [{"attr": "n", "op": "in", "values": [float("inf")]}], "serve": "on"}
                ],
            },
            "rules[0].when[0].values[0]",
        ),
    ],
)
def test_a_number_too_large_for_json_says_so(flag: dict[str, Any], path: str) -> None:
    """1e400 in a JSON body reads as infinity: "must be a number, not a number" told nobody why."""
    with pytest.raises(InvalidDocument) as refused:
        parse_document({"flags": {"f": flag}})
    (problem,) = refused.value.problems
    assert problem.path == f"flags.f.{path}"
    assert "inf (numbers must be finite)" in problem.message


HUGE = 10**400  # valid JSON; a double (how most SDKs and OFREP clients read JSON) cannot hold it


@pytest.mark.parametrize(
    ("flag", "path"),
    [
        ({"kind": "number", "variants": {"a": HUGE, "off": 0}, "default": "a"}, "variants.a"),
        ({"kind": "number", "variants": {"a": -HUGE, "off": 0}, "default": "a"}, "variants.a"),
        (
            {"kind": "json", "variants": {"a": {"x": [HUGE]}, "off": {}}, "default": "a"},
            "variants.a.x[0]",
        ),
        (
            {
                "default": "off",
                "rules": [{"when": [{"attr": "n", "op": "gt", "values": [HUGE]}], "serve": "on"}],
            },
            "rules[0].when[0].values[0]",
        ),
        (
            {
                "default": "off",
                "rules": [{"when": [{"attr": "n", "op": "in", "values": [HUGE]}], "serve": "on"}],
            },
            "rules[0].when[0].values[0]",
        ),
    ],
)
def test_an_integer_no_double_holds_is_refused_as_infinity_is(
    flag: dict[str, Any], path: str
) -> None:
    """1e400 was refused but the same number written out in digits was stored, and every
    reader that reads numbers as doubles would have got infinity."""
    with pytest.raises(InvalidDocument) as refused:
        parse_document({"flags": {"f": flag}})
    (problem,) = refused.value.problems
    assert problem.path == f"flags.f.{path}"
    assert "numbers must be within ±1.8e308" in problem.message


def test_the_largest_integer_a_double_holds_is_a_number() -> None:
    largest = int(sys.float_info.max)
    flag = {"kind": "number", "variants": {"a": largest, "off": -largest}, "default": "a"}
    parsed = parse_document({"flags": {"f": flag}})
    assert parsed.flags["f"].variants == {"a": largest, "off": -largest}
