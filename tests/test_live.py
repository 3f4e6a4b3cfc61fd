"""Live delivery: streams, many nodes on one PostgreSQL, leadership, events."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from tests.server_process import (
    EventStream,
    Server,
    postgres_database,
    sdk_key,
    start_server,
    stop,
    wait_for,
)
from unveil.core.patch import apply_patch

FLAGS = "/api/v1/projects/shop/environments/production/flags"
FLAG = {"default": "off"}


def test_a_stream_gets_the_snapshot_then_patches_in_order(server: Server) -> None:
    stream = EventStream(server, sdk_key(server.database_url))
    try:
        name, snapshot = stream.next_event()
        assert name == "snapshot"
        assert snapshot["flags"] == {}
        start = snapshot["revision"]
        with server.client() as api:
            api.put(f"{FLAGS}/a", json=FLAG)
            api.put(f"{FLAGS}/a", json={"default": "on"}, headers={"If-Match": '"1"'})
            api.delete(f"{FLAGS}/a", headers={"If-Match": '"2"'})
        version, document = start, dict(snapshot)
        seen: dict[str, Any] = {}
        while version < start + 3:  # patches may be coalesced, never lost or reordered
            name, patch = stream.next_event()
            assert name == "patch"
            document = apply_patch(document, version, patch)  # refuses a gap
            version = patch["version"]  # type: ignore[assignment]
            seen.update(patch["flags"])  # type: ignore[arg-type]
        assert seen == {"a": None}
        assert document["flags"] == {}
    finally:
        stream.close()


def test_heartbeats_keep_an_idle_stream_alive(server: Server) -> None:
    with (
        httpx.Client(base_url=server.url, timeout=10) as client,
        client.stream(
            "GET",
            "/sdk/v1/stream",
            headers={"Authorization": f"Bearer {sdk_key(server.database_url)}"},
        ) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        heartbeats = 0
        for line in lines:
            heartbeats += line == ": heartbeat"
            if heartbeats == 2:
                break
        assert heartbeats == 2


def test_a_change_through_one_node_reaches_a_stream_on_another(tmp_path: Path) -> None:
    with postgres_database() as url:
        node_a = start_server(url)
        node_b = start_server(url, seed=False)
        stream = EventStream(node_b, sdk_key(url))
        try:
            assert stream.next_event()[0] == "snapshot"
            written = time.monotonic()
            with node_a.client() as api:
                assert api.put(f"{FLAGS}/cross-node", json=FLAG).status_code == 201
            name, patch = stream.next_event()
            elapsed = time.monotonic() - written
            assert name == "patch"
            assert "cross-node" in patch["flags"]  # type: ignore[operator]
            assert elapsed < 5  # NOTIFY, not the periodic check, carried it
            # and node B's own snapshot endpoint already has it
            with node_b.client(sdk_key(url)) as sdk:
                assert "cross-node" in sdk.get("/sdk/v1/snapshot").json()["flags"]
        finally:
            stream.close()
            stop(node_a)
            stop(node_b)


def _leading(server: Server) -> bool:
    with server.client() as api:
        return bool(api.get("/api/v1/cluster").json()["leading"])


def test_the_worker_lock_moves_when_its_node_dies(tmp_path: Path) -> None:
    with postgres_database() as url:
        nodes = [start_server(url), start_server(url, seed=False)]
        try:
            assert wait_for(lambda: sum(_leading(n) for n in nodes) == 1)
            assert sum(_leading(n) for n in nodes) == 1  # exactly one, not two
            leader = next(n for n in nodes if _leading(n))
            other = next(n for n in nodes if n is not leader)
            leader.kill()
            assert wait_for(lambda: _leading(other))
        finally:
            for node in nodes:
                stop(node)


def test_events_are_taken_at_once_and_counted_per_minute(server: Server) -> None:
    key = sdk_key(server.database_url)
    batch = {
        "events": [
            {"kind": "exposure", "flag": "checkout", "variant": "on"},
            {"kind": "exposure", "flag": "checkout", "variant": "on"},
            {"kind": "exposure", "flag": "checkout", "variant": "off"},
            {"kind": "metric", "metric": "latency", "value": 120, "variants": {"checkout": "on"}},
            {"kind": "metric", "metric": "latency", "value": 80, "variants": {"checkout": "on"}},
        ]
    }
    with server.client(key) as sdk:
        taken = sdk.post("/sdk/v1/events", json=batch)
        assert taken.status_code == 202
        bad = sdk.post(
            "/sdk/v1/events", json={"events": [{"kind": "metric", "metric": "x", "value": "fast"}]}
        )
        assert bad.status_code == 422
        assert bad.json()["problems"] == [
            {"path": "events[0].value", "message": "must be a finite number"}
        ]

    def counted() -> list[dict[str, Any]]:
        with server.client() as api:
            url = "/api/v1/projects/shop/environments/production/events"
            return list(api.get(url, params={"flag": "checkout"}).json()["counts"])

    assert wait_for(lambda: len(counted()) == 3)
    cells = {(c["variant"], c["metric"]): (c["count"], c["total"]) for c in counted()}
    assert cells == {
        ("on", "$exposure"): (2, 2.0),
        ("off", "$exposure"): (1, 1.0),
        ("on", "latency"): (2, 200.0),
    }


def test_a_full_intake_answers_429_with_retry_after(tmp_path: Path) -> None:
    from tests.server_process import access_service
    from unveil.server.app import create_app
    from unveil.store.database import make_engine, upgrade

    url = f"sqlite:///{tmp_path / 'u.db'}"
    upgrade(url)
    engine = make_engine(url)
    access = access_service(engine)
    key = access.create_token("k", "sdk", environment_id=access.ensure_environment("p", "e"))
    # no lifespan: the intake's thread never writes, so counts of one cell fill it
    client = TestClient(create_app(engine, events_memory=500))
    headers = {"Authorization": f"Bearer {key}"}
    batch = {"events": [{"kind": "exposure", "flag": "f", "variant": "on"}]}
    assert client.post("/sdk/v1/events", json=batch, headers=headers).status_code == 202
    # more of the same cell costs nothing more; a new cell does not fit
    assert client.post("/sdk/v1/events", json=batch, headers=headers).status_code == 202
    other = {"events": [{"kind": "exposure", "flag": "g", "variant": "on"}]}
    full = client.post("/sdk/v1/events", json=other, headers=headers)
    assert full.status_code == 429
    assert full.headers["retry-after"] == "1"


def test_metrics_are_served_for_prometheus(server: Server) -> None:
    with server.client() as api:
        api.put(f"{FLAGS}/m", json=FLAG)
    text = httpx.get(f"{server.url}/metrics").text
    assert 'unveil_http_requests_total{method="PUT",route="/api/v1/projects/{project}' in text
    assert "unveil_stream_clients 0.0" in text
    assert "unveil_events_pending_bytes" in text
