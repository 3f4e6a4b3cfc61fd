"""A launch is one mark on the environment's timeline (issue 17), not a mark per flag."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server_process import Server, database, start_server, stop, wait_for

SHOP = "/api/v1/projects/shop"
PRODUCTION = f"{SHOP}/environments/production"
FLAGS = ("gift-cards", "gift-wrap", "gift-notes")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with database("sqlite", tmp_path) as url:
        made = start_server(url)
        try:
            yield made
        finally:
            stop(made)


def test_a_launch_is_one_mark_on_the_timeline(server: Server) -> None:
    with server.client() as api:
        for key in FLAGS:
            flag = {"enabled": False, "default": "on"}
            assert api.put(f"{PRODUCTION}/flags/{key}", json=flag).status_code == 201
        made = api.post(
            f"{SHOP}/launches",
            json={
                "name": "Gift cards",
                "notes": "Gift cards are here.",
                "changes": [
                    {"environment": "production", "flag": k, "enabled": True} for k in FLAGS
                ],
            },
        )
        assert made.status_code == 201, made.text
        launch = made.json()["id"]
        started = api.post(f"{SHOP}/launches/{launch}/start")
        assert started.status_code == 200, started.text
        assert wait_for(
            lambda: all(api.get(f"{PRODUCTION}/flags/{k}").json()["data"]["enabled"] for k in FLAGS)
        )
        marks = api.get(f"{PRODUCTION}/timeline").json()["marks"]
    launches = [m for m in marks if m["kind"] == "launch"]
    assert [m["action"] for m in launches][:1] == ["launch.started"]
    assert launches[0]["summary"] == "launch Gift cards started: gift-cards, gift-notes, gift-wrap"
    # the three flag changes the launch made are in its mark, not marks of their own
    assert not [m for m in marks if m["actor"] == f"launch:{launch}"]
    created = [m for m in marks if m["action"] == "flag.create"]
    assert len(created) == 3  # the flags' own creation is still there
