"""Shared helpers for the tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server_process import Server, database, migrated_engine, start_server, stop
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


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """A running server process on a fresh database of each kind."""
    with database(request.param, tmp_path) as url:
        running = start_server(url)
        try:
            yield running
        finally:
            stop(running)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """An engine on a fresh, migrated database of each kind (no server)."""
    with migrated_engine(request.param, tmp_path) as made:
        yield made
