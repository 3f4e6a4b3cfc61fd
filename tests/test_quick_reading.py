"""The quick reading of a document accepts nothing the reading with problems refuses.

``parse_document`` first tries ``read_quickly``, which keeps no paths and
no problems; when it doubts, ``read_whole`` reads the document again and
reports. So the quick reading must never accept a document the whole
reading refuses, and what it accepts must be the same document. These
tests break valid documents at random places, in the ways that a checker
might miss (True for 1, a tuple for a list, 1.0 for 1, a field too many or
too few, a text one character too long, a name that is not there), and
compare both readings; and they check that the quick reading does answer the
usual shapes, so that it is not quietly doubting everything.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.strategies import documents
from unveil.core.codec import (
    MAX_DESCRIPTION,
    MAX_ITEM_BYTES,
    MAX_TEXT,
    parse_document,
    read_quickly,
    read_whole,
)
from unveil.core.errors import InvalidDocument

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    1.0,
    -1,
    100,
    100.5,
    50.0001,
    float("nan"),
    float("inf"),
    10**30,
    "",
    "x" * (MAX_TEXT + 1),
    "d" * (MAX_DESCRIPTION + 1),
    [],
    {},
    ("a", "b"),
    ["a", "a"],
    [1, 2],
    "on",
    "off",
    "a",
    "NL",
    "eq",
    "in",
    "exists",
    "matches",
    "semver_gt",
    "2.3.0",
    "not-a-version",
    "[",
    "key",
    "a/b",
    ".",
    "flag-0",
    "flag-1",
    "s1",
    "s2",
    "boolean",
    "json",
    "murmur3",
    {"rollout": {"on": 50, "off": 50}},
    {"rollout": {"on": True, "off": 99}},
    {"segment": "s1"},
    {"attr": "country", "op": "in", "values": ["NL"]},
    {"attr": "country", "op": "in", "values": ["NL"], "not": 1},
    {"sample": 10},
]
ODD_KEYS = ["not", "values", "op", "attr", "segment", "sample", "weights", "by", "salt", "x", 1]


def _places(value: Any, out: list[tuple[Any, Any]]) -> None:
    if isinstance(value, dict):
        for key in list(value):
            out.append((value, key))
            _places(value[key], out)
    elif isinstance(value, list):
        for index in range(len(value)):
            out.append((value, index))
            _places(value[index], out)


@st.composite
def broken_documents(draw: st.DrawFn) -> dict[str, Any]:
    """A valid document with one to three things changed at random places."""
    doc = copy.deepcopy(draw(documents()))
    for _ in range(draw(st.integers(1, 3))):
        places: list[tuple[Any, Any]] = []
        _places(doc, places)
        container, key = places[draw(st.integers(0, len(places) - 1))]
        action = draw(st.sampled_from(["replace", "replace", "delete", "add", "tuple", "float"]))
        value = container[key]
        if action == "replace":
            container[key] = copy.deepcopy(draw(st.sampled_from(ODD_VALUES)))
        elif action == "delete":
            del container[key]
        elif action == "add" and isinstance(value, dict):
            value[draw(st.sampled_from(ODD_KEYS))] = copy.deepcopy(
                draw(st.sampled_from(ODD_VALUES))
            )
        elif action == "add" and isinstance(value, list):
            value.append(copy.deepcopy(draw(st.sampled_from([*ODD_VALUES, *value[:1]]))))
        elif action == "tuple" and isinstance(value, list):
            container[key] = tuple(value)
        elif action == "float" and type(value) is int:
            container[key] = float(value)
    return doc


def _whole(data: Any) -> Any:
    try:
        return read_whole(data)
    except InvalidDocument as exc:
        return exc


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=broken_documents())
def test_the_quick_reading_accepts_only_what_the_whole_reading_accepts(doc: dict[str, Any]) -> None:
    quick = read_quickly(doc)
    if quick is not None:
        assert _whole(doc) == quick


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents())
def test_valid_documents_read_the_same_both_ways(doc: dict[str, Any]) -> None:
    assert parse_document(doc) == read_whole(doc)


def _environment(size: int) -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "bench"))
    from scale import environment  # the mix of shapes bench/scale.py measures

    return json.loads(json.dumps(environment(size)))


def test_the_usual_shapes_are_read_quickly() -> None:
    data = _environment(300)
    quick = read_quickly(data)
    assert quick is not None
    assert quick == read_whole(data)


def test_an_unusual_entry_is_read_by_itself_and_the_rest_quickly() -> None:
    data = _environment(50)
    data["flags"]["flag-00001"] = {
        "kind": "json",
        "variants": {"a": {"x": [1, 2]}, "b": None},
        "off_variant": "b",
        "rules": [{"when": [{"sample": 12.5, "by": "org"}], "serve": "a"}],
        "default": {"weights": {"a": 1, "b": 3}},
    }
    quick = read_quickly(data)
    assert quick is not None
    assert quick == read_whole(data)
    assert quick.flags["flag-00001"].variants["a"] == {"x": [1, 2]}


def _heavy_flag(extra: int) -> dict[str, Any]:
    """A flag that weighs MAX_ITEM_BYTES plus ``extra``: 8,192 targeted keys of 56 characters."""
    keys = [f"{i:056d}" for i in range(8192)]
    assert MAX_ITEM_BYTES == 8192 * (8 + 56)
    keys[0] += "x" * extra
    return {"targets": {"on": keys}, "default": "off"}


@pytest.mark.parametrize("extra", [0, 1])
def test_the_weight_limit_is_the_same_both_ways(extra: int) -> None:
    data = {"flags": {"heavy": _heavy_flag(extra)}}
    if extra == 0:
        assert read_quickly(data) == read_whole(data)
    else:
        assert read_quickly(data) is None
        with pytest.raises(InvalidDocument, match="more than the limit of 524288"):
            parse_document(data)


@pytest.mark.parametrize(
    "flag",
    [
        {"default": "off", "enabled": 1},
        {"default": {"rollout": {"on": True, "off": 99}}},
        {
            "default": "off",
            "rules": [
                {"when": [{"attr": "a", "op": "eq", "values": ["x"], "not": 0}], "serve": "on"}
            ],
        },
        {
            "default": "off",
            "rules": [{"when": [{"attr": "a", "op": "eq", "values": "x"}], "serve": "on"}],
        },
        {
            "default": "off",
            "rules": [
                {"when": [{"attr": "a", "op": "semver_gt", "values": ["2.x"]}], "serve": "on"}
            ],
        },
        {
            "default": "off",
            "rules": [{"when": [{"attr": "a", "op": "exists", "values": ["x"]}], "serve": "on"}],
        },
        {"default": "off", "rules": [{"when": [{"segment": "nowhere"}], "serve": "on"}]},
        {"default": "off", "prerequisites": [{"flag": "other", "variants": ["maybe"]}]},
        {"default": "off", "targets": {"on": ["u1"], "off": ["u1"]}},
        {"default": "off", "bucketing": "md5"},
    ],
)
def test_a_problem_anywhere_is_reported_as_before(flag: dict[str, Any]) -> None:
    data = {"flags": {"f": flag, "other": {"default": "off"}}}
    assert read_quickly(data) is None
    with pytest.raises(InvalidDocument) as caught:
        parse_document(data)
    assert caught.value.problems == _whole(data).problems
