"""Launches and release templates against a real server process and a real webhook receiver."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from tests.server_process import (
    ADMIN_TOKEN,
    Server,
    _free_port,
    database,
    start_server,
    stop,
    wait_for,
)
from tests.test_webhooks import Receiver
from unveil.cli.main import main

LAUNCHES_DOC = Path(__file__).resolve().parents[1] / "docs" / "launches.md"
SHOP = "/api/v1/projects/shop"
PRODUCTION = f"{SHOP}/environments/production"
FLAGS = ("new-checkout", "promo-banner", "gift-cards")
NOTES = "Gift cards are here!\n\n- buy a gift card at checkout\n- new banner on the home page"
FAST = ("--worker-interval", "0.2", "--webhook-retry-base", "0.2", "--release-tick", "0.5")
CAREFUL = {
    "steps": [{"percent": 10, "hold": "1h"}, {"percent": 50, "hold": "1h"}, {"percent": 100}],
    "options": {"min_exposures": 100},
}


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    with database(request.param, tmp_path) as url:
        running = start_server(url, None, True, *FAST)
        try:
            with running.client() as api:
                for key in FLAGS:
                    made = api.put(f"{PRODUCTION}/flags/{key}", json=_off())
                    assert made.status_code == 201, made.text
            yield running
        finally:
            stop(running)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    made = Receiver(_free_port(), tmp_path / "received.jsonl")
    try:
        yield made
    finally:
        made.stop()


def _off() -> dict[str, Any]:
    return {"enabled": False, "default": "on", "description": "dark until the launch"}


def _enabled(api: httpx.Client) -> dict[str, bool]:
    return {k: api.get(f"{PRODUCTION}/flags/{k}").json()["data"]["enabled"] for k in FLAGS}


def _launch(api: httpx.Client, **body: Any) -> httpx.Response:
    return api.post(f"{SHOP}/launches", json=body)


def _state(api: httpx.Client, launch_id: str) -> str:
    return str(api.get(f"{SHOP}/launches/{launch_id}").json()["state"])


def test_a_launch_of_three_flags_starts_them_together_at_its_time_and_stops_them(
    server: Server, receiver: Receiver
) -> None:
    receiver.start()
    with server.client() as api:
        hook = api.post(
            f"{SHOP}/webhooks",
            json={"url": receiver.url, "events": ["launch.started", "launch.stopped"]},
        )
        assert hook.status_code == 201, hook.text
        planned = datetime.now(UTC) + timedelta(seconds=2)
        amsterdam = timezone(timedelta(hours=1))  # an offset, as people write it
        made = _launch(
            api,
            name="Gift cards",
            notes=NOTES,
            owner="pat",
            planned_at=planned.astimezone(amsterdam).isoformat(),
            changes=[{"environment": "production", "flag": k, "enabled": True} for k in FLAGS],
        )
        assert made.status_code == 201, made.text
        launch = made.json()
        assert launch["state"] == "planned"
        assert datetime.fromisoformat(launch["planned_at"]) == planned  # the same instant
        assert _enabled(api) == dict.fromkeys(FLAGS, False)  # planned: nothing changed yet
        calendar = api.get(f"{SHOP}/launches").json()
        assert [x["id"] for x in calendar["upcoming"]] == [launch["id"]]

        assert wait_for(lambda: _state(api, launch["id"]) == "done", timeout=30)
        assert _enabled(api) == dict.fromkeys(FLAGS, True)
        entries = api.get(f"{PRODUCTION}/audit").json()["entries"]
        started = [e for e in entries if e["actor"] == f"launch:{launch['id']}"]
        assert sorted(e["target"] for e in started) == sorted(FLAGS)
        versions = sorted(e["environment_version"] for e in started)
        assert versions == list(range(versions[0], versions[0] + 3))  # consecutive
        times = [datetime.fromisoformat(e["at"]) for e in started]
        assert max(times) - min(times) < timedelta(seconds=1)
        assert min(times) >= planned - timedelta(milliseconds=50)  # not before its time
        assert all("Gift cards" in e["reason"] for e in started)
        assert [e["action"] for e in entries].count("launch.started") == 1

        assert wait_for(lambda: len(receiver.received()) == 1)
        body = json.loads(receiver.received()[0]["body"])
        assert body["event"] == "launch.started"
        assert body["notes"] == NOTES
        assert body["target"] == launch["id"]
        assert body["launch"]["flags"] == sorted(FLAGS)

        stopped = api.post(f"{SHOP}/launches/{launch['id']}/stop", json={"reason": "oops"})
        assert stopped.status_code == 200, stopped.text
        assert stopped.json()["state"] == "rolled_back"
        assert _enabled(api) == dict.fromkeys(FLAGS, False)  # all three turned back
        assert wait_for(lambda: len(receiver.received()) == 2)
        last = json.loads(receiver.received()[1]["body"])
        assert last["event"] == "launch.stopped"
        assert last["notes"] == NOTES
        recent = api.get(f"{SHOP}/launches").json()["recent"]
        assert [x["id"] for x in recent] == [launch["id"]]
        again = api.post(f"{SHOP}/launches/{launch['id']}/stop")
        assert again.status_code == 409


def test_bad_launches_are_refused_by_field_and_nothing_is_made(server: Server) -> None:
    with server.client() as api:
        past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        bad = _launch(
            api,
            name="",
            notes="n",
            planned_at=past,
            changes=[
                {"environment": "production", "flag": "new-checkout", "enabled": "yes"},
                {"environment": "qa", "flag": "x", "enabled": True},
                {"environment": "production", "flag": "gift-cards"},
            ],
        )
        assert bad.status_code == 422, bad.text
        paths = {p["path"] for p in bad.json()["problems"]}
        assert {"name", "planned_at", "changes[0].enabled", "changes[2]"} <= paths
        unknown = _launch(
            api,
            name="x",
            notes="n",
            changes=[{"environment": "qa", "flag": "x", "enabled": True}],
        )
        assert unknown.status_code == 422
        assert unknown.json()["problems"][0]["path"] == "changes[0].environment"
        missing = _launch(
            api,
            name="x",
            notes="n",
            changes=[{"environment": "production", "flag": "nope", "enabled": True}],
        )
        assert missing.status_code == 404
        assert "changes[0]" in missing.json()["error"]
        invalid = _launch(
            api,
            name="x",
            notes="n",
            changes=[
                {"environment": "production", "flag": "new-checkout", "data": {"default": "maybe"}}
            ],
        )
        assert invalid.status_code == 422
        assert invalid.json()["problems"][0]["path"] == "changes[0].data.default"
        plan: dict[str, Any] = {"control": "nope", "treatment": "on", "steps": [{"percent": 100}]}
        for field, value in (("control", "nope"), ("environment", "staging")):
            release = {"plan": {**plan, "control": "off", field: value}}
            change = {"environment": "production", "flag": "gift-cards", "release": release}
            wrong_plan = _launch(api, name="x", notes="n", changes=[change])
            assert wrong_plan.status_code == 422, wrong_plan.text
            paths = [p["path"] for p in wrong_plan.json()["problems"]]
            assert paths == [f"changes[0].release.plan.{field}"]  # not changes[0].environment
        off = {"control": "off", "treatment": "on", "steps": [{"percent": 100}]}
        change = {"environment": "production", "flag": "gift-cards", "release": {"plan": off}}
        switched_off = _launch(api, name="x", notes="n", changes=[change])
        assert switched_off.status_code == 422, switched_off.text
        assert [p["path"] for p in switched_off.json()["problems"]] == ["changes[0].flag"]
        for odd in (["production"], {"a": 1}):  # not text, and not hashable either
            for name in ("environment", "flag"):
                change = {"environment": "production", "flag": "gift-cards", "enabled": True}
                refused = _launch(api, name="x", notes="n", changes=[{**change, name: odd}] * 2)
                assert refused.status_code == 422, refused.text
                assert refused.json()["problems"][0]["path"] == f"changes[0].{name}"
        no_notes = _launch(api, name="x", changes=[])
        assert no_notes.status_code == 400
        assert any(p["path"] == "body.notes" for p in no_notes.json()["problems"])
        calendar = api.get(f"{SHOP}/launches").json()
        assert calendar == {"upcoming": [], "in_progress": [], "recent": []}


def test_templates_are_checked_as_plans_and_launch_guarded_releases(server: Server) -> None:
    with server.client() as api:
        bad = api.put(
            f"{SHOP}/templates/careful",
            json={"plan": {"flag": "x", "steps": [{"percent": 150}]}},
        )
        assert bad.status_code == 422, bad.text
        paths = {p["path"] for p in bad.json()["problems"]}
        assert "flag" in paths
        assert any(p.startswith("steps[0]") for p in paths)
        assert api.get(f"{SHOP}/templates").json()["templates"] == []
        saved = api.put(f"{SHOP}/templates/careful", json={"plan": CAREFUL})
        assert saved.status_code == 200, saved.text
        assert saved.json()["plan"]["steps"][0] == {"percent": 10, "hold": "1h"}
        flag = api.get(f"{PRODUCTION}/flags/new-checkout")
        enabled = {**flag.json()["data"], "enabled": True, "default": "off"}
        put = api.put(
            f"{PRODUCTION}/flags/new-checkout",
            json=enabled,
            headers={"If-Match": flag.headers["etag"]},
        )
        assert put.status_code == 200, put.text
        made = _launch(
            api,
            name="Checkout v2",
            notes="The new checkout, carefully.",
            changes=[
                {
                    "environment": "production",
                    "flag": "new-checkout",
                    "release": {"template": "careful"},
                },
                {"environment": "production", "flag": "promo-banner", "enabled": True},
            ],
        )
        assert made.status_code == 201, made.text
        launch_id = made.json()["id"]
        started = api.post(f"{SHOP}/launches/{launch_id}/start")
        assert started.status_code == 200, started.text
        assert started.json()["state"] == "in_progress"  # until its release completes
        release = next(e for e in started.json()["effects"] if e["kind"] == "release")
        shown = api.get(f"{PRODUCTION}/releases/{release['release']}").json()
        assert shown["phase"] == "running"
        assert shown["percent"] == 10
        stopped = api.post(f"{SHOP}/launches/{launch_id}/stop")
        assert stopped.status_code == 200, stopped.text
        shown = api.get(f"{PRODUCTION}/releases/{release['release']}").json()
        assert shown["phase"] == "aborted"
        assert not api.get(f"{PRODUCTION}/flags/promo-banner").json()["data"]["enabled"]

    runner = CliRunner()
    env = {"UNVEIL_URL": server.url, "UNVEIL_TOKEN": ADMIN_TOKEN, "UNVEIL_PROJECT": "shop"}
    env["COLUMNS"] = "200"  # the tables are not folded
    listed = runner.invoke(main, ["templates", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    assert "careful" in listed.output
    calendar = runner.invoke(main, ["launches", "list"], env=env)
    assert calendar.exit_code == 0, calendar.output
    assert "Checkout v2" in calendar.output
    assert "rolled back" in calendar.output
    started = runner.invoke(
        main,
        ["release", "start", "--template", "careful", "-f", "new-checkout", "-e", "production"],
        env=env,
    )
    assert started.exit_code == 0, started.output
    assert "started" in started.output


def test_with_approval_required_a_launch_waits_then_starts_whole(server: Server) -> None:
    """Across two environments, one of which requires approval: nothing moves until it is
    approved, then both do; stopping turns both back."""
    staging = f"{SHOP}/environments/staging"
    with server.client() as api:
        rita_token = {"name": "rita", "kind": "admin", "role": "releaser"}
        rita = api.post("/api/v1/tokens", json=rita_token)
        required = api.put(f"{PRODUCTION}/settings", json={"requires_approval": True})
        assert required.status_code == 200
        assert api.put(f"{staging}/flags/gift-cards", json=_off()).status_code == 201
        changes = [{"environment": "production", "flag": k, "enabled": True} for k in FLAGS]
        changes.append({"environment": "staging", "flag": "gift-cards", "enabled": True})
        made = _launch(api, name="Gift cards", notes=NOTES, changes=changes)
        assert made.status_code == 201, made.text
        launch_id = made.json()["id"]
        assert made.json()["environments"] == ["production", "staging"]
        waiting = api.post(f"{SHOP}/launches/{launch_id}/start").json()
        assert waiting["state"] == "waiting_for_approval"
        assert list(waiting["approvals"]) == ["production"]  # staging needs none
        request = waiting["approvals"]["production"]["change_request"]
        assert _enabled(api) == dict.fromkeys(FLAGS, False)
        assert api.get(f"{staging}/flags/gift-cards").json()["data"]["enabled"] is False
        opened = api.get(f"{PRODUCTION}/changes/{request}").json()
        assert opened["action"] == "launch.start"
        assert opened["target"] == launch_id
    with server.client(rita.json()["secret"]) as other:
        approved = other.post(f"{PRODUCTION}/changes/{request}/approve")
        assert approved.status_code == 200, approved.text
        assert approved.json()["state"] == "applied"
    with server.client() as api:
        assert _state(api, launch_id) == "done"
        assert _enabled(api) == dict.fromkeys(FLAGS, True)
        assert api.get(f"{staging}/flags/gift-cards").json()["data"]["enabled"] is True
        for env in (PRODUCTION, staging):
            actions = [e["action"] for e in api.get(f"{env}/audit").json()["entries"]]
            assert actions.count("launch.started") == 1
        stopped = api.post(f"{SHOP}/launches/{launch_id}/stop")  # never waits for approval
        assert stopped.status_code == 200, stopped.text
        assert _enabled(api) == dict.fromkeys(FLAGS, False)
        assert api.get(f"{staging}/flags/gift-cards").json()["data"]["enabled"] is False


def _yaml_blocks(text: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)


def test_the_worked_example_of_the_doc_plans_its_launch(server: Server, tmp_path: Path) -> None:
    """docs/launches.md: the template and the launch file it shows do what it says."""
    launch_text, template_text = _yaml_blocks(LAUNCHES_DOC.read_text(encoding="utf-8"))[:2]
    soon = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    launch_text = re.sub(r'planned_at: "[^"]+"', f'planned_at: "{soon}"', launch_text)
    (tmp_path / "careful.yaml").write_text(template_text, encoding="utf-8")
    (tmp_path / "gift-cards-launch.yaml").write_text(launch_text, encoding="utf-8")
    with server.client() as api:
        flag = api.get(f"{PRODUCTION}/flags/new-checkout")
        on = {**flag.json()["data"], "enabled": True, "default": "off"}
        headers = {"If-Match": flag.headers["etag"]}
        assert api.put(f"{PRODUCTION}/flags/new-checkout", json=on, headers=headers).is_success
    runner = CliRunner()
    env = {"UNVEIL_URL": server.url, "UNVEIL_TOKEN": ADMIN_TOKEN, "UNVEIL_PROJECT": "shop"}
    env["COLUMNS"] = "200"
    saved = runner.invoke(
        main, ["templates", "save", "careful", str(tmp_path / "careful.yaml")], env=env
    )
    assert saved.exit_code == 0, saved.output
    made = runner.invoke(
        main, ["launches", "create", str(tmp_path / "gift-cards-launch.yaml")], env=env
    )
    assert made.exit_code == 0, made.output
    assert "planned: l1  Gift cards  planned" in made.output
    shown = runner.invoke(main, ["launches", "show", "l1"], env=env)
    assert "Gift cards are here!" in shown.output
    with server.client() as api:
        calendar = api.get(f"{SHOP}/launches").json()
        assert calendar["upcoming"][0]["flags"] == ["gift-cards", "new-checkout", "promo-banner"]
        assert _enabled(api)["gift-cards"] is False  # planned, not started
    early = runner.invoke(main, ["launches", "start", "l1"], env=env)
    assert early.exit_code == 0, early.output
    assert "in progress" in early.output  # its checkout release steps up
    with server.client() as api:
        assert _enabled(api)["gift-cards"] is True
    stopped = runner.invoke(main, ["launches", "stop", "l1", "-r", "provider says no"], env=env)
    assert stopped.exit_code == 0, stopped.output
    assert "rolled back" in stopped.output
    with server.client() as api:
        assert _enabled(api)["gift-cards"] is False
        assert "provider says no" in api.get(f"{SHOP}/launches/l1").json()["outcome"]
    twice = runner.invoke(main, ["launches", "stop", "l1"], env=env)
    assert twice.exit_code == 1  # refused: stopped already


def test_the_next_leader_starts_a_launch_once_when_the_leader_is_killed_before_its_time(
    tmp_path: Path,
) -> None:
    with database("postgresql", tmp_path) as url:
        first = start_server(url, None, True, *FAST)
        second = start_server(url, None, False, *FAST)
        try:
            with first.client() as api:
                for key in FLAGS:
                    assert api.put(f"{PRODUCTION}/flags/{key}", json=_off()).status_code == 201
                made = _launch(
                    api,
                    name="Gift cards",
                    notes=NOTES,
                    planned_at=(datetime.now(UTC) + timedelta(seconds=3)).isoformat(),
                    changes=[
                        {"environment": "production", "flag": k, "enabled": True} for k in FLAGS
                    ],
                )
                assert made.status_code == 201, made.text
                launch_id = made.json()["id"]
            first.kill()  # kill -9 of the leader, just before the time
            with second.client() as api:
                assert wait_for(lambda: _state(api, launch_id) == "done", timeout=30)
                assert _enabled(api) == dict.fromkeys(FLAGS, True)
                entries = api.get(f"{PRODUCTION}/audit").json()["entries"]
                ours = [e for e in entries if e["actor"] == f"launch:{launch_id}"]
                assert len(ours) == 3  # each flag once
                assert [e["action"] for e in entries].count("launch.started") == 1
        finally:
            stop(first)
            stop(second)


def test_approving_a_launch_while_it_is_stopped_waits_instead_of_deadlocking(
    tmp_path: Path,
) -> None:
    """PostgreSQL: the approval holds its environment (staging) and then needs the
    launch's other one (production), which the stop holds while it needs staging.
    A third transaction holds production so that both are queued in that order."""
    import threading

    import psycopg

    staging = f"{SHOP}/environments/staging"
    with database("postgresql", tmp_path) as url:
        running = start_server(url, None, True, *FAST)
        try:
            with running.client() as api:
                rita = api.post(
                    "/api/v1/tokens", json={"name": "rita", "kind": "admin", "role": "releaser"}
                ).json()["secret"]
                for env in (PRODUCTION, staging):
                    assert api.put(f"{env}/flags/gift-cards", json=_off()).status_code == 201
                assert api.put(f"{staging}/settings", json={"requires_approval": True}).is_success
                changes = [
                    {"environment": e, "flag": "gift-cards", "enabled": True}
                    for e in ("production", "staging")
                ]
                made = _launch(api, name="Gift cards", notes=NOTES, changes=changes)
                assert made.status_code == 201, made.text
                launch_id = made.json()["id"]
                waiting = api.post(f"{SHOP}/launches/{launch_id}/start").json()
                assert waiting["state"] == "waiting_for_approval"
                request = waiting["approvals"]["staging"]["change_request"]
            answers: dict[str, httpx.Response] = {}

            def stop_it() -> None:
                with running.client() as api:
                    answers["stop"] = api.post(f"{SHOP}/launches/{launch_id}/stop")

            def approve_it() -> None:
                with running.client(rita) as other:
                    answers["approve"] = other.post(f"{staging}/changes/{request}/approve")

            with psycopg.connect(url.replace("+psycopg", "")) as holder:
                holder.execute(
                    "SELECT id FROM environments WHERE key = 'production' FOR UPDATE"
                ).fetchone()

                def waiting_on_locks() -> int:
                    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as look:
                        found = look.execute(
                            "SELECT count(*) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                        ).fetchone()
                        return int(found[0]) if found else 0

                stopper = threading.Thread(target=stop_it)
                stopper.start()
                assert wait_for(lambda: waiting_on_locks() == 1)  # stop waits for production
                approver = threading.Thread(target=approve_it)
                approver.start()
                assert wait_for(lambda: waiting_on_locks() == 2)  # and so does the approval
                holder.rollback()  # production is free: the stop goes first
            stopper.join(60)
            approver.join(60)
            assert answers["stop"].status_code == 200, answers["stop"].text
            assert answers["stop"].json()["state"] == "rolled_back"
            assert answers["approve"].status_code == 409, answers["approve"].text  # not a 503
            refused = answers["approve"].json()["change_request"]
            assert refused["state"] == "refused"
            assert "rolled back" in refused["outcome"]  # it was stopped first
            with running.client() as api:
                assert _state(api, launch_id) == "rolled_back"
                for env in (PRODUCTION, staging):
                    assert api.get(f"{env}/flags/gift-cards").json()["data"]["enabled"] is False
                    actions = [e["action"] for e in api.get(f"{env}/audit").json()["entries"]]
                    assert actions.count("launch.stopped") == 1
                    assert actions.count("launch.started") == 0
        finally:
            stop(running)


def test_a_launch_across_two_environments_is_announced_once_to_each_subscription(
    server: Server, receiver: Receiver
) -> None:
    """Its audit has launch.started in each environment; a channel hears it once."""
    staging = f"{SHOP}/environments/staging"
    receiver.start()
    with server.client() as api:
        assert api.put(f"{staging}/flags/gift-cards", json=_off()).status_code == 201
        events = ["launch.started", "launch.stopped"]
        everywhere = api.post(f"{SHOP}/webhooks", json={"url": receiver.url, "events": events})
        only_staging = api.post(
            f"{SHOP}/webhooks",
            json={"url": receiver.url, "events": events, "environments": ["staging"]},
        )
        to_chat = api.post(
            f"{SHOP}/webhooks",
            json={"url": receiver.url, "events": ["launch.started"], "format": "slack"},
        )
        assert everywhere.status_code == only_staging.status_code == to_chat.status_code == 201
        changes = [
            {"environment": e, "flag": "gift-cards", "enabled": True}
            for e in ("production", "staging")
        ]
        made = _launch(api, name="Gift cards", notes=NOTES, changes=changes)
        assert made.status_code == 201, made.text
        launch_id = made.json()["id"]
        assert api.post(f"{SHOP}/launches/{launch_id}/start").json()["state"] == "done"
        assert api.post(f"{SHOP}/launches/{launch_id}/stop").status_code == 200

        def sent(hook: httpx.Response) -> list[dict[str, Any]]:
            found = api.get(f"{SHOP}/webhooks/{hook.json()['id']}/deliveries").json()
            return list(reversed(found["deliveries"]))

        for hook, env in ((everywhere, "production"), (only_staging, "staging")):
            # the stop is fanned out after the start, whole (one transaction)
            assert wait_for(lambda h=hook: "launch.stopped" in [d["event"] for d in sent(h)])
            got = sent(hook)
            assert [d["event"] for d in got] == ["launch.started", "launch.stopped"]
            assert all(d["body"]["notes"] == NOTES for d in got)
            assert {d["body"]["environment"] for d in got} == {env}
        for env in (PRODUCTION, staging):  # the audit log of each still shows it
            actions = [e["action"] for e in api.get(f"{env}/audit").json()["entries"]]
            assert actions.count("launch.started") == actions.count("launch.stopped") == 1

    def chat() -> list[str]:
        bodies = [json.loads(r["body"]) for r in receiver.received()]
        return [b["text"] for b in bodies if "text" in b]

    assert wait_for(lambda: len(receiver.received()) == 5)  # 2 + 2 + 1, each once
    (text,) = chat()
    assert text.startswith("[shop/production] launch.started: ")
    assert "Gift cards are here!" in text  # the channel reads the notes, not only the name
    assert "- buy a gift card at checkout" in text


def test_a_launch_stopped_as_its_time_comes_stays_called_off_without_a_failure(
    tmp_path: Path,
) -> None:
    """PostgreSQL: the stop and the job that starts the launch at its time meet; the
    stop goes first (a held row queues them in that order). The job then finds the
    launch stopped: nothing to start, and nothing failed."""
    import threading

    import psycopg

    with database("postgresql", tmp_path) as url:
        running = start_server(url, None, True, *FAST)
        plain = url.replace("+psycopg", "")
        try:
            with running.client() as api:
                assert api.put(f"{PRODUCTION}/flags/gift-cards", json=_off()).status_code == 201
                planned = datetime.now(UTC) + timedelta(seconds=3)
                change = {"environment": "production", "flag": "gift-cards", "enabled": True}
                made = _launch(
                    api, name="Gift cards", notes=NOTES, planned_at=planned.isoformat(),
                    changes=[change],
                )  # fmt: skip
                assert made.status_code == 201, made.text
                launch_id = made.json()["id"]
            answers: dict[str, httpx.Response] = {}

            def stop_it() -> None:
                with running.client() as api:
                    answers["stop"] = api.post(f"{SHOP}/launches/{launch_id}/stop")

            def waiting_on_locks() -> int:
                with psycopg.connect(plain, autocommit=True) as look:
                    found = look.execute(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    ).fetchone()
                    return int(found[0]) if found else 0

            with psycopg.connect(plain) as holder:
                holder.execute(
                    "SELECT id FROM environments WHERE key = 'production' FOR UPDATE"
                ).fetchone()
                stopper = threading.Thread(target=stop_it)
                stopper.start()
                assert wait_for(lambda: waiting_on_locks() == 1)  # the stop waits
                assert wait_for(lambda: waiting_on_locks() == 2, timeout=30)  # then the job
                holder.rollback()
            stopper.join(60)
            assert answers["stop"].status_code == 200, answers["stop"].text
            with running.client() as api:

                def jobs_done() -> bool:
                    with psycopg.connect(plain, autocommit=True) as look:
                        found = look.execute(
                            "SELECT count(*) FROM jobs WHERE kind = 'launch.start' "
                            "AND state NOT IN ('done', 'failed')"
                        ).fetchone()
                        return found is not None and int(found[0]) == 0

                assert wait_for(jobs_done)
                shown = api.get(f"{SHOP}/launches/{launch_id}").json()
                assert shown["state"] == "rolled_back"
                assert shown["outcome"] == "stopped before it started: nothing to turn back"
                actions = [e["action"] for e in api.get(f"{PRODUCTION}/audit").json()["entries"]]
                assert actions.count("launch.stopped") == 1
                assert "launch.failed" not in actions  # it did not fail: it was called off
                assert "launch.started" not in actions
                assert api.get(f"{PRODUCTION}/flags/gift-cards").json()["data"]["enabled"] is False
        finally:
            stop(running)


def test_saving_one_new_template_at_once_from_several_places_never_fails(
    tmp_path: Path,
) -> None:
    """PostgreSQL: the first save of a name, made three times at once: one creates it,
    the others replace it after or are told it changed meanwhile (409), never a 500."""
    import threading

    with database("postgresql", tmp_path) as url:
        running = start_server(url, None, True, *FAST)
        try:
            codes: list[int] = []

            def save(name: str) -> None:
                with running.client() as api:
                    saved = api.put(f"{SHOP}/templates/{name}", json={"plan": CAREFUL})
                    codes.append(saved.status_code)

            for round_ in range(8):
                savers = [threading.Thread(target=save, args=(f"t{round_}",)) for _ in range(3)]
                for saver in savers:
                    saver.start()
                for saver in savers:
                    saver.join(60)
            assert set(codes) <= {200, 409}, codes
            with running.client() as api:
                found = api.get(f"{SHOP}/templates").json()["templates"]
                assert sorted(t["name"] for t in found) == [f"t{i}" for i in range(8)]
                assert sum(t["version"] for t in found) == codes.count(200)  # each save counted
        finally:
            stop(running)


def test_a_launch_is_one_mark_on_the_timeline(server: Server) -> None:
    """Its three flag changes are one mark when it starts, and one when it stops."""
    with server.client() as api:
        changes = [{"environment": "production", "flag": k, "enabled": True} for k in FLAGS]
        made = _launch(api, name="Gift cards", notes=NOTES, changes=changes)
        assert made.status_code == 201, made.text
        launch_id = made.json()["id"]
        assert api.post(f"{SHOP}/launches/{launch_id}/start").json()["state"] == "done"
        assert api.post(f"{SHOP}/launches/{launch_id}/stop").status_code == 200
        marks = api.get(f"{PRODUCTION}/timeline").json()["marks"]
        ours = [m for m in marks if m["target"] == launch_id or m["actor"].startswith("launch:")]
        assert [m["action"] for m in ours] == ["launch.started", "launch.stopped"]
        assert ours[0]["kind"] == "release"
        assert ours[0]["summary"] == (
            f"launch 'Gift cards' ({launch_id}) started: gift-cards, new-checkout, promo-banner"
        )
        assert ours[1]["summary"].startswith(f"launch 'Gift cards' ({launch_id}) stopped")
