"""Semantic versions (semver.org 2.0) parsed into comparable keys.

Lenient where people are: ``v1.2``, ``1`` and ``1.2.3`` all parse, missing
parts count as 0. Build metadata is ignored, as the specification says.
"""

from __future__ import annotations

import re

__all__ = ["SemverKey", "parse_semver"]

_SEMVER = re.compile(
    r"v?(0|[1-9]\d*)(?:\.(0|[1-9]\d*))?(?:\.(0|[1-9]\d*))?"
    r"(?:-((?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)(?:\.(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*))*))?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)

# A release sorts after all of its pre-releases: (1,) > (0, ...).
_RELEASE: tuple[tuple[int, int, str], ...] = ((1, 0, ""),)

SemverKey = tuple[int, int, int, tuple[tuple[int, int, str], ...]]


def _prerelease_key(text: str | None) -> tuple[tuple[int, int, str], ...]:
    if text is None:
        return _RELEASE
    # numeric identifiers sort before alphanumeric ones, numerically
    parts = [
        (0, int(ident), "") if ident.isdigit() else (0, 1 << 62, ident) for ident in text.split(".")
    ]
    # a pre-release sorts before the release: mark it with a leading 0
    return ((0, 0, ""), *parts)


def parse_semver(text: object) -> SemverKey | None:
    """Return a key that orders versions as semver does, or None if not a version."""
    if not isinstance(text, str) or len(text) > 256:
        return None
    m = _SEMVER.fullmatch(text.strip())
    if m is None:
        return None
    major, minor, patch, pre = m.groups()
    return (int(major), int(minor or 0), int(patch or 0), _prerelease_key(pre))
