"""Compiled flags hold no document of their own, and share their segment checks.

A long-running client compiles the flags it uses and keeps them across
patches that do not touch them. Each compiled flag must therefore hold only
what its answers depend on: were it to hold the document it was compiled
against, every patch would leave one more old document alive. And flags
that check one segment share one check of it, so ten thousand compiled
flags stay small (docs/performance.md, "Scale").
"""

from __future__ import annotations

import gc
from typing import Any

from unveil.core import Ruleset, parse_document
from unveil.core.compiler import segment_check
from unveil.core.model import Segment


def _environment() -> dict[str, Any]:
    flags: dict[str, Any] = {
        f"uses-{name}-{i}": {
            "rules": [{"when": [{"segment": name}], "serve": "on"}],
            "default": "off",
        }
        for name in ("beta", "staff")
        for i in range(3)
    }
    flags["plain"] = {"targets": {"on": ["a", "b", "c"]}, "default": "off"}
    segments = {
        "beta": {"include": ["user-1"], "rules": [{"when": [{"segment": "staff"}]}]},
        "staff": {"rules": [{"when": [{"attr": "email", "op": "ends_with", "values": ["@x"]}]}]},
    }
    return {"flags": flags, "segments": segments}


def test_one_check_per_segment_for_every_flag_of_the_same_segments() -> None:
    doc = parse_document(_environment())
    assert segment_check(doc, "beta") is segment_check(doc, "beta")
    assert segment_check(doc, "beta") is not segment_check(doc, "staff")
    # another document holding the very same segment objects shares the check
    again = parse_document(_environment())
    same = type(doc)(flags=again.flags, segments=doc.segments, version=2)
    assert segment_check(same, "beta") is segment_check(doc, "beta")
    # a document whose nested segment differs does not, though "beta" itself reads alike
    changed = _environment()
    changed["segments"]["staff"]["rules"][0]["when"][0]["values"] = ["@y"]
    other = parse_document(changed)
    assert segment_check(other, "beta") is not segment_check(doc, "beta")
    check = segment_check(other, "beta")
    assert check({"key": "k", "email": "me@y"}) is True
    assert check({"key": "k", "email": "me@x"}) is False


def _live_segments(key: str) -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, Segment) and o.key == key)


def test_patches_leave_no_older_segments_alive_in_the_flags_kept_compiled() -> None:
    ruleset = Ruleset.from_data(_environment())
    contexts = [{"key": "user-1"}, {"key": "k", "email": "me@x"}, {"key": "k", "number": 1}]
    for key in ruleset.flag_keys():  # every flag compiled, fallbacks used too
        for context in contexts:
            ruleset.evaluate(key, context)
    baseline = _live_segments("staff")
    for version in range(2, 40):
        staff = {
            "rules": [{"when": [{"attr": "email", "op": "ends_with", "values": [f"@{version}"]}]}]
        }
        patch = {
            "version": version,
            "previous": version - 1,
            "flags": {},
            "segments": {"staff": staff},
        }
        patched = ruleset.patched(patch)
        assert patched is not None
        ruleset = patched
        for key in ruleset.flag_keys():
            ruleset.evaluate(key, {"key": "k", "email": f"me@{version}"})
    assert ruleset.evaluate("uses-beta-0", {"key": "k", "email": "me@39"}).variant == "on"
    assert ruleset.evaluate("uses-beta-0", {"key": "k", "email": "me@x"}).variant == "off"
    assert _live_segments("staff") <= baseline
