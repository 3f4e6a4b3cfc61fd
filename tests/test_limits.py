"""The limits of a flags document: beyond them a document is refused with the path
named, never crashed on; within them nothing recurses on what the document holds.

The limits are docs/flags-file.md's "Limits" section; each test here names the
one it proves.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.server_process import EventStream, Server, sdk_key
from unveil.core import InvalidDocument, Ruleset, codec, parse_document
from unveil.core.compiler import compile_flags
from unveil.core.model import Document, Flag, FlagKind, Prerequisite

DOCUMENT = "/api/v1/projects/shop/environments/production/document"
FLAGS = "/api/v1/projects/shop/environments/production/flags"


def _chain(length: int) -> dict[str, Any]:
    """Flags f0 needs f1 needs ... f<length>: ``length`` links of prerequisites."""
    flags: dict[str, Any] = {}
    for i in range(length + 1):
        flag: dict[str, Any] = {"default": "on"}
        if i < length:
            flag["prerequisites"] = [{"flag": f"f{i + 1}", "variants": ["on"]}]
        flags[f"f{i}"] = flag
    return {"version": 1, "flags": flags}


def _segment_chain(length: int) -> dict[str, Any]:
    segments: dict[str, Any] = {}
    for i in range(length + 1):
        body: dict[str, Any] = {"include": ["user-1"]}
        if i < length:
            body["rules"] = [{"when": [{"segment": f"s{i + 1}"}]}]
        segments[f"s{i}"] = body
    flags = {"f": {"rules": [{"when": [{"segment": "s0"}], "serve": "on"}], "default": "off"}}
    return {"version": 1, "segments": segments, "flags": flags}


def _problems(data: object) -> list[str]:
    with pytest.raises(InvalidDocument) as caught:
        parse_document(data)
    return [str(p) for p in caught.value.problems]


# -- chains: prerequisites and segments --------------------------------------------------


def test_a_990_long_prerequisite_chain_is_refused_at_its_start() -> None:
    problems = _problems(_chain(990))
    assert problems == [
        "flags.f0.prerequisites: a chain of 990 prerequisites (f0 -> f1 -> f2 -> f3 -> f4 -> ...),"
        f" more than the limit of {codec.MAX_PREREQUISITE_DEPTH}"
    ]


def test_a_chain_at_the_limit_is_accepted_and_evaluates() -> None:
    rules = Ruleset.from_data(_chain(codec.MAX_PREREQUISITE_DEPTH))
    result = rules.evaluate("f0", {"key": "u"})
    assert (result.value, result.error_code) == (True, None)


def test_a_long_segment_chain_is_refused() -> None:
    problems = _problems(_segment_chain(500))
    assert problems == [
        "segments.s0.rules: a chain of 500 segments (s0 -> s1 -> s2 -> s3 -> s4 -> ...),"
        f" more than the limit of {codec.MAX_SEGMENT_DEPTH}"
    ]
    assert Ruleset.from_data(_segment_chain(codec.MAX_SEGMENT_DEPTH)).value("f", {"key": "user-1"})


def test_a_cycle_longer_than_the_recursion_limit_is_found_not_crashed_on() -> None:
    length = sys.getrecursionlimit() * 3
    data = _chain(length)
    data["flags"][f"f{length}"]["prerequisites"] = [{"flag": "f0", "variants": ["on"]}]
    problems = _problems(data)
    assert len(problems) == 1
    assert problems[0].startswith("flags.f0.prerequisites: prerequisite cycle: f0 -> f1 -> ")


def test_compiling_a_document_built_around_the_codec_does_not_recurse() -> None:
    """The compiler orders prerequisites with its own stack, whatever built the document."""
    length = sys.getrecursionlimit() * 3
    flags = {
        f"f{i}": Flag(
            key=f"f{i}",
            kind=FlagKind.BOOLEAN,
            variants=MappingProxyType({"on": True, "off": False}),
            off_variant="off",
            default="on",
            prerequisites=(Prerequisite(f"f{i + 1}", ("on",)),) if i < length else (),
        )
        for i in range(length + 1)
    }
    document = Document(flags=MappingProxyType(flags), segments=MappingProxyType({}), version=1)
    compiled = compile_flags(document)
    assert len(compiled) == length + 1
    # deeper than Python's stack: evaluation answers (the chain fails), it does not raise
    answer = compiled["f0"]({"key": "u"})
    assert (answer.key, answer.variant) == ("f0", "off")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=3000))
def test_any_chain_is_accepted_within_the_limit_and_refused_beyond(length: int) -> None:
    data = _chain(length)
    if length <= codec.MAX_PREREQUISITE_DEPTH:
        assert Ruleset.from_data(data).evaluate("f0", {"key": "u"}).value is True
    else:
        problems = _problems(data)
        assert len(problems) == 1
        assert problems[0].startswith(f"flags.f0.prerequisites: a chain of {length} ")


# -- nesting ---------------------------------------------------------------------------------


def _nested(depth: int, kind: str) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=5000), st.sampled_from(["list", "dict"]))
def test_json_variants_nested_beyond_the_limit_are_refused(depth: int, kind: str) -> None:
    data = {
        "flags": {
            "j": {
                "kind": "json",
                "variants": {"a": {"v": _nested(depth, kind)}},
                "off_variant": "a",
                "default": "a",
            }
        }
    }
    if depth + 1 <= codec.MAX_JSON_DEPTH:
        assert Ruleset.from_data(data).value("j", {}) == {"v": _nested(depth, kind)}
    else:
        problems = _problems(data)
        assert len(problems) == 1
        assert f"nested more than {codec.MAX_JSON_DEPTH} levels deep" in problems[0]
        assert problems[0].startswith("flags.j.variants.a.v")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=2, max_value=5000), st.sampled_from(["when", "values", "rules"]))
def test_deep_nesting_anywhere_in_a_flag_is_refused_not_crashed(depth: int, where: str) -> None:
    flag: dict[str, Any] = {"default": "off"}
    deep = _nested(depth, "list")
    if where == "when":
        flag["rules"] = [{"when": deep, "serve": "on"}]
    elif where == "values":
        flag["rules"] = [{"when": [{"attr": "a", "op": "in", "values": deep}], "serve": "on"}]
    else:
        flag["rules"] = deep
    with pytest.raises(InvalidDocument):
        parse_document({"flags": {"f": flag}})


# -- counts and lengths ----------------------------------------------------------------------


def _flag_with(**fields: Any) -> dict[str, Any]:
    return {"flags": {"f": {"default": "off", **fields}}}


def _rule(conditions: int = 1, values: int = 1) -> dict[str, Any]:
    clause = {"attr": "a", "op": "in", "values": [f"v{i}" for i in range(values)]}
    return {"when": [clause] * conditions, "serve": "on"}


@pytest.mark.parametrize(
    ("data", "path", "message"),
    [
        (
            {"flags": {f"f{i}": {"default": "off"} for i in range(codec.MAX_FLAGS + 1)}},
            "flags",
            f"has {codec.MAX_FLAGS + 1} flags, more than the limit of {codec.MAX_FLAGS}",
        ),
        (
            {"segments": {f"s{i}": {} for i in range(codec.MAX_SEGMENTS + 1)}},
            "segments",
            f"has {codec.MAX_SEGMENTS + 1} segments, more than the limit of {codec.MAX_SEGMENTS}",
        ),
        (
            _flag_with(rules=[_rule()] * (codec.MAX_RULES + 1)),
            "flags.f.rules",
            f"has {codec.MAX_RULES + 1} rules, more than the limit of {codec.MAX_RULES}",
        ),
        (
            _flag_with(rules=[_rule(conditions=codec.MAX_CONDITIONS + 1)]),
            "flags.f.rules[0].when",
            f"has {codec.MAX_CONDITIONS + 1} conditions, more than the limit of "
            f"{codec.MAX_CONDITIONS}",
        ),
        (
            _flag_with(rules=[_rule(values=codec.MAX_VALUES + 1)]),
            "flags.f.rules[0].when[0].values",
            f"has {codec.MAX_VALUES + 1} values, more than the limit of {codec.MAX_VALUES}",
        ),
        (
            {
                "flags": {
                    "f": {
                        "kind": "string",
                        "variants": {f"v{i}": "x" for i in range(codec.MAX_VARIANTS + 1)},
                        "off_variant": "v0",
                        "default": "v0",
                    }
                }
            },
            "flags.f.variants",
            f"has {codec.MAX_VARIANTS + 1} variants, more than the limit of {codec.MAX_VARIANTS}",
        ),
        (
            _flag_with(
                prerequisites=[{"flag": "g", "variants": ["on"]}] * (codec.MAX_PREREQUISITES + 1)
            ),
            "flags.f.prerequisites",
            f"has {codec.MAX_PREREQUISITES + 1} prerequisites, more than the limit of "
            f"{codec.MAX_PREREQUISITES}",
        ),
        (
            _flag_with(targets={"on": [f"u{i}" for i in range(codec.MAX_KEYS + 1)]}),
            "flags.f.targets.on",
            f"has {codec.MAX_KEYS + 1} keys, more than the limit of {codec.MAX_KEYS}",
        ),
        (
            _flag_with(description="d" * (codec.MAX_DESCRIPTION + 1)),
            "flags.f.description",
            f"is {codec.MAX_DESCRIPTION + 1} characters long, more than the limit of "
            f"{codec.MAX_DESCRIPTION}",
        ),
        (
            _flag_with(salt="s" * (codec.MAX_TEXT + 1)),
            "flags.f.salt",
            f"is {codec.MAX_TEXT + 1} characters long, more than the limit of {codec.MAX_TEXT}",
        ),
        (
            _flag_with(
                rules=[
                    {
                        "when": [{"attr": "a", "op": "eq", "values": ["x" * (codec.MAX_TEXT + 1)]}],
                        "serve": "on",
                    }
                ]
            ),
            "flags.f.rules[0].when[0].values[0]",
            f"is longer than the limit of {codec.MAX_TEXT} characters",
        ),
        (
            {"segments": {"s": {"include": ["k" * (codec.MAX_TEXT + 1)]}}},
            "segments.s.include[0]",
            f"is longer than the limit of {codec.MAX_TEXT} characters",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and v.count(".") < 4 else None,
)
def test_each_limit_is_refused_with_its_path(data: object, path: str, message: str) -> None:
    assert f"{path}: {message}" in _problems(
        {"version": 1, "flags": {"g": {"default": "on"}}} | data
    )  # type: ignore[operator]


def test_a_flag_heavier_than_the_limit_is_refused_naming_it() -> None:
    values = [f"user-{i:06d}-" + "x" * 40 for i in range(9_000)]  # about 500 KiB of values
    rules = [_rule()] * 2
    rules[0] = {"when": [{"attr": "a", "op": "in", "values": values}], "serve": "on"}
    rules[1] = {"when": [{"attr": "b", "op": "in", "values": values[:2000]}], "serve": "on"}
    problems = _problems(_flag_with(rules=rules))
    assert len(problems) == 1
    assert problems[0].startswith("flags.f: the flag weighs ")
    assert problems[0].endswith(f" bytes, more than the limit of {codec.MAX_ITEM_BYTES}")


@pytest.mark.parametrize("key", [".", "..", "a/b", "/a", "a\\b", "a?b", "a#b", "100%"])
def test_keys_that_urls_cannot_carry_are_refused_for_flags_and_segments(key: str) -> None:
    problems = _problems({"flags": {key: {"default": "off"}}, "segments": {key: {}}})
    assert any(p.startswith("flags") and "flag key" in p for p in problems), problems
    assert any(p.startswith("segments") and "segment key" in p for p in problems), problems


def test_keys_from_other_systems_stay_accepted() -> None:
    keys = ["new-checkout", "a.b", "...", "ümlaut", "team:flag", "flag_1~x"]
    document = parse_document({"flags": {k: {"default": "off"} for k in keys}})
    assert list(document.flags) == keys


# -- on a real server --------------------------------------------------------------------------


def test_a_990_chain_is_refused_and_the_environment_keeps_propagating(
    server: Server, tmp_path: Path
) -> None:
    stream = EventStream(server, sdk_key(server.database_url))
    try:
        name, _first = stream.next_event()
        assert name == "snapshot"
        with server.client() as api:
            refused = api.put(DOCUMENT, json=_chain(990))
            assert refused.status_code == 422, refused.text
            paths = [p["path"] for p in refused.json()["problems"]]
            assert paths == ["flags.f0.prerequisites"]
            assert api.get(FLAGS).json()["flags"] == []  # nothing of it was written

            killed = api.put(f"{FLAGS}/kill-me", json={"enabled": False, "default": "on"})
            assert killed.status_code == 201
        name, patch = stream.next_event()
        assert name == "patch"
        assert json.dumps(patch["flags"]["kill-me"]["enabled"]) == "false"  # type: ignore[index]
    finally:
        stream.close()
    with server.client(sdk_key(server.database_url)) as sdk:
        snapshot = sdk.get("/sdk/v1/snapshot")
        assert snapshot.status_code == 200
        assert "kill-me" in snapshot.json()["flags"]
        assert sdk.post("/ofrep/v1/evaluate/flags", json={"context": {}}).status_code == 200
