"""Patches: diff then apply gives the new document; gaps are refused."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from unveil.core.patch import PatchGap, apply_patch, diff_documents

SECTION = st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.integers(0, 3), max_size=4)


@given(old_flags=SECTION, new_flags=SECTION, old_segments=SECTION, new_segments=SECTION)
def test_apply_of_diff_is_the_new_document(
    old_flags: dict[str, Any],
    new_flags: dict[str, Any],
    old_segments: dict[str, Any],
    new_segments: dict[str, Any],
) -> None:
    old = {"version": 1, "flags": old_flags, "segments": old_segments}
    new = {"version": 1, "flags": new_flags, "segments": new_segments}
    patch = diff_documents(old, new, 4, 5)
    assert apply_patch(old, 4, patch) == new
    # a patch names only what changed
    assert set(patch["flags"]) == {
        k for k in old_flags.keys() | new_flags.keys() if old_flags.get(k) != new_flags.get(k)
    }


def test_a_patch_for_another_version_is_a_gap() -> None:
    patch = diff_documents({}, {"flags": {"a": 1}}, 4, 5)
    with pytest.raises(PatchGap):
        apply_patch({}, 3, patch)
