"""The server as a real process on loopback, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest

from tests.server_process import Server, database, sdk_key, start_server, stop

FLAGS = "/api/v1/projects/shop/environments/production/flags"
AUDIT = "/api/v1/projects/shop/environments/production/audit"
CHECKOUT = {"description": "New checkout", "default": "off"}


def _sdk_key(server: Server, env: str = "production") -> str:
    return sdk_key(server.database_url, env)


def test_a_flag_is_created_changed_with_if_match_and_audited(server: Server) -> None:
    with server.client() as api:
        created = api.put(f"{FLAGS}/new-checkout", json=CHECKOUT, params={"reason": "launch"})
        assert created.status_code == 201
        assert created.headers["etag"] == '"1"'
        assert created.json()["data"]["off_variant"] == "off"  # stored in canonical form

        changed = api.put(
            f"{FLAGS}/new-checkout",
            json={**CHECKOUT, "enabled": False},
            headers={"If-Match": '"1"'},
            params={"reason": "kill switch"},
        )
        assert changed.status_code == 200
        assert changed.headers["etag"] == '"2"'

        stale = api.put(f"{FLAGS}/new-checkout", json=CHECKOUT, headers={"If-Match": '"1"'})
        assert stale.status_code == 412
        missing = api.put(f"{FLAGS}/new-checkout", json=CHECKOUT)
        assert missing.status_code == 428

        got = api.get(f"{FLAGS}/new-checkout")
        assert got.headers["etag"] == '"2"'
        assert got.json()["data"]["enabled"] is False

        entries = api.get(AUDIT, params={"target": "new-checkout"}).json()["entries"]
        assert [(e["action"], e["reason"]) for e in entries] == [
            ("flag.create", "launch"),
            ("flag.update", "kill switch"),
        ]
        assert json.loads(entries[1]["before"])["enabled"] is True
        assert json.loads(entries[1]["after"])["enabled"] is False
        assert entries[1]["actor"] == "admin (UNVEIL_ADMIN_TOKEN)"


def test_an_invalid_flag_is_refused_with_paths_and_changes_nothing(server: Server) -> None:
    with server.client() as api:
        bad = api.put(
            f"{FLAGS}/f",
            json={
                "rules": [{"when": [{"attr": "x", "op": "equal", "values": [1]}], "serve": "on"}]
            },
        )
        assert bad.status_code == 422
        paths = [p["path"] for p in bad.json()["problems"]]
        assert "flags.f.rules[0].when[0].op" in paths
        assert "flags.f" in paths  # no default
        assert api.get(f"{FLAGS}/f").status_code == 404
        assert api.get(AUDIT).json()["entries"] == []


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (b"{not json", 400),
        (b"[1, 2]", 400),
        (b'"text"', 400),
        (b"x" * (1 << 20 + 1), 413),
    ],
)
def test_malformed_bodies_get_4xx_never_500(server: Server, content: bytes, status: int) -> None:
    with server.client() as api:
        response = api.put(
            f"{FLAGS}/f", content=content, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == status
        assert "error" in response.json()


def test_tokens_are_required_and_scoped(server: Server) -> None:
    sdk = _sdk_key(server)
    with httpx.Client(base_url=server.url) as anonymous:
        assert anonymous.get(FLAGS).status_code == 401
        assert anonymous.get(FLAGS, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert anonymous.get("/sdk/v1/snapshot").status_code == 401
    with server.client(sdk) as as_sdk:
        assert as_sdk.get(FLAGS).status_code == 403
        assert as_sdk.put(f"{FLAGS}/f", json=CHECKOUT).status_code == 403
    with server.client() as admin:
        assert admin.get("/sdk/v1/snapshot").status_code == 403


def test_snapshot_has_etag_304_and_follows_changes(server: Server) -> None:
    production, staging = _sdk_key(server), _sdk_key(server, "staging")
    with server.client() as api:
        api.put(f"{FLAGS}/new-checkout", json=CHECKOUT)
    with server.client(production) as sdk:
        first = sdk.get("/sdk/v1/snapshot")
        assert first.status_code == 200
        assert first.json()["flags"]["new-checkout"]["default"] == "off"
        assert first.json()["revision"] == 1
        tag = first.headers["etag"]
        assert sdk.get("/sdk/v1/snapshot", headers={"If-None-Match": tag}).status_code == 304
        with server.client() as api:
            api.put(
                f"{FLAGS}/new-checkout",
                json={**CHECKOUT, "default": "on"},
                headers={"If-Match": '"1"'},
            )
        second = sdk.get("/sdk/v1/snapshot", headers={"If-None-Match": tag})
        assert second.status_code == 200
        assert second.json()["revision"] == 2
    with server.client(staging) as other:
        # a key of another environment sees that environment only
        assert other.get("/sdk/v1/snapshot").json()["flags"] == {}


def test_twenty_concurrent_writers_lose_no_update(server: Server) -> None:
    with server.client() as api:
        api.put(
            f"{FLAGS}/contended",
            json={"kind": "number", "variants": {"n": 0}, "off_variant": "n", "default": "n"},
        )
    acknowledged: list[int] = []
    lock = threading.Lock()

    def writer(number: int) -> None:
        with server.client() as api:
            for attempt in range(5):
                current = api.get(f"{FLAGS}/contended")
                version = current.headers["etag"]
                body = current.json()["data"]
                body["variants"]["n"] = number * 100 + attempt + 1  # never 0: a real change
                put = api.put(
                    f"{FLAGS}/contended",
                    json=body,
                    headers={"If-Match": version},
                    params={"reason": f"w{number}-{attempt}"},
                )
                assert put.status_code in (200, 412), put.text
                if put.status_code == 200:
                    with lock:
                        acknowledged.append(number * 100 + attempt + 1)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert acknowledged  # some writes won
    with server.client() as api:
        final = api.get(f"{FLAGS}/contended")
        assert final.headers["etag"] == f'"{1 + len(acknowledged)}"'
        updates = [
            e
            for e in api.get(AUDIT, params={"target": "contended"}).json()["entries"]
            if e["action"] == "flag.update"
        ]
    written = [json.loads(e["after"])["variants"]["n"] for e in updates]
    assert sorted(written) == sorted(acknowledged)  # exactly the acknowledged writes
    assert final.json()["data"]["variants"]["n"] == written[-1]  # the last one stands


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_every_acknowledged_write_survives_kill_9(kind: str, tmp_path: Path) -> None:
    with database(kind, tmp_path) as url:
        running = start_server(url)
        acknowledged: list[str] = []
        stop_writing = threading.Event()
        started = threading.Event()

        def writer() -> None:
            with running.client() as api:
                for i in range(10_000):
                    if stop_writing.is_set():
                        return
                    try:
                        r = api.put(f"{FLAGS}/f{i}", json=CHECKOUT, params={"reason": f"r{i}"})
                    except httpx.TransportError:
                        return
                    if r.status_code == 201:
                        acknowledged.append(f"f{i}")
                        if len(acknowledged) == 20:
                            started.set()

        thread = threading.Thread(target=writer)
        thread.start()
        assert started.wait(60)
        running.kill()
        stop_writing.set()
        thread.join()
        restarted = start_server(url, seed=False)
        try:
            with restarted.client() as api:
                stored = {f["key"] for f in api.get(FLAGS).json()["flags"]}
                audited = {e["target"] for e in api.get(AUDIT).json()["entries"]}
        finally:
            stop(restarted)
        assert set(acknowledged) <= stored
        assert stored == audited  # nothing half written: every flag has its audit entry


def test_stored_flags_keep_their_variant_order(server: Server) -> None:
    # rollout ranges follow the order of the variants: storage must never reorder them
    flag = {
        "kind": "string",
        "variants": {"zulu": "z", "alpha": "a", "mike": "m"},
        "off_variant": "alpha",
        "default": {"rollout": {"zulu": 50, "alpha": 25, "mike": 25}},
    }
    with server.client() as api:
        api.put("/api/v1/projects/shop/environments/production/flags/order", json=flag)
        stored = api.get("/api/v1/projects/shop/environments/production/flags/order").json()
    assert list(stored["data"]["variants"]) == ["zulu", "alpha", "mike"]
    assert list(stored["data"]["default"]["rollout"]) == ["zulu", "alpha", "mike"]
