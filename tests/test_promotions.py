"""Promotion from staging to production, against a real server process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from tests.server_process import ADMIN_TOKEN, Server, database, start_server, stop, wait_for
from unveil.cli.main import main

SHOP = "/api/v1/projects/shop"
STAGING = f"{SHOP}/environments/staging"
PRODUCTION = f"{SHOP}/environments/production"
BOOL = {"variants": {"on": True, "off": False}, "off_variant": "off"}


@pytest.fixture(params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    with database(request.param, tmp_path) as url:
        running = start_server(url, None, True, "--worker-interval", "0.2")
        try:
            yield running
        finally:
            stop(running)


def _put(api: httpx.Client, env: str, part: str, key: str, data: dict[str, Any]) -> None:
    path = f"{env}/{part}/{key}"
    found = api.get(path)
    headers = {"If-Match": found.headers["etag"]} if found.status_code == 200 else {}
    answer = api.put(path, json=data, headers=headers)
    assert answer.status_code in (200, 201), answer.text


def _items(api: httpx.Client, env: str) -> dict[str, Any]:
    return dict(api.get(f"{env}/document").json())


def _staging(api: httpx.Client) -> None:
    """Staging ahead of production: a changed flag, a new one, and a staging-only segment."""
    _put(api, PRODUCTION, "flags", "checkout", {**BOOL, "default": "off"})
    _put(api, PRODUCTION, "flags", "search", {**BOOL, "default": "off", "targets": {"on": ["ops"]}})
    _put(api, STAGING, "segments", "testers", {"include": ["qa-1"]})
    _put(api, STAGING, "flags", "checkout", {**BOOL, "default": {"rollout": {"on": 30, "off": 70}}})
    _put(
        api,
        STAGING,
        "flags",
        "search",
        {**BOOL, "default": "on", "targets": {"on": ["qa-1", "qa-2"]}, "description": "v2"},
    )
    _put(
        api,
        STAGING,
        "flags",
        "beta-banner",
        {**BOOL, "default": "off", "rules": [{"when": [{"segment": "testers"}], "serve": "on"}]},
    )


def test_a_dry_run_then_the_promotion_leaves_production_as_staging_and_audited(
    server: Server,
) -> None:
    with server.client() as api:
        _staging(api)
        version_before = api.get(f"{PRODUCTION}/document").headers["etag"]
        body = {"source": "staging", "target": "production", "flags": ["checkout", "search"]}
        dry = api.post(f"{SHOP}/promotions", json={**body, "dry_run": True})
        assert dry.status_code == 200, dry.text
        preview = dry.json()
        assert preview["applied"] is False
        assert preview["changed"]["flags"] == ["checkout", "search"]
        assert api.get(f"{PRODUCTION}/flags/checkout").json()["data"]["default"] == "off"
        assert api.get(f"{PRODUCTION}/document").headers["etag"] == version_before

        done = api.post(f"{SHOP}/promotions", json={**body, "reason": "verified in staging"})
        assert done.status_code == 200, done.text
        assert done.json()["applied"] is True
        staging, production = _items(api, STAGING), _items(api, PRODUCTION)
        for key in ("checkout", "search"):
            assert production["flags"][key] == staging["flags"][key]
        assert "beta-banner" not in production["flags"]  # only what was named is copied

        entries = api.get(f"{PRODUCTION}/audit").json()["entries"]
        promoted = [e for e in entries if e["action"] == "promotion.apply"]
        assert len(promoted) == 1
        audited = json.loads(promoted[0]["after"])
        assert audited["source"] == "staging"
        assert audited["source_version"] == preview["source_version"]
        assert audited["changed"]["flags"] == ["checkout", "search"]
        assert "verified in staging" in promoted[0]["reason"]
        applies = [e for e in entries if e["action"] == "document.apply"]
        assert len(applies) == 1  # one change: one version
        assert "promoted from staging" in applies[0]["reason"]


def test_targets_can_be_kept_and_a_missing_segment_is_refused_by_name(server: Server) -> None:
    with server.client() as api:
        _staging(api)
        kept = api.post(
            f"{SHOP}/promotions",
            json={
                "source": "staging",
                "target": "production",
                "flags": ["search"],
                "keep_targets": ["search"],
            },
        )
        assert kept.status_code == 200, kept.text
        search = api.get(f"{PRODUCTION}/flags/search").json()["data"]
        assert search["targets"] == {"on": ["ops"]}  # production's own, kept
        assert search["description"] == "v2"  # the rest copied

        before = _items(api, PRODUCTION)
        refused = api.post(
            f"{SHOP}/promotions",
            json={"source": "staging", "target": "production", "flags": ["beta-banner"]},
        )
        assert refused.status_code == 422, refused.text
        problems = refused.json()["problems"]
        assert any("segment 'testers'" in p["message"] for p in problems)
        assert problems[0]["path"] == "flags.beta-banner.rules[0].when[0].segment"
        assert _items(api, PRODUCTION) == before  # nothing written

        with_it = api.post(
            f"{SHOP}/promotions",
            json={
                "source": "staging",
                "target": "production",
                "flags": ["beta-banner"],
                "segments": ["testers"],
            },
        )
        assert with_it.status_code == 200, with_it.text
        assert "testers" in _items(api, PRODUCTION)["segments"]

        bad = api.post(
            f"{SHOP}/promotions",
            json={"source": "staging", "target": "production", "flags": ["nope"]},
        )
        assert bad.status_code == 422
        assert bad.json()["problems"] == [
            {"path": "flags[0]", "message": "no flag 'nope' in staging"}
        ]
        unknown = api.post(f"{SHOP}/promotions", json={"source": "qa", "target": "production"})
        assert unknown.status_code == 404
        assert "qa" in unknown.json()["error"]


def test_with_approval_required_a_promotion_becomes_a_change_request(server: Server) -> None:
    with server.client() as api:
        _staging(api)
        rita_token = {"name": "rita", "kind": "admin", "role": "releaser"}
        rita = api.post("/api/v1/tokens", json=rita_token).json()["secret"]
        required = api.put(f"{PRODUCTION}/settings", json={"requires_approval": True})
        assert required.status_code == 200
        before = _items(api, PRODUCTION)
        asked = api.post(
            f"{SHOP}/promotions",
            json={"source": "staging", "target": "production", "flags": ["checkout"]},
        )
        assert asked.status_code == 202, asked.text
        request = asked.json()["change_request"]
        assert request["action"] == "promotion.apply"
        assert request["diff"]["after"]["changed"]["flags"] == ["checkout"]
        assert _items(api, PRODUCTION) == before  # waits
    with server.client(rita) as other:
        approved = other.post(f"{PRODUCTION}/changes/{request['id']}/approve")
        assert approved.status_code == 200, approved.text
        assert approved.json()["state"] == "applied"
    with server.client() as api:
        staging, production = _items(api, STAGING), _items(api, PRODUCTION)
        assert production["flags"]["checkout"] == staging["flags"]["checkout"]


def test_the_cli_promotes_with_a_readable_diff_and_can_schedule_it(server: Server) -> None:
    with server.client() as api:
        _staging(api)
    runner = CliRunner()
    env = {"UNVEIL_URL": server.url, "UNVEIL_TOKEN": ADMIN_TOKEN, "UNVEIL_PROJECT": "shop"}
    args = ["promote", "--from", "staging", "--to", "production", "checkout"]
    dry = runner.invoke(main, [*args, "--dry-run"], env=env)
    assert dry.exit_code == 0, dry.output
    assert "~ flag checkout" in dry.output
    assert "default" in dry.output
    assert "dry run: nothing written" in dry.output
    at = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    later = runner.invoke(main, [*args, "--schedule", at], env=env)
    assert later.exit_code == 0, later.output
    assert "promotion.apply" in later.output
    with server.client() as api:

        def copied() -> bool:
            data = api.get(f"{PRODUCTION}/flags/checkout").json()["data"]
            return bool(data["default"] != "off")

        assert wait_for(copied, timeout=20)
    refused = runner.invoke(
        main, ["promote", "--from", "staging", "--to", "production", "beta-banner"], env=env
    )
    assert refused.exit_code == 1
    assert "testers" in refused.output
