"""The releases API and `unveil release` against a real server process (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.server_process import ADMIN_TOKEN, Server
from unveil.cli.main import main

ENV = "/api/v1/projects/shop/environments/production"
FLAG = {"variants": {"on": True, "off": False}, "default": "off"}
GUARD = {"name": "e", "kind": "rate", "metric": "errors"}


def _plan(flag: str = "checkout", **options: Any) -> dict[str, Any]:
    return {
        "flag": flag,
        "control": "off",
        "treatment": "on",
        "steps": [{"percent": 1, "hold": "1h"}, {"percent": 25, "hold": "1h"}, {"percent": 100}],
        **({"options": options} if options else {}),
    }


def _token(server: Server, role: str) -> str:
    with server.client() as api:
        made = api.post("/api/v1/tokens", json={"name": f"{role} t", "kind": "admin", "role": role})
        assert made.status_code == 201, made.text
        return str(made.json()["secret"])


def _default(server: Server, flag: str = "checkout") -> Any:
    with server.client() as api:
        return api.get(f"{ENV}/flags/{flag}").json()["data"]["default"]


def test_start_show_and_command_a_release_through_the_api(server: Server) -> None:
    with server.client() as api:
        assert api.put(f"{ENV}/flags/checkout", json=FLAG).status_code == 201
        started = api.post(f"{ENV}/releases", json={"plan": _plan()})
        assert started.status_code == 201, started.text
        body = started.json()
        assert (body["id"], body["phase"], body["step"], body["percent"]) == ("r1", "running", 0, 1)
        assert _default(server) == {"rollout": {"off": 99, "on": 1}}
        shown = api.get(f"{ENV}/releases/r1").json()
        assert [h["decision"] for h in shown["state"]["history"]] == ["created", "started"]
        assert shown["hold_ends_at"] is not None
        listed = api.get(f"{ENV}/releases", params={"active": "true"}).json()["releases"]
        assert [r["id"] for r in listed] == ["r1"]
        assert "history" not in listed[0]["state"]
        advanced = api.post(f"{ENV}/releases/r1/advance").json()
        assert advanced["percent"] == 25
        assert _default(server) == {"rollout": {"off": 75, "on": 25}}
        refused = api.post(f"{ENV}/releases/r1/resume")
        assert refused.status_code == 409
        assert "not paused" in refused.json()["error"]
        aborted = api.post(f"{ENV}/releases/r1/abort", json={"reason": "seen enough"})
        assert aborted.json()["phase"] == "aborted"
        assert _default(server) == "off"
        audit = api.get(f"{ENV}/audit", params={"actor": "release:r1"}).json()["entries"]
        actions = [e["action"] for e in audit]
        assert actions.count("flag.update") == 3  # 1%, 25%, back to control
        assert "release.aborted" in actions
        assert any("seen enough" in (e["reason"] or "") for e in audit)
        # showing it gives every decision with its explanation (as the audit log holds it)
        shown = api.get(f"{ENV}/releases/r1").json()
        decisions = shown["decisions"]
        assert [d["decision"] for d in decisions] == ["started", "advanced", "aborted"]
        assert decisions[-1]["text"] == "aborted by admin (UNVEIL_ADMIN_TOKEN): seen enough; " + (
            "everyone gets 'off'"
        )
        assert decisions[-1]["explanation"]["from_share"] == 25
        assert all(d["at"] for d in decisions)
        listed = api.get(f"{ENV}/releases").json()["releases"]
        assert "decisions" not in listed[0]


def test_a_bad_plan_is_refused_with_every_problem_named(server: Server) -> None:
    with server.client() as api:
        api.put(f"{ENV}/flags/checkout", json=FLAG)
        bad = _plan(window="09:00-09:00 UTC")
        bad["steps"] = [
            {"percent": 50, "hold": "1h"},
            {"percent": 5, "hold": "1h"},
            {"percent": 100},
        ]
        bad["treatment"] = "blue"
        refused = api.post(f"{ENV}/releases", json={"plan": bad})
        assert refused.status_code == 422
        paths = {p["path"] for p in refused.json()["problems"]}
        assert {"steps[1].percent", "treatment", "options.window"} <= paths
        naive = api.post(
            f"{ENV}/releases", json={"plan": _plan(), "start_at": "2030-01-01T09:00:00"}
        )
        assert naive.status_code == 422
        assert naive.json()["problems"][0]["path"] == "start_at"
        assert api.post(f"{ENV}/releases", json={"plan": "nope"}).status_code in (400, 422)
        assert api.get(f"{ENV}/releases").json()["releases"] == []
        assert api.get(f"{ENV}/releases/r1").status_code == 404
        assert api.get(f"{ENV}/releases/x1").status_code == 404
        assert _default(server) == "off"


def test_a_nul_in_a_plan_is_refused_at_its_field_not_at_body(server: Server) -> None:
    """The earlier review: a NUL in a release plan was reported at path ``body``."""
    with server.client() as api:
        api.put(f"{ENV}/flags/checkout", json=FLAG)
        plan = _plan()
        plan["steps"][1]["hold"] = "1h\x00"
        plan["guards"] = [{**GUARD, "name": "e\x00"}]
        for body, path in (
            ({"plan": {**plan, "guards": []}}, "plan.steps[1].hold"),
            ({"plan": {**_plan(), "guards": plan["guards"]}}, "plan.guards[0].name"),
            ({"plan": _plan(), "reason": "why\x00"}, "reason"),
        ):
            refused = api.post(
                f"{ENV}/releases",
                content=json.dumps(body),
                headers={"Content-Type": "application/json"},
            )
            assert refused.status_code == 400, refused.text
            assert [p["path"] for p in refused.json()["problems"]] == [path]
            assert "NUL character" in refused.json()["problems"][0]["message"]
        assert api.get(f"{ENV}/releases").json()["releases"] == []


def test_a_release_whose_flag_is_deleted_aborts_naming_who_deleted_it(server: Server) -> None:
    """The earlier review: the abort said only "the flag was deleted"."""
    with server.client() as api:
        api.put(f"{ENV}/flags/checkout", json=FLAG)
        assert api.post(f"{ENV}/releases", json={"plan": _plan()}).status_code == 201
        etag = api.get(f"{ENV}/flags/checkout").headers["etag"]
        gone = api.delete(
            f"{ENV}/flags/checkout", params={"reason": "cleanup"}, headers={"If-Match": etag}
        )
        assert gone.status_code == 204, gone.text

        def aborted() -> dict[str, Any] | None:
            shown = api.get(f"{ENV}/releases/r1").json()
            return shown if shown["phase"] == "aborted" else None

        from tests.server_process import wait_for

        assert wait_for(lambda: aborted() is not None)
        shown = aborted()
        assert shown is not None
        last = shown["state"]["history"][-1]
        assert "deleted by admin (UNVEIL_ADMIN_TOKEN): cleanup" in json.dumps(last), last


def test_stopping_is_never_harder_than_starting(server: Server) -> None:
    with server.client() as api:
        api.put(f"{ENV}/flags/checkout", json=FLAG)
    editor, releaser = _token(server, "editor"), _token(server, "releaser")
    with server.client(editor) as api:
        assert api.post(f"{ENV}/releases", json={"plan": _plan()}).status_code == 403
    with server.client(releaser) as api:
        assert api.post(f"{ENV}/releases", json={"plan": _plan()}).status_code == 201
    with server.client(editor) as api:
        assert api.post(f"{ENV}/releases/r1/pause", json={"reason": "pager"}).status_code == 200
        assert api.post(f"{ENV}/releases/r1/resume").status_code == 403
        assert api.post(f"{ENV}/releases/r1/advance").status_code == 403
        assert api.post(f"{ENV}/releases/r1/abort").status_code == 200
    with server.client(releaser) as api:
        assert api.post(f"{ENV}/releases/r1/restart").status_code == 201


def _cli(server: Server, *args: str) -> Any:
    env = {"UNVEIL_URL": server.url, "UNVEIL_TOKEN": ADMIN_TOKEN, "UNVEIL_PROJECT": "shop"}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_the_release_commands_start_from_a_releases_file_and_steer(
    server: Server, tmp_path: Path
) -> None:
    with server.client() as api:
        api.put(f"{ENV}/flags/checkout", json=FLAG)
        api.put(f"{ENV}/flags/search", json=FLAG)
    releases = tmp_path / "releases.yaml"
    releases.write_text(
        "releases:\n"
        f"  - {json.dumps(_plan())}\n"
        f"  - {json.dumps({**_plan('search'), 'guards': [GUARD]})}\n",
        encoding="utf-8",
    )
    checked = _cli(server, "release", "check", str(releases))
    assert checked.exit_code == 0, checked.output
    assert "2 plans" in checked.output
    ambiguous = _cli(server, "release", "start", str(releases), "-e", "production")
    assert ambiguous.exit_code == 1
    assert "--flag" in ambiguous.output
    started = _cli(server, "release", "start", str(releases), "-e", "production", "-f", "search")
    assert started.exit_code == 0, started.output
    assert "r1" in started.output
    assert "running" in started.output
    listed = _cli(server, "release", "list", "-e", "production")
    assert "search" in listed.output
    assert "running" in listed.output
    paused = _cli(server, "release", "pause", "r1", "-e", "production", "-r", "checking logs")
    assert paused.exit_code == 0, paused.output
    assert "paused" in paused.output
    status = _cli(server, "release", "status", "r1", "-e", "production")
    assert "checking logs" in status.output
    refused = _cli(server, "release", "advance", "r1", "-e", "production")
    assert refused.exit_code == 1
    assert "409" in refused.output
    assert "resume it first" in refused.output
    resumed = _cli(server, "release", "resume", "r1", "-e", "production")
    assert resumed.exit_code == 0, resumed.output
    assert "running" in resumed.output
    advanced = _cli(server, "release", "advance", "r1", "-e", "production")
    assert advanced.exit_code == 0, advanced.output
    assert _default(server, "search") == {"rollout": {"off": 75, "on": 25}}
    aborted = _cli(server, "release", "abort", "r1", "-e", "production", "--keep-share")
    assert aborted.exit_code == 0, aborted.output
    assert _default(server, "search") == {"rollout": {"off": 75, "on": 25}}


@pytest.mark.parametrize("where", ["file", "releases"])
def test_release_check_names_every_problem_of_a_bad_plan(tmp_path: Path, where: str) -> None:
    plan = {**_plan(), "steps": [{"percent": 200}], "guards": [{"name": "x"}]}
    path = tmp_path / "plan.json"
    data = plan if where == "file" else {"releases": [_plan(), plan]}
    path.write_text(json.dumps(data), encoding="utf-8")
    result = CliRunner().invoke(main, ["release", "check", str(path)])
    assert result.exit_code == 1
    prefix = "releases[1]." if where == "releases" else ""
    assert f"{prefix}steps[0].percent" in result.output
    assert f"{prefix}guards[0]" in result.output


def test_flags_a_release_cannot_move_cleanly_are_refused(server: Server) -> None:
    three = {
        "kind": "string",
        "variants": {"a": "a", "b": "b", "c": "c"},
        "off_variant": "a",
        "default": {"rollout": {"a": 80, "b": 10, "c": 10}},
    }
    ahead = {**FLAG, "default": {"rollout": {"off": 80, "on": 20}}}
    with server.client() as api:
        for key, flag in (("three", three), ("ahead", ahead), ("dark", {**FLAG, "enabled": False})):
            assert api.put(f"{ENV}/flags/{key}", json=flag).status_code == 201
        plan = {**_plan("three"), "control": "a", "treatment": "b"}
        for body, words in (
            ({"plan": plan}, "also serves 'c'"),  # c's users would be moved too
            ({"plan": _plan("ahead")}, "more than the first step"),  # on's users would lose it
            ({"plan": _plan("dark")}, "is off"),
            ({"plan": _plan("dark"), "start_at": "2020-01-01T00:00:00Z"}, "in the past"),
        ):
            refused = api.post(f"{ENV}/releases", json=body)
            assert refused.status_code == 422, refused.text
            assert words in refused.text
        assert api.get(f"{ENV}/releases").json()["releases"] == []
        assert api.get(f"{ENV}/flags/three").json()["data"]["default"] == three["default"]


def test_command_bodies_are_read_strictly_and_nobody_approves_their_own_release(
    server: Server,
) -> None:
    with server.client() as api:
        api.put(f"{ENV}/flags/checkout", json=FLAG)
    rita, rob = _token(server, "releaser"), None
    with server.client() as api:
        made = api.post("/api/v1/tokens", json={"name": "rob", "kind": "admin", "role": "releaser"})
        rob = made.json()["secret"]
    with server.client(rita) as api:
        started = api.post(f"{ENV}/releases", json={"plan": _plan(require_approval=True)})
        assert started.json()["phase"] == "waiting_for_approval"
        own = api.post(f"{ENV}/releases/r1/approve")
        assert own.status_code == 403
        assert "someone else" in own.json()["error"]
    with server.client(rob) as api:
        assert api.post(f"{ENV}/releases/r1/approve").json()["phase"] == "running"
        assert api.post(f"{ENV}/releases/r1/advance", json={"force": True}).status_code == 400
        assert api.post(f"{ENV}/releases/r1/advance", json=[1, 2]).status_code == 400
        kept = api.post(f"{ENV}/releases/r1/abort", json={"keep_share": "yes"})
        assert kept.status_code == 400
        escape = api.post(f"{ENV}/releases/r1/pause", json={"reason": "ok\x1b[2J"})
        assert escape.status_code == 400
        assert escape.json()["problems"][0]["path"] == "body.reason"
        assert "control characters" in escape.text
        assert api.get(f"{ENV}/releases/r1").json()["phase"] == "running"
