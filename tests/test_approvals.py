"""Four-eyes approval end to end, with two real people (their own tokens) on a real server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from tests.server_process import Server, database, start_server, stop
from unveil.cli.main import main

ENV = "/api/v1/projects/shop/environments/production"
FLAG = {"variants": {"on": True, "off": False}, "default": "off", "description": "checkout"}


class People:
    """An editor, a releaser, another releaser and a viewer, each with a token of their own."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.tokens: dict[str, str] = {}
        with server.client() as api:
            for name, role in (("ed", "editor"), ("rita", "releaser"), ("rob", "releaser"),
                               ("vic", "viewer")):  # fmt: skip
                made = api.post(
                    "/api/v1/tokens", json={"name": name, "kind": "admin", "role": role}
                )
                assert made.status_code == 201, made.text
                self.tokens[name] = made.json()["secret"]

    def __call__(self, name: str) -> httpx.Client:
        return self.server.client(self.tokens[name])


@pytest.fixture
def people(tmp_path: Path) -> Iterator[People]:
    with database("sqlite", tmp_path) as url:
        server = start_server(url)
        try:
            with server.client() as api:
                assert api.put(f"{ENV}/flags/checkout", json=FLAG).status_code == 201
                on = api.put(f"{ENV}/settings", json={"requires_approval": True})
                assert on.json() == {"requires_approval": True}
            yield People(server)
        finally:
            stop(server)


def _flag(people: People) -> tuple[dict[str, Any], str]:
    with people("vic") as api:
        answer = api.get(f"{ENV}/flags/checkout")
        return answer.json()["data"], answer.headers["etag"]


def _ask(people: People, who: str, **changes: Any) -> dict[str, Any]:
    flag, etag = _flag(people)
    with people(who) as api:
        answer = api.put(
            f"{ENV}/flags/checkout",
            json={**flag, **changes},
            headers={"If-Match": etag},
            params={"reason": f"{who} asks"},
        )
    assert answer.status_code == 202, answer.text
    return dict(answer.json()["change_request"])


def test_a_change_waits_for_someone_else_and_then_applies_exactly_as_asked(
    people: People,
) -> None:
    before, _ = _flag(people)
    request = _ask(people, "ed", default="on")
    assert request["state"] == "open"
    assert request["diff"]["before"] == before
    assert request["diff"]["after"] == {**before, "default": "on"}
    assert _flag(people)[0] == before  # nothing changed yet
    with people("ed") as api:  # an editor may not approve at all
        assert api.post(f"{ENV}/changes/{request['id']}/approve").status_code == 403
    own = _ask(people, "rita", description="rita's")
    with people("rita") as api:
        refused = api.post(f"{ENV}/changes/{own['id']}/approve")
        assert refused.status_code == 403
        assert "someone else" in refused.json()["error"]
        approved = api.post(f"{ENV}/changes/{request['id']}/approve", json={"comment": "ok"})
    assert approved.status_code == 200, approved.text
    assert approved.json()["state"] == "applied"
    assert _flag(people)[0] == request["diff"]["after"]  # exactly the diff that was asked
    with people("vic") as api:
        entries = api.get(f"{ENV}/audit", params={"target": "checkout"}).json()["entries"]
    applied = [e for e in entries if e["action"] == "flag.update"]
    assert applied[-1]["actor"] == "ed"  # the change is the requester's...
    assert "approved by rita" in applied[-1]["reason"]  # ...and says who approved it
    actions = [e["action"] for e in entries]
    assert actions.count("change.opened") == 2
    assert "change.approved" in actions
    assert "change.applied" in actions


def test_a_stale_request_is_refused_and_says_so(people: People) -> None:
    first = _ask(people, "ed", description="first")
    second = _ask(people, "ed", default="on")
    with people("rita") as api:
        assert api.post(f"{ENV}/changes/{first['id']}/approve").status_code == 200
        stale = api.post(f"{ENV}/changes/{second['id']}/approve")
    assert stale.status_code == 409
    assert "changed since the request" in stale.json()["error"]
    assert stale.json()["change_request"]["state"] == "refused"
    flag, _ = _flag(people)
    assert flag["default"] == "off"  # the stale change was not applied over the first
    assert flag["description"] == "first"


def test_a_kill_switch_and_stopping_a_release_bypass_approval(people: People) -> None:
    plan = {
        "flag": "checkout",
        "control": "off",
        "treatment": "on",
        "steps": [{"percent": 5, "hold": "1h"}, {"percent": 100}],
    }
    with people("rita") as api:
        asked = api.post(f"{ENV}/releases", json={"plan": plan})
        assert asked.status_code == 202, asked.text
        release_request = asked.json()["change_request"]["id"]
    with people("rob") as api:
        assert api.post(f"{ENV}/changes/{release_request}/approve").status_code == 200
        (release,) = api.get(f"{ENV}/releases").json()["releases"]
    assert release["phase"] == "running"
    with people("rita") as api:  # moving a release on is a change: it waits too
        ahead = api.post(f"{ENV}/releases/{release['id']}/advance")
        assert ahead.status_code == 202, ahead.text
        assert ahead.json()["change_request"]["action"] == "release.advance"
    with people("ed") as api:  # pausing needs no approval
        assert api.post(f"{ENV}/releases/{release['id']}/pause").status_code == 200
    flag, etag = _flag(people)
    with people("ed") as api:
        off = api.put(
            f"{ENV}/flags/checkout",
            json={**flag, "enabled": False},
            headers={"If-Match": etag},
            params={"reason": "checkout is down"},
        )
    assert off.status_code == 200, off.text  # applied at once
    assert _flag(people)[0]["enabled"] is False
    with people("vic") as api:
        entries = api.get(f"{ENV}/audit", params={"target": "checkout"}).json()["entries"]
    last = [e for e in entries if e["action"] == "flag.update"][-1]
    assert last["reason"].startswith("emergency change")
    assert "checkout is down" in last["reason"]


def test_a_viewer_can_do_none_of_it_and_requests_can_be_withdrawn(people: People) -> None:
    request = _ask(people, "ed", description="maybe")
    flag, etag = _flag(people)
    with people("vic") as api:
        assert (
            api.put(f"{ENV}/flags/checkout", json=flag, headers={"If-Match": etag}).status_code
            == 403
        )
        for action in ("approve", "reject", "withdraw"):
            assert api.post(f"{ENV}/changes/{request['id']}/{action}").status_code == 403
        assert api.put(f"{ENV}/settings", json={"requires_approval": False}).status_code == 403
    with people("rita") as api:
        assert api.post(f"{ENV}/changes/{request['id']}/withdraw").status_code == 403
        commented = api.post(f"{ENV}/changes/{request['id']}/comments", json={"text": "why?"})
        assert commented.json()["comments"][0]["by"] == "rita"
    with people("ed") as api:
        withdrawn = api.post(f"{ENV}/changes/{request['id']}/withdraw")
        assert withdrawn.json()["state"] == "withdrawn"
        assert api.post(f"{ENV}/changes/{request['id']}/withdraw").status_code == 409
        listed = api.get(f"{ENV}/changes", params={"state": "withdrawn"}).json()["changes"]
        assert [c["id"] for c in listed] == [request["id"]]
        assert api.get(f"{ENV}/changes", params={"state": "nope"}).status_code == 422
        bad = api.put(f"{ENV}/flags/checkout", json={**flag, "default": "nowhere"},
                      headers={"If-Match": etag})  # fmt: skip
        assert bad.status_code == 422  # a request that could never apply is refused now
        stale = api.put(f"{ENV}/flags/checkout", json=flag, headers={"If-Match": '"999"'})
        assert stale.status_code == 412


def test_the_cli_asks_approves_and_turns_off_at_once(people: People) -> None:
    def cli(who: str, *args: str) -> Any:
        env = {
            "UNVEIL_URL": people.server.url,
            "UNVEIL_TOKEN": people.tokens[who],
            "UNVEIL_PROJECT": "shop",
        }
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    asked = cli("ed", "flags", "rollout", "checkout", "10", "-e", "production")
    assert asked.exit_code == 0, asked.output
    assert "change request c1 opened" in asked.output
    # the asker sees what the approver will: the field that moves
    assert '~ default: "off" -> {"rollout": {"on": 10, "off": 90}}' in asked.output, asked.output
    listed = cli("rita", "changes", "list", "-e", "production", "--state", "open")
    assert "c1" in listed.output
    shown = cli("rita", "changes", "show", "c1", "-e", "production")
    # a readable diff: the one field that moves, from what to what, not both flags whole
    assert '~ default: "off" -> {"rollout": {"on": 10, "off": 90}}' in shown.output, shown.output
    assert "before:" not in shown.output
    approved = cli("rita", "changes", "approve", "c1", "-e", "production", "-m", "go")
    assert approved.exit_code == 0, approved.output
    assert "applied" in approved.output
    assert _flag(people)[0]["default"]["rollout"] == {"on": 10, "off": 90}
    off = cli("ed", "flags", "disable", "checkout", "-e", "production", "-r", "incident")
    assert off.exit_code == 0, off.output
    assert "disabled" in off.output
    assert _flag(people)[0]["enabled"] is False


def test_a_document_request_shows_what_it_adds_changes_and_removes(
    people: People, tmp_path: Path
) -> None:
    # the request's diff once held the document before and only the keys after, so
    # `changes show` listed every flag as removed and none of what the file adds
    path = tmp_path / "flags.yaml"
    path.write_text("flags:\n  checkout: {default: 'on'}\n  search: {default: 'off'}\n")
    env = {"UNVEIL_URL": people.server.url, "UNVEIL_PROJECT": "shop"}
    asked = CliRunner().invoke(
        main,
        ["apply", "-f", str(path), "-e", "production"],
        env={**env, "UNVEIL_TOKEN": people.tokens["ed"]},
        catch_exceptions=False,
    )
    assert "change request c1 opened" in asked.output, asked.output
    assert "flags: 1 added, 1 changed" in asked.output, asked.output  # apply says what it asks
    assert "+ flag search" in asked.output
    with people("rita") as api:
        request = api.get(f"{ENV}/changes/c1").json()
    assert set(request["diff"]["after"]["flags"]) == {"checkout", "search"}
    assert request["diff"]["after"]["flags"]["search"]["default"] == "off"
    shown = CliRunner().invoke(
        main,
        ["changes", "show", "c1", "-e", "production"],
        env={**env, "UNVEIL_TOKEN": people.tokens["rita"]},
        catch_exceptions=False,
    )
    assert "flags: 1 added, 1 changed" in shown.output, shown.output
    assert "+ flag search" in shown.output
    assert '~ default: "off" -> "on"' in shown.output
    assert "- flag" not in shown.output
    with people("vic") as api:  # nothing applied while it waits
        assert "search" not in api.get(f"{ENV}/document").json()["flags"]
