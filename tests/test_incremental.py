"""A patch applied incrementally answers and refuses exactly as a whole reload would.

``Ruleset.patched`` validates only what a patch touches and recompiles only
the flags whose answers it can move (unveil.core.incremental); the client
falls back to reading the whole document when that check finds anything.
These properties hold it to the whole-document reading: on random valid
environments and random patches (new, changed and removed flags and
segments, broken bodies, unknown names, wrong variants, cycles) the patched
ruleset is the one a reload makes, gives the same answers, and a refusal
names the same problems.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.strategies import CONTEXTS, documents
from unveil.core import InvalidDocument, Ruleset, parse_document
from unveil.core.incremental import whole_patched
from unveil.core.patch import apply_patch
from unveil.sdk.client import Client

BROKEN_FLAGS: list[Any] = [
    {"kind": "nope", "default": "off"},
    {"default": "missing-variant"},
    {"default": "off", "prerequisites": [{"flag": "flag-0", "variants": ["no-such-variant"]}]},
    {"default": "off", "prerequisites": [{"flag": "flag-404", "variants": ["on"]}]},
    {"default": "off", "rules": [{"when": [{"segment": "s404"}], "serve": "on"}]},
    {"default": "off", "prerequisites": [{"flag": "flag-1", "variants": ["on", "off"]}]},
    {"default": "off", "prerequisites": [{"flag": "flag-2", "variants": ["on", "off"]}]},
    {"default": "off", "prerequisites": [{"flag": "flag-0", "variants": ["on", "off"]}]},
    "not a flag",
]
BROKEN_SEGMENTS: list[Any] = [
    {"include": "not-a-list"},
    {"rules": [{"when": [{"segment": "s1"}]}]},
    {"rules": [{"when": [{"segment": "s2"}]}]},
    {"rules": [{"when": [{"segment": "s3"}]}]},
    {"rules": [{"when": [{"segment": "s404"}]}]},
]
FLAG_KEYS = ["flag-0", "flag-1", "flag-2", "flag-3", "flag-7", "bad key"]
SEGMENT_KEYS = ["s1", "s2", "s3", "s9"]


@st.composite
def patches(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    """Changes drawn from another random environment, removals and broken bodies."""
    other = draw(documents())
    pool_flags = list(other["flags"].values()) + list(base["flags"].values())
    pool_segments = list(other["segments"].values()) + list(base["segments"].values())
    flags: dict[str, Any] = {}
    for key in draw(st.lists(st.sampled_from(FLAG_KEYS), unique=True, max_size=3)):
        flags[key] = draw(
            st.one_of(
                st.none(),
                st.sampled_from(pool_flags),
                st.sampled_from(BROKEN_FLAGS),
            )
        )
    segments: dict[str, Any] = {}
    for key in draw(st.lists(st.sampled_from(SEGMENT_KEYS), unique=True, max_size=2)):
        choices = [st.none(), st.sampled_from(BROKEN_SEGMENTS)]
        if pool_segments:
            choices.append(st.sampled_from(pool_segments))
        segments[key] = draw(st.one_of(*choices))
    return {"version": 2, "previous": 1, "flags": flags, "segments": segments}


def _whole(base: dict[str, Any], patch: dict[str, Any]) -> tuple[Ruleset | None, Any]:
    try:
        return Ruleset.from_data(apply_patch(base, 1, patch)), None
    except InvalidDocument as exc:
        return None, exc.problems


def _answers(ruleset: Ruleset, contexts: list[dict[str, Any]]) -> list[Any]:
    return [ruleset.evaluate(key, ctx) for key in ruleset.flag_keys() for ctx in contexts]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.lists(CONTEXTS, min_size=1, max_size=4))
def test_a_patch_accepted_incrementally_is_the_whole_reload(
    data: st.DataObject, contexts: list[dict[str, Any]]
) -> None:
    base = data.draw(documents())
    patch = data.draw(patches(base))
    before = Ruleset.from_data(base)
    _answers(before, contexts)  # compiled now, so the patched ruleset keeps compiled flags
    whole, problems = _whole(base, patch)
    patched = before.patched(patch)
    if patched is None:
        return  # the caller reads the whole document: the same answer by construction
    assert whole is not None, f"accepted incrementally, refused whole: {problems}"
    assert patched.document == whole.document
    assert list(patched.document.flags) == list(whole.document.flags)
    assert list(patched.document.segments) == list(whole.document.segments)
    assert _answers(patched, contexts) == _answers(whole, contexts)
    again = patched.patched({"version": 3, "previous": 2, "flags": {}, "segments": {}})
    assert again is not None
    assert _answers(again, contexts) == _answers(whole, contexts)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.lists(CONTEXTS, min_size=1, max_size=3))
def test_the_client_takes_and_refuses_patches_as_a_whole_reload_would(
    data: st.DataObject, contexts: list[dict[str, Any]]
) -> None:
    base = data.draw(documents())
    patch = data.draw(patches(base))
    client = Client(events=False)
    client._install(base, origin="server", revision=1)
    for key in client.ruleset.flag_keys():
        client.ruleset.evaluate(key, contexts[0])
    whole, problems = _whole(base, patch)
    if whole is None:
        with pytest.raises(InvalidDocument) as refused:
            client._patch(patch, origin="server", revision=2)
        assert refused.value.problems == problems
        assert client.revision == 1
        assert client.ruleset.document == parse_document(base)
        return
    client._patch(patch, origin="server", revision=2)
    assert client.revision == 2
    assert client.ruleset.document == whole.document
    assert _answers(client.ruleset, contexts) == _answers(whole, contexts)


def test_a_changed_segment_recompiles_the_flags_that_use_it_and_what_needs_them() -> None:
    base = {
        "segments": {"beta": {"include": ["ann"]}},
        "flags": {
            "uses": {"rules": [{"when": [{"segment": "beta"}], "serve": "on"}], "default": "off"},
            "needs": {"prerequisites": [{"flag": "uses", "variants": ["on"]}], "default": "on"},
            "other": {"default": "on"},
        },
    }
    before = Ruleset.from_data(base)
    assert before.value("needs", {"key": "ann"}) is True
    assert before.value("other", {"key": "bob"}) is True
    patch = {"version": 2, "previous": 1, "flags": {}, "segments": {"beta": {"include": ["bob"]}}}
    after = before.patched(patch)
    assert after is not None
    assert after.value("uses", {"key": "ann"}) is False
    assert after.value("needs", {"key": "ann"}) is False
    assert after.value("needs", {"key": "bob"}) is True
    assert before.value("needs", {"key": "ann"}) is True  # the old ruleset answers as it did
    assert after._entries["other"] is before._entries["other"]  # untouched: kept compiled


def test_a_flag_is_compiled_on_its_first_evaluation() -> None:
    ruleset = Ruleset.from_data({"flags": {f"f{i}": {"default": "on"} for i in range(100)}})
    assert ruleset._entries == {}
    assert ruleset.value("f7", {"key": "k"}) is True
    assert set(ruleset._entries) == {"f7"}
    assert "f8" in ruleset
    assert ruleset.value("nope", {}, "d") == "d"


BASE = {
    "segments": {"s1": {"include": ["a"]}, "s2": {"rules": [{"when": [{"segment": "s1"}]}]}},
    "flags": {
        "p": {
            "kind": "string",
            "variants": {"x": "x", "y": "y"},
            "off_variant": "x",
            "default": "y",
        },
        "q": {"prerequisites": [{"flag": "p", "variants": ["y"]}], "default": "on"},
        "r": {"rules": [{"when": [{"segment": "s2"}], "serve": "on"}], "default": "off"},
    },
}
ONLY_X = {"kind": "string", "variants": {"x": "x"}, "off_variant": "x", "default": "x"}


@pytest.mark.parametrize(
    ("flags", "segments"),
    [
        ({"p": ONLY_X}, {}),  # q needs a variant p no longer has
        ({"p": None}, {}),  # q needs a flag that is gone
        ({"p": {**ONLY_X, "prerequisites": [{"flag": "q", "variants": ["on"]}]}}, {}),  # cycle
        ({}, {"s1": None}),  # s2 names a segment that is gone
        ({}, {"s2": None}),  # r names a segment that is gone
        ({}, {"s1": {"rules": [{"when": [{"segment": "s2"}]}]}}),  # segment cycle
    ],
)
def test_refusals_that_hang_on_what_the_patch_did_not_touch(
    flags: dict[str, Any], segments: dict[str, Any]
) -> None:
    patch = {"version": 2, "previous": 1, "flags": flags, "segments": segments}
    assert Ruleset.from_data(BASE).patched(patch) is None
    whole, problems = _whole(BASE, patch)
    assert whole is None
    assert problems
    client = Client(events=False)
    client._install(BASE, origin="server", revision=1)
    with pytest.raises(InvalidDocument) as refused:
        client._patch(patch, origin="server", revision=2)
    assert refused.value.problems == problems


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_the_whole_reading_of_a_patch_is_a_reload_without_reading_the_rest(
    data: st.DataObject,
) -> None:
    """What a writer does when the incremental check doubts (a server, holding the write
    lock): only the patch's entries are read, and yet it accepts what a reload accepts and
    refuses with the same problems, in the same order."""
    base = data.draw(documents())
    patch = data.draw(patches(base))
    whole, problems = _whole(base, patch)
    document = parse_document(base)
    if whole is None:
        with pytest.raises(InvalidDocument) as refused:
            whole_patched(document, patch)
        assert refused.value.problems == problems
        return
    patched = whole_patched(document, patch)
    assert patched == whole.document
    assert list(patched.flags) == list(whole.document.flags)
    assert list(patched.segments) == list(whole.document.segments)


@pytest.mark.parametrize(
    ("flags", "segments"),
    [
        ({"p": ONLY_X}, {}),
        ({"p": None}, {}),
        ({"p": {**ONLY_X, "prerequisites": [{"flag": "q", "variants": ["on"]}]}}, {}),
        ({}, {"s1": None}),
        ({}, {"s2": None}),
        ({}, {"s1": {"rules": [{"when": [{"segment": "s2"}]}]}}),
        ({"q": "not a flag"}, {"s2": {"rules": "no"}}),
    ],
)
def test_the_whole_reading_of_a_patch_names_what_hangs_on_the_rest(
    flags: dict[str, Any], segments: dict[str, Any]
) -> None:
    patch = {"version": 2, "previous": 1, "flags": flags, "segments": segments}
    whole, problems = _whole(BASE, patch)
    assert whole is None
    assert problems
    with pytest.raises(InvalidDocument) as refused:
        whole_patched(parse_document(BASE), patch)
    assert refused.value.problems == problems
