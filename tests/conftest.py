"""Shared helpers for the tests."""

from __future__ import annotations

from typing import Any

import pytest

from unveil.core import Ruleset


def ruleset(flags: dict[str, Any], segments: dict[str, Any] | None = None) -> Ruleset:
    """A ruleset from the flags (and segments) part of a document."""
    data: dict[str, Any] = {"version": 1, "flags": flags}
    if segments:
        data["segments"] = segments
    return Ruleset.from_data(data)


@pytest.fixture
def make_ruleset() -> Any:
    return ruleset
