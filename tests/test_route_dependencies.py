"""No route pays a thread hop it does not need: FastAPI runs a dependency that is a plain
``def`` in its thread pool, one hand-off (and a wait for a free worker) per request. Work
that blocks is handed over by the route itself, with ``run_in_threadpool``, where it
happens; the dependencies every request passes through stay coroutines."""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from unveil.server.app import create_app
from unveil.server.auth import Role
from unveil.server.guard import LARGE_BODIES, large_body_role
from unveil.store.database import make_engine, upgrade


def _api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):  # an included router keeps its own routes
            yield from _api_routes(route.original_router.routes)


def _calls(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def _is_coroutine(call: Any) -> bool:
    target = call if inspect.isroutine(call) else type(call).__call__  # an instance: its method
    return asyncio.iscoroutinefunction(target) or inspect.isasyncgenfunction(target)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Any]:
    url = f"sqlite:///{tmp_path / 'u.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        yield create_app(engine)
    finally:
        engine.dispose()


def test_every_dependency_of_every_route_is_a_coroutine(app: Any) -> None:
    blocking: set[str] = set()
    routes = list(_api_routes(app.routes))
    assert len(routes) > 50  # the walk saw the API
    for route in routes:
        for call in _calls(route.dependant):
            if not _is_coroutine(call):
                blocking.add(f"{getattr(call, '__qualname__', call)} (in {route.path})")
    assert not blocking, sorted(blocking)


def test_the_guard_refuses_large_bodies_by_the_roles_their_routes_ask_for(app: Any) -> None:
    """The guard answers 403 before reading a whole document or a deploy from a caller
    without the role; it must ask for exactly the role the route itself asks for."""
    checked = 0
    for route in _api_routes(app.routes):
        for method in route.methods:
            sample = re.sub(r"\{[^}]+\}", "x", route.path)
            needed = large_body_role(method, sample)
            roles = {call.needed for call in _calls(route.dependant) if isinstance(call, Role)}
            if needed is not None:
                assert roles == {needed}, (method, route.path)
                checked += 1
    assert checked == len(LARGE_BODIES)
