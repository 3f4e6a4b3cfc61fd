"""Patches between two versions of a flags document, for live updates.

The server sends an SDK the whole document once, then only what changed:
``{"version": 8, "previous": 7, "flags": {"a": {...}, "b": null},
"segments": {}}``, where ``null`` means removed. A client applies a patch
only to the version it names as ``previous``; anything else is a gap and the
client fetches the whole document again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["PatchGap", "apply_patch", "diff_documents"]

_SECTIONS = ("flags", "segments")


class PatchGap(Exception):
    """The patch does not follow the document's version: refetch instead."""


def _section(document: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    part = document.get(name)
    return part if isinstance(part, Mapping) else {}


def diff_documents(
    old: Mapping[str, Any], new: Mapping[str, Any], previous: int, version: int
) -> dict[str, Any]:
    """The patch that turns ``old`` (at ``previous``) into ``new`` (at ``version``)."""
    patch: dict[str, Any] = {"version": version, "previous": previous}
    for name in _SECTIONS:
        before, after = _section(old, name), _section(new, name)
        changed: dict[str, Any] = {k: v for k, v in after.items() if before.get(k) != v}
        changed.update((k, None) for k in before if k not in after)
        patch[name] = changed
    return patch


def apply_patch(
    document: Mapping[str, Any], version: int, patch: Mapping[str, Any]
) -> dict[str, Any]:
    """The document after the patch; raises ``PatchGap`` if it follows another version."""
    if patch.get("previous") != version:
        raise PatchGap(f"the patch follows version {patch.get('previous')}, not {version}")
    out: dict[str, Any] = {k: v for k, v in document.items() if k not in _SECTIONS}
    for name in _SECTIONS:
        merged = dict(_section(document, name))
        for key, value in _section(patch, name).items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        out[name] = merged
    return out
