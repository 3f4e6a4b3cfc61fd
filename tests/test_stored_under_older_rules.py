"""An environment whose stored flags no longer validate can be put right through the API.

Rules tighten between versions (keys that URLs cannot carry, chain limits):
flags stored under older rules then fail to read. The server says so, names
the problem, and a whole-document apply replaces them, so nobody needs SQL.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.server_process import ADMIN_TOKEN, database, sdk_key, start_server, stop
from unveil.store.database import make_engine
from unveil.store.unit import Store

ENV = "/api/v1/projects/shop/environments/production"


def _plant(url: str, key: str, data: dict[str, object]) -> None:
    """A flag row written as an older server would have, past today's checks."""
    engine = make_engine(url)
    try:
        with Store(engine).unit_of_work() as work:
            environment_id = work.environments.id_of("shop", "production")
            assert environment_id is not None
            version = work.environments.bump(environment_id)
            work.flags.put(environment_id, key, data, version, False)
    finally:
        engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_flags_stored_under_older_rules_are_named_and_replaced_by_an_apply(
    kind: str, tmp_path: Path
) -> None:
    with database(kind, tmp_path) as url:
        running = start_server(url)
        stop(running)  # the schema and the environment are made; now an older server's row
        _plant(url, "team/x", {"default": "on"})
        running = start_server(url, running.port, False)
        try:
            with httpx.Client(
                base_url=running.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
            ) as api:
                stuck = api.get(f"{ENV}/document")
                assert stuck.status_code == 422
                assert "team/x" in stuck.text
                assert "no longer validate" in stuck.json()["error"]
                # a change of one flag says the same: the environment must be put right first
                one = api.put(f"{ENV}/flags/other", json={"default": "on"})
                assert one.status_code == 422
                assert "apply a corrected document" in one.json()["error"]
                fixed = api.put(f"{ENV}/document", json={"flags": {"team-x": {"default": "on"}}})
                assert fixed.status_code == 200, fixed.text
                assert fixed.json()["diff"]["removed"]["flags"] == ["team/x"]
                assert api.get(f"{ENV}/document").json()["flags"].keys() == {"team-x"}
                with httpx.Client(base_url=running.url) as sdk:
                    key = sdk_key(url)
                    served = sdk.get("/sdk/v1/snapshot", headers={"Authorization": f"Bearer {key}"})
                assert served.status_code == 200
                assert list(served.json()["flags"]) == ["team-x"]
        finally:
            stop(running)
