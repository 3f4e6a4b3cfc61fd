"""Scheduled changes against a real server process: on time, once, or refused and announced."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.server_process import Server, database, start_server, stop, wait_for
from unveil.store import tables as t
from unveil.store.database import make_engine

ENV = "/api/v1/projects/shop/environments/production"
FLAG = {"variants": {"on": True, "off": False}, "default": "off", "description": "promo"}
FAST = ("--worker-interval", "0.2", "--release-tick", "0.5", "--metrics-lag", "1")


@pytest.fixture(params=["sqlite", "postgresql"])
def running(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    with database(request.param, tmp_path) as url:
        server = start_server(url, None, True, *FAST)
        try:
            with server.client() as api:
                assert api.put(f"{ENV}/flags/promo", json=FLAG).status_code == 201
            yield server
        finally:
            stop(server)


def _in(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def _schedule(server: Server, **body: Any) -> dict[str, Any]:
    with server.client() as api:
        made = api.post(f"{ENV}/schedules", json=body)
        assert made.status_code == 201, made.text
        return dict(made.json())


def _state(server: Server, schedule_id: str) -> dict[str, Any]:
    with server.client() as api:
        return dict(api.get(f"{ENV}/schedules/{schedule_id}").json())


def _flag(server: Server) -> dict[str, Any]:
    with server.client() as api:
        return dict(api.get(f"{ENV}/flags/promo").json()["data"])


def _settled(server: Server, schedule_id: str) -> bool:
    return _state(server, schedule_id)["state"] != "pending"


def _audit(server: Server, **params: str) -> list[dict[str, Any]]:
    with server.client() as api:
        return list(api.get(f"{ENV}/audit", params=params).json()["entries"])


def test_a_change_scheduled_two_seconds_ahead_is_applied_once_and_audited(
    running: Server,
) -> None:
    made = _schedule(
        running,
        action="flag.put",
        key="promo",
        data={**FLAG, "default": "on"},
        at=_in(2),
        reason="friday promo",
    )
    assert made["state"] == "pending"
    assert _flag(running)["default"] == "off"  # not before its time
    assert wait_for(lambda: _settled(running, made["id"]), timeout=20)
    done = _state(running, made["id"])
    assert done["state"] == "applied", done
    applied_at = datetime.fromisoformat(_audit(running, actor=f"schedule:{made['id']}")[0]["at"])
    assert applied_at >= datetime.fromisoformat(made["at"])
    assert applied_at - datetime.fromisoformat(made["at"]) < timedelta(seconds=5)
    assert _flag(running)["default"] == "on"
    changes = _audit(running, actor=f"schedule:{made['id']}")
    assert [e["action"] for e in changes] == ["flag.update", "schedule.applied"]
    assert changes[0]["reason"] == "friday promo"


def test_a_cancelled_change_never_applies(running: Server) -> None:
    cancelled = _schedule(
        running, action="flag.put", key="promo", data={**FLAG, "default": "on"}, at=_in(2)
    )
    later = _schedule(
        running, action="flag.put", key="promo", data={**FLAG, "description": "x"}, at=_in(3)
    )
    with running.client() as api:
        answer = api.post(f"{ENV}/schedules/{cancelled['id']}/cancel", json={"reason": "no"})
        assert answer.status_code == 200, answer.text
        assert api.post(f"{ENV}/schedules/{cancelled['id']}/cancel").status_code == 409
    assert wait_for(lambda: _settled(running, later["id"]), timeout=20)  # past both times
    assert _state(running, cancelled["id"])["state"] == "cancelled"
    assert _flag(running)["default"] == "off"
    assert _flag(running)["description"] == "x"
    assert _audit(running, actor=f"schedule:{cancelled['id']}") == []


def test_a_change_whose_field_was_changed_meanwhile_is_refused_and_announced(
    running: Server,
) -> None:
    clash = _schedule(
        running, action="flag.put", key="promo", data={**FLAG, "default": "on"}, at=_in(2)
    )
    kept = _schedule(
        running, action="flag.put", key="promo", data={**FLAG, "enabled": False}, at=_in(2.5)
    )
    with running.client() as api:  # someone sets the default by hand before either runs
        etag = api.get(f"{ENV}/flags/promo").headers["etag"]
        by_hand = {**FLAG, "default": {"rollout": {"on": 10, "off": 90}}}
        put = api.put(f"{ENV}/flags/promo", json=by_hand, headers={"If-Match": etag})
        assert put.status_code == 200, put.text
    assert wait_for(lambda: _settled(running, kept["id"]), timeout=20)
    failed = _state(running, clash["id"])
    assert failed["state"] == "failed"
    assert "default" in failed["outcome"]
    flag = _flag(running)
    assert flag["default"] == {"rollout": {"on": 10, "off": 90}}  # the person's edit stands
    assert flag["enabled"] is False  # the other schedule touched another field: merged
    announced = _audit(running, actor=f"schedule:{clash['id']}")
    assert [e["action"] for e in announced] == ["schedule.failed"]
    engine = make_engine(running.database_url)
    try:
        with engine.connect() as conn:
            outbox = conn.execute(
                select(func.count())
                .select_from(t.outbox)
                .where(t.outbox.c.audit_id == announced[0]["id"])
            ).scalar_one()
    finally:
        engine.dispose()
    assert outbox == 1


def test_a_change_with_an_end_is_undone_at_its_end(running: Server) -> None:
    made = _schedule(
        running,
        action="flag.put",
        key="promo",
        data={**FLAG, "default": "on"},
        at=_in(1),
        until=_in(3),
    )
    assert wait_for(lambda: _settled(running, made["id"]), timeout=20)
    assert _flag(running)["default"] == "on"
    with running.client() as api:
        undo = [s for s in api.get(f"{ENV}/schedules").json()["schedules"] if s["undoes"]]
    assert [u["undoes"] for u in undo] == [made["id"]]
    assert wait_for(lambda: _settled(running, undo[0]["id"]), timeout=20)
    assert _state(running, undo[0]["id"])["state"] == "applied"
    assert _flag(running)["default"] == "off"


def test_a_release_start_and_a_document_apply_can_be_scheduled(running: Server) -> None:
    plan = {
        "flag": "promo",
        "control": "off",
        "treatment": "on",
        "steps": [{"percent": 5, "hold": "1h"}, {"percent": 100}],
    }
    release = _schedule(running, action="release.start", plan=plan, at=_in(1))
    document = {"version": 1, "flags": {"promo": FLAG, "banner": {"default": "on"}}}
    applied = _schedule(running, action="document.apply", document=document, at=_in(1.5))
    assert wait_for(lambda: _settled(running, applied["id"]), timeout=20)
    assert _state(running, release["id"])["state"] == "applied"
    assert _state(running, applied["id"])["state"] == "applied"
    with running.client() as api:
        releases = api.get(f"{ENV}/releases").json()["releases"]
        assert [r["phase"] for r in releases] == ["running"]
        assert api.get(f"{ENV}/flags/banner").status_code == 200
    # the document did not undo the release's 5%: it changed only what it changes
    assert _flag(running)["default"] == {"rollout": {"off": 95, "on": 5}}


def test_a_second_release_start_of_one_flag_is_refused_naming_the_field(
    running: Server,
) -> None:
    """The review: two release.start schedules of one flag were both taken (the later
    could only fail when its time came)."""
    plan = {
        "flag": "promo",
        "control": "off",
        "treatment": "on",
        "steps": [{"percent": 5, "hold": "1h"}, {"percent": 100}],
    }
    first = _schedule(running, action="release.start", plan=plan, at=_in(3600))
    with running.client() as api:
        again = api.post(
            f"{ENV}/schedules", json={"action": "release.start", "plan": plan, "at": _in(7200)}
        )
        assert again.status_code == 422, again.text
        (problem,) = again.json()["problems"]
        assert problem["path"] == "plan.flag"
        assert first["id"] in problem["message"]
        assert [s["id"] for s in api.get(f"{ENV}/schedules").json()["schedules"]] == [first["id"]]
        cancelled = api.post(f"{ENV}/schedules/{first['id']}/cancel", json={})
        assert cancelled.status_code == 200, cancelled.text
        # once the first is cancelled, another may be scheduled
        assert _schedule(running, action="release.start", plan=plan, at=_in(7200))["id"]


BAD = [
    ({"at": "2020-01-01T00:00:00Z"}, "at"),
    ({"at": "2030-01-01T09:00", "time_zone": "Mars/Olympus"}, "time_zone"),
    ({"at": "2030-01-01T09:00"}, "at"),
    ({"at": "2030-03-31T02:30", "time_zone": "Europe/Amsterdam"}, "at"),  # skipped by the clocks
    ({"at": "2030-10-27T02:30", "time_zone": "Europe/Amsterdam"}, "at"),  # happens twice
    ({"at": "2030-01-02T09:00Z", "until": "2030-01-01T09:00Z"}, "until"),
    ({"at": "tomorrow"}, "at"),
    ({"at": "2030-01-01T09:00Z", "action": "flag.rename"}, "action"),
    ({"at": "2030-01-01T09:00Z", "data": None}, "data"),
    ({"at": "2030-01-01T09:00Z", "data": {"default": "nope"}}, "flags.promo.default"),
    ({"at": "2030-01-01T09:00Z", "action": "flag.delete"}, "data"),
    ({"at": "2030-01-01T09:00Z", "key": "nope", "action": "flag.delete", "data": None}, ""),
]


def test_bad_schedules_are_refused_naming_the_field_and_change_nothing(running: Server) -> None:
    before = _audit(running)
    with running.client() as api:
        for body, field in BAD:
            request = {"action": "flag.put", "key": "promo", "data": {**FLAG, "default": "on"}}
            request.update(body)
            if request.get("data") is None:
                request.pop("data")
            refused = api.post(f"{ENV}/schedules", json=request)
            assert refused.status_code in (404, 422), (body, refused.text)
            if refused.status_code == 422:
                paths = [p["path"] for p in refused.json()["problems"]]
                assert any(p.startswith(field) for p in paths), (body, paths, refused.text)
        assert api.get(f"{ENV}/schedules").json()["schedules"] == []
    assert _audit(running) == before


def test_the_next_leader_applies_a_change_once_when_the_leader_is_killed_before_its_time(
    tmp_path: Path,
) -> None:
    with database("postgresql", tmp_path) as url:
        first = start_server(url, None, True, *FAST)
        second = start_server(url, None, False, *FAST)
        try:
            with first.client() as api:
                api.put(f"{ENV}/flags/promo", json=FLAG)
            made = _schedule(
                first, action="flag.put", key="promo", data={**FLAG, "default": "on"}, at=_in(3)
            )
            first.kill()  # kill -9 of the leader, just before the time
            assert wait_for(lambda: _settled(second, made["id"]), timeout=30)
            assert _state(second, made["id"])["state"] == "applied"
            assert [e["action"] for e in _audit(second, actor=f"schedule:{made['id']}")] == [
                "flag.update",
                "schedule.applied",
            ]
        finally:
            stop(first)
            stop(second)


def test_the_cli_schedules_lists_and_cancels(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tests.server_process import ADMIN_TOKEN
    from unveil.cli.main import main

    with database("sqlite", tmp_path) as url:
        server = start_server(url, None, True, *FAST)
        try:
            with server.client() as api:
                api.put(f"{ENV}/flags/promo", json=FLAG)
            env = {"UNVEIL_URL": server.url, "UNVEIL_TOKEN": ADMIN_TOKEN, "UNVEIL_PROJECT": "shop"}

            def cli(*args: str) -> Any:
                return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

            soon = cli("flags", "disable", "promo", "-e", "production", "--schedule", _in(1))
            assert soon.exit_code == 0, soon.output
            assert "s1  pending  flag.put promo" in soon.output
            later = cli(
                "flags", "rollout", "promo", "20", "-e", "production",
                "--schedule", "2030-06-07T18:00", "--until", "2030-06-10T06:00",
                "--tz", "Europe/Amsterdam", "-r", "summer promo",
            )  # fmt: skip
            assert later.exit_code == 0, later.output
            assert "2030-06-07T16:00:00+00:00 until 2030-06-10T04:00:00+00:00" in later.output
            assert wait_for(lambda: _settled(server, "s1"), timeout=20)
            assert _flag(server)["enabled"] is False
            listed = cli("schedules", "list", "-e", "production", "--state", "pending")
            assert "s2" in listed.output
            assert "s1" not in listed.output
            cancelled = cli("schedules", "cancel", "s2", "-e", "production", "-r", "rain")
            assert cancelled.exit_code == 0, cancelled.output
            assert "cancelled" in cancelled.output
            again = cli("schedules", "cancel", "s2", "-e", "production")
            assert again.exit_code == 1
            assert "cancelled already" in again.output
            bad = cli("flags", "enable", "promo", "-e", "production", "--schedule", "tomorrow")
            assert bad.exit_code == 1
            assert "at:" in bad.output
        finally:
            stop(server)


def test_checking_a_schedule_leaves_nothing_behind_in_what_is_served(running: Server) -> None:
    """The check when a schedule (or a change request) is made carries the change out and rolls
    it back: nothing of it may survive in the node's memory either (snapshot, model)."""
    from tests.server_process import sdk_key

    _schedule(running, action="flag.put", key="promo", data={**FLAG, "default": "on"}, at=_in(600))
    with httpx.Client(base_url=running.url, timeout=30) as http:
        key = sdk_key(running.database_url)
        snapshot = http.get("/sdk/v1/snapshot", headers={"Authorization": f"Bearer {key}"})
    assert snapshot.json()["flags"]["promo"]["default"] == "off"
    with running.client() as api:  # and the next write is checked against the real state
        etag = api.get(f"{ENV}/flags/promo").headers["etag"]
        put = api.put(
            f"{ENV}/flags/promo", json={**FLAG, "description": "x"}, headers={"If-Match": etag}
        )
        assert put.status_code == 200, put.text
    assert _flag(running)["default"] == "off"
