"""Writers that race, and versions that must never repeat."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from tests.server_process import Server, access_service
from unveil.service.errors import PreconditionRequired
from unveil.service.meta import MetaService
from unveil.store.unit import Store

FLAGS = "/api/v1/projects/shop/environments/production/flags"
FLAG = {"description": "x", "default": "off"}


def _at_once(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` in ``count`` threads released together; results or exceptions."""
    start = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = work(i)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_a_stale_if_match_from_before_a_delete_never_matches_the_new_flag(server: Server) -> None:
    with server.client() as api:
        first = api.put(f"{FLAGS}/f", json=FLAG)
        old_etag = first.headers["etag"]
        assert api.delete(f"{FLAGS}/f", headers={"If-Match": old_etag}).status_code == 204
        again = api.put(f"{FLAGS}/f", json={**FLAG, "description": "new"})
        assert again.status_code == 201
        assert again.headers["etag"] != old_etag
        stale = api.put(
            f"{FLAGS}/f", json={**FLAG, "enabled": False}, headers={"If-Match": old_etag}
        )
        assert stale.status_code == 412
        assert api.get(f"{FLAGS}/f").json()["data"]["enabled"] is True


def test_a_flag_version_is_the_environment_version_of_its_last_change(server: Server) -> None:
    with server.client() as api:
        api.put(f"{FLAGS}/a", json=FLAG)
        written = api.put(f"{FLAGS}/b", json=FLAG)
        body = written.json()
        assert body["version"] == body["environment_version"] == 2
        audit = api.get(FLAGS.replace("/flags", "/audit"), params={"target": "b"}).json()
        assert audit["entries"][0]["environment_version"] == body["version"]


def test_concurrent_creators_of_metadata_never_overwrite_each_other(engine: Engine) -> None:
    access_service(engine).ensure_environment("shop", "production")
    meta = MetaService(Store(engine))
    owners = [f"team-{i}" for i in range(8)]
    results = _at_once(8, lambda i: meta.put("shop", "f", {"owner": owners[i]}))
    made = [r for r in results if isinstance(r, dict)]
    assert len(made) == 1  # exactly one creator wins
    assert all(isinstance(r, PreconditionRequired) for r in results if r not in made)
    assert meta.get("shop", "f")["owner"] == made[0]["owner"]


def test_ensuring_an_environment_from_many_threads_at_once_just_works(engine: Engine) -> None:
    access = access_service(engine)
    results = _at_once(8, lambda _i: access.ensure_environment("new", "qa"))
    assert all(isinstance(r, int) for r in results), results
    assert len(set(results)) == 1


def test_token_names_are_unique_for_ever(server: Server) -> None:
    with server.client() as api:
        body = {"name": "deploy bot", "kind": "admin", "role": "viewer"}
        made = api.post("/api/v1/tokens", json=body)
        assert made.status_code == 201
        assert set(made.json()) == {"id", "name", "secret"}  # the id DELETE needs, at once
        assert api.post("/api/v1/tokens", json=body).status_code == 409
        tokens = api.get("/api/v1/tokens").json()["tokens"]
        token_id = next(k["id"] for k in tokens if k["name"] == "deploy bot")
        assert api.delete(f"/api/v1/tokens/{token_id}").status_code == 204
        again = api.post("/api/v1/tokens", json=body)
        assert again.status_code == 409  # a revoked name still names the old token in the audit
        assert "never reused" in again.json()["error"]


def test_writing_a_flag_as_it_is_changes_nothing(server: Server) -> None:
    with server.client() as api:
        made = api.put(f"{FLAGS}/same", json=FLAG)
        audit = FLAGS.replace("/flags", "/audit")
        entries = len(api.get(audit).json()["entries"])
        again = api.put(f"{FLAGS}/same", json=FLAG, headers={"If-Match": made.headers["etag"]})
        assert again.status_code == 200
        assert again.headers["etag"] == made.headers["etag"]  # nobody's ETag goes stale
        assert len(api.get(audit).json()["entries"]) == entries  # and no empty audit entry
        stale = api.put(f"{FLAGS}/same", json=FLAG, headers={"If-Match": '"999"'})
        assert stale.status_code == 412  # a stale If-Match is still refused, change or not


def test_a_reading_sees_one_snapshot_whatever_commits_meanwhile(engine: Engine) -> None:
    """Several statements of one reading belong together (REPEATABLE READ on PostgreSQL).

    Under PostgreSQL's default each statement saw the latest commit: the stale
    check read a flag's age before a write and its history after it, and
    announced a flag stale for half its reasons.
    """
    store = Store(engine)
    access_service(engine).ensure_environment("shop", "production")
    with store.reading() as r:
        environment_id = r.environments.id_of("shop", "production")
        assert environment_id is not None
        before = r.environments.version(environment_id)
        with store.unit_of_work() as work:  # another transaction commits in between
            work.environments.bump(environment_id)
        assert r.environments.version(environment_id) == before
    with store.reading() as r:
        assert r.environments.version(environment_id) == (before or 0) + 1
