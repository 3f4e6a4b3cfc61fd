"""End to end: a real application process under two guarded releases on a real server.

The application (tests/release_app.py) uses the SDK over HTTP and serves
new users as fast as it is paced; its exposures, errors and latencies reach
the server's 10-second windows the way any application's do. One release
ships a treatment that errors three times as often as control: it must roll
back by itself during its first step. The other ships a healthy treatment
with short holds: it must complete every step. The audit log must show
every step with its explanation.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server_process import Server, database, sdk_key, start_server, stop, wait_for

ENV = "/api/v1/projects/shop/environments/production"
FLAG = {"variants": {"on": True, "off": False}, "default": "off"}
RATE = "600"  # requests per second of the application

BAD = {
    "flag": "checkout",
    "control": "off",
    "treatment": "on",
    "steps": [{"percent": 10, "hold": "10m"}, {"percent": 50, "hold": "10m"}, {"percent": 100}],
    "guards": [{"name": "errors", "kind": "rate", "metric": "checkout_errors"}],
}
HEALTHY = {
    "flag": "search",
    "control": "off",
    "treatment": "on",
    "steps": [{"percent": 10, "hold": "15s"}, {"percent": 50, "hold": "15s"}, {"percent": 100}],
    "guards": [
        {"name": "errors", "kind": "rate", "metric": "search_errors"},
        {"name": "latency", "kind": "continuous", "metric": "latency_ms"},
    ],
    "options": {"verification": "10s", "min_exposures": 50},
}


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Server]:
    with database("sqlite", tmp_path) as url:
        server = start_server(
            url,
            None,
            True,
            "--release-tick",
            "1",
            "--worker-interval",
            "0.2",
            "--metrics-lag",
            "4",
        )
        try:
            yield server
        finally:
            stop(server)


def _release(server: Server, release_id: str) -> dict[str, Any]:
    with server.client() as api:
        answer = api.get(f"{ENV}/releases/{release_id}")
        assert answer.status_code == 200, answer.text
        return dict(answer.json())


def test_a_bad_treatment_rolls_back_in_its_first_step_and_a_healthy_one_completes(
    running: Server,
) -> None:
    with running.client() as api:
        for flag in ("checkout", "search"):
            assert api.put(f"{ENV}/flags/{flag}", json=FLAG).status_code == 201
    app = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.release_app",
            running.url,
            sdk_key(running.database_url),
            RATE,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        with running.client() as api:
            bad = api.post(f"{ENV}/releases", json={"plan": BAD})
            assert bad.status_code == 201, bad.text
            good = api.post(f"{ENV}/releases", json={"plan": HEALTHY})
            assert good.status_code == 201, good.text
        bad_id, good_id = bad.json()["id"], good.json()["id"]
        assert wait_for(lambda: not _release(running, bad_id)["active"], timeout=240)
        assert wait_for(lambda: not _release(running, good_id)["active"], timeout=240)
    finally:
        app.terminate()
        _, errors = app.communicate(timeout=60)
    assert app.returncode == 0, errors.decode(errors="replace")[-2000:]

    rolled = _release(running, bad_id)
    assert rolled["phase"] == "rolled_back", rolled["state"]["history"]
    assert rolled["step"] == 0  # during the first step
    last = rolled["decisions"][-1]  # showing the release gives the judge's explanation
    assert (last["decision"], last["explanation"]["judge"]["fired"]) == (
        "rolled_back",
        "errors:rate",
    )
    healthy = _release(running, good_id)
    assert healthy["phase"] == "completed", healthy["state"]["history"]
    assert healthy["state"]["verified"] is True

    with running.client() as api:
        assert api.get(f"{ENV}/flags/checkout").json()["data"]["default"] == "off"
        assert api.get(f"{ENV}/flags/search").json()["data"]["default"] == "on"
        bad_audit = api.get(f"{ENV}/audit", params={"actor": f"release:{bad_id}"}).json()
        good_audit = api.get(f"{ENV}/audit", params={"actor": f"release:{good_id}"}).json()
    rollback = [e for e in bad_audit["entries"] if e["action"] == "release.rolled_back"]
    assert len(rollback) == 1
    explained = json.loads(rollback[0]["after"])
    assert explained["verdict"] == "fail"
    assert explained["judge"]["guards"], explained  # per guard: estimate, interval, counts
    undone = [e for e in bad_audit["entries"] if e["action"] == "flag.update"][-1]
    assert "checkout_errors rate is higher than control's" in undone["reason"]  # the judge's words
    steps = [e for e in good_audit["entries"] if e["action"] == "flag.update"]
    assert len(steps) == 3  # 10%, 50%, 100%: each step once
    assert all(e["reason"] for e in steps)
    decisions = [e["action"] for e in good_audit["entries"] if e["action"].startswith("release.")]
    assert decisions.count("release.advanced") == 1
    assert decisions[-2:] == ["release.completed", "release.verified"]
    for entry in good_audit["entries"]:
        if entry["action"].startswith("release.") and entry["action"] != "release.create":
            assert json.loads(entry["after"])["text"], entry
        if entry["action"] in ("release.advanced", "release.completed"):  # the judge's steps
            judged = json.loads(entry["after"])["judge"]
            assert [g["guard"] for g in judged["guards"]] == ["errors", "latency"], judged
            assert all(g["sentence"] and g["counts"] for g in judged["guards"]), judged


TIMED = {
    "flag": "checkout",
    "control": "off",
    "treatment": "on",
    "steps": [
        {"percent": 5, "hold": "3s"},
        {"percent": 20, "hold": "3s"},
        {"percent": 60, "hold": "3s"},
        {"percent": 100},
    ],
    "options": {"insufficient_data": "advance", "verification": "0s"},
}
FAST = ("--release-tick", "0.5", "--worker-interval", "0.2", "--metrics-lag", "1")


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_release_survives_kill_9_of_its_leader_with_no_step_skipped_or_repeated(
    kind: str, tmp_path: Path
) -> None:
    """SQLite: the one server is killed and started again. PostgreSQL: two nodes serve the
    same database and the one that leads is killed; the other takes over."""
    with database(kind, tmp_path) as url:
        first = start_server(url, None, True, *FAST)
        second = start_server(url, None, False, *FAST) if kind == "postgresql" else None
        try:
            with first.client() as api:
                assert api.put(f"{ENV}/flags/checkout", json=FLAG).status_code == 201
                started = api.post(f"{ENV}/releases", json={"plan": TIMED})
                assert started.status_code == 201, started.text
            assert wait_for(lambda: _release(first, "r1")["step"] >= 1, timeout=60)
            first.kill()  # kill -9, in the middle of the ramp
            survivor = second or start_server(url, None, False, *FAST)
            second = survivor
            assert wait_for(lambda: not _release(survivor, "r1")["active"], timeout=90)
            done = _release(survivor, "r1")
            with survivor.client() as api:
                audit = api.get(f"{ENV}/audit", params={"actor": "release:r1"}).json()
        finally:
            stop(first)
            if second is not None:
                stop(second)
    assert done["phase"] == "completed"
    shares = [h["share"] for h in done["state"]["history"] if h["decision"] != "created"]
    assert shares == sorted(shares)
    entered = [
        h["share"]
        for h in done["state"]["history"]
        if h["decision"] in ("started", "advanced", "completed")
    ]
    assert entered == [5, 20, 60, 100]  # every step once: none skipped, none twice
    changes = [e for e in audit["entries"] if e["action"] == "flag.update"]
    assert len(changes) == 4
