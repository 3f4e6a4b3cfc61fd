"""Deploys beside releases, against a real server process, real HTTP targets and the CLI.

Verification runs real checks: a real HTTP process that answers 500 fails
(exit 5, evidence stored), one that answers 200 passes; a metric check
judges errors per exposure sent through the SDK events intake. The derived
views are walked end to end: a deploy without a flag's code, one with it
(deployed dark), the release, the deploy rollback that switches it off, and
the timeline that shows the four moments in order with their reasons.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
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
    sdk_key,
    start_server,
    stop,
    wait_for,
)
from unveil.cli.main import main
from unveil.core.logbuckets import bucket_of

ENV = "/api/v1/projects/shop/environments/production"
SERVICES = "/api/v1/projects/shop/services"
TARGET = Path(__file__).with_name("smoke_target.py")
OFF_FLAG = {"variants": {"on": True, "off": False}, "default": "off"}


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[Server]:
    with database("sqlite", tmp_path) as url:
        running = start_server(url)
        try:
            yield running
        finally:
            stop(running)


@contextmanager
def http_target(status: int, mode: str = "") -> Iterator[str]:
    """A real process on loopback that answers every GET with ``status`` (see its ``mode``)."""
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, str(TARGET), str(port), str(status), *([mode] if mode else [])],
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == b"ready"
        yield f"http://127.0.0.1:{port}/healthz"
    finally:
        process.kill()
        process.wait(timeout=10)


def _env(server: Server, token: str = ADMIN_TOKEN) -> dict[str, str]:
    return {"UNVEIL_URL": server.url, "UNVEIL_TOKEN": token, "UNVEIL_PROJECT": "shop"}


def _cli(server: Server, *args: str, token: str = ADMIN_TOKEN) -> Any:
    """The command in-process (click's runner), with the remote from the environment."""
    return CliRunner().invoke(main, list(args), env=_env(server, token), catch_exceptions=False)


def _process(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    """The command as a CI pipeline runs it: its own process, settings from the environment."""
    env = {**os.environ, **_env(server)}
    return subprocess.run(
        [sys.executable, "-m", "unveil.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _service(api: httpx.Client, name: str = "api") -> None:
    made = api.put(f"{SERVICES}/{name}", json={"owner": "team-checkout"})
    assert made.status_code == 201, made.text


def _flag(api: httpx.Client, key: str) -> tuple[dict[str, Any], str]:
    found = api.get(f"{ENV}/flags/{key}")
    assert found.status_code == 200, found.text
    return found.json()["data"], found.headers["ETag"]


# -- verification ------------------------------------------------------------------------------


def test_an_answer_that_never_ends_fails_within_the_timeout_and_a_huge_one_is_not_read_whole() -> (
    None
):
    """--timeout is the whole attempt's: a body trickling for ever used to hang verify."""
    from unveil.service.verification import MAX_BODY_READ, parse_checks, run_http

    with http_target(200, "trickle") as url, httpx.Client() as client:
        [check] = parse_checks([{"name": "slow", "http": url, "timeout": "1s"}])
        started = time.monotonic()
        evidence = run_http(check, client)
        assert time.monotonic() - started < 5
        assert evidence["passed"] is False
        assert "1s" in evidence["problem"], evidence["problem"]
    with http_target(200, "huge") as url, httpx.Client() as client:
        [status_only, wants_text] = parse_checks(
            [
                {"name": "status", "http": url, "timeout": "20s"},
                {"name": "text", "http": url, "timeout": "20s", "contains": "never there"},
            ]
        )
        passed = run_http(status_only, client)
        assert passed["passed"] is True, passed
        assert passed["body"] == "x" * 500
        failed = run_http(wants_text, client)
        assert failed["passed"] is False
        assert f"first {MAX_BODY_READ} bytes" in failed["problem"], failed["problem"]


def test_a_target_answering_500_fails_verification_and_200_passes(sqlite_server: Server) -> None:
    server = sqlite_server
    with server.client() as api:
        _service(api)
        api.put(f"{ENV}/flags/checkout", json=OFF_FLAG)
    recorded = _process(server, "deploy", "record", "-s", "api", "-v", "1.4.0", "-e", "production")
    assert recorded.returncode == 0, recorded.stderr
    assert "recorded d1" in recorded.stdout

    with http_target(500) as url:
        failed = _process(
            server, "deploy", "verify", "-e", "production", "-s", "api", "--http", url
        )
    assert failed.returncode == 5, (failed.stdout, failed.stderr)
    assert "FAILED  http-1 (http): answered 500, expected 200" in failed.stdout
    with server.client() as api:
        deploy = api.get(f"{ENV}/deploys/d1").json()
        assert deploy["verified"] == "failed"
        (check,) = deploy["verification"]["checks"]
        assert (check["status"], check["passed"], check["url"]) == (500, False, url)
        assert '"broken"' in check["body"]
        # a release that needs a verified deploy of the service does not start
        plan = {
            "flag": "checkout",
            "control": "off",
            "treatment": "on",
            "steps": [{"percent": 10, "hold": "1h"}, {"percent": 100}],
            "options": {"requires_verified_deploy": "api"},
        }
        refused = api.post(f"{ENV}/releases", json={"plan": plan})
        assert refused.status_code == 422, refused.text
        (problem,) = refused.json()["problems"]
        assert problem["path"] == "options.requires_verified_deploy"
        assert "failed its verification" in problem["message"]

    with http_target(200) as url:
        passed = _process(
            server,
            "deploy", "verify", "-e", "production", "-s", "api", "--http", url,
            "--expect-json", "status=ok", "--expect-text", "ok",
        )  # fmt: skip
    assert passed.returncode == 0, (passed.stdout, passed.stderr)
    assert "verification passed" in passed.stdout
    with server.client() as api:
        deploy = api.get(f"{ENV}/deploys/d1").json()
        assert deploy["verified"] == "passed"
        assert deploy["verification"]["checks"][0]["status"] == 200
        assert api.post(f"{ENV}/releases", json={"plan": plan}).status_code == 201
        marks = api.get(f"{ENV}/timeline").json()["marks"]
    verified = [m for m in marks if m["action"] == "deploy.verified"]
    assert [m["result"] for m in verified] == ["failed", "passed"]


def _events(server: Server, flag: str, at: datetime, exposures: int, errors: int) -> None:
    """``exposures`` contexts of ``flag`` and ``errors`` errors among them, at ``at``."""
    key = sdk_key(server.database_url)
    stamp = at.isoformat()
    batch: list[dict[str, Any]] = [
        {"kind": "exposure", "flag": flag, "variant": "on", "at": stamp} for _ in range(exposures)
    ]
    batch.append(
        {
            "kind": "metric",
            "metric": "errors",
            "count": errors,
            "sum": float(errors),
            "buckets": {str(bucket_of(1.0)): errors},
            "variants": {flag: "on"},
            "at": stamp,
        }
    )
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as sdk:
        for start in range(0, len(batch), 1000):
            sent = sdk.post("/sdk/v1/events", json={"events": batch[start : start + 1000]})
            assert sent.status_code == 202, sent.text


def test_a_metric_check_fails_when_the_error_rate_doubles_after_the_deploy(
    sqlite_server: Server,
) -> None:
    server = sqlite_server
    moment = int((datetime.now(UTC) - timedelta(seconds=75)).timestamp()) // 10 * 10
    deployed_at = datetime.fromtimestamp(moment, UTC)  # on a window's edge: no window is mixed
    with server.client() as api:
        _service(api)
        made = api.post(
            f"{ENV}/deploys",
            json={"service": "api", "version": "2.0.0", "at": deployed_at.isoformat()},
        )
        assert made.status_code == 201, made.text
    # per 10-second window: 400 requests each side; 4% errors before, 8% after on "checkout",
    # 4% on both sides on "search" (the healthy comparison the same judge must pass)
    for k in range(6):
        before = deployed_at - timedelta(seconds=60 - 10 * k - 5)
        after = deployed_at + timedelta(seconds=10 * k + 5)
        _events(server, "checkout", before, 400, 16)
        _events(server, "checkout", after, 400, 32)
        _events(server, "search", before, 400, 16)
        _events(server, "search", after, 400, 16)

    def written() -> bool:
        params = {
            "flag": "search",
            "metric": "errors",
            "since": (deployed_at - timedelta(minutes=2)).isoformat(),
        }
        with server.client() as api:
            windows = api.get(f"{ENV}/metrics", params=params).json()["windows"]
        return sum(w["count"] for w in windows) == 16 * 12

    assert wait_for(written, timeout=30)
    window = ("--minutes", "1", "--no-wait")
    doubled = _cli(server, "deploy", "verify", "-e", "production", "-s", "api",
                   "--error-rate", "checkout:errors", *window)  # fmt: skip
    assert doubled.exit_code == 5, doubled.output
    with server.client() as api:
        (check,) = api.get(f"{ENV}/deploys/d1").json()["verification"]["checks"]
    assert check["passed"] is False
    assert check["problem"].startswith("regression")
    assert (check["before"]["rate"], check["after"]["rate"]) == (0.04, 0.08)
    assert check["judge"]["decision"] == "fail"

    healthy = _cli(server, "deploy", "verify", "-e", "production", "-s", "api",
                   "--error-rate", "search:errors", *window)  # fmt: skip
    assert healthy.exit_code == 0, healthy.output
    with server.client() as api:
        (check,) = api.get(f"{ENV}/deploys/d1").json()["verification"]["checks"]
    assert check["passed"] is True
    assert check["before"]["exposures"] == check["after"]["exposures"] == 2400


# -- the derived views, end to end --------------------------------------------------------------


def _tree(root: Path, with_flag: bool) -> Path:
    root.mkdir()
    uses = 'if client.enabled("new-checkout", ctx):\n    pay()\n' if with_flag else "pay()\n"
    (root / "app.py").write_text(f"import unveil\nclient = unveil.Client()\n{uses}")
    return root


def test_a_deploy_rollback_takes_the_release_of_its_flag_with_it(
    server: Server, tmp_path: Path
) -> None:
    with server.client() as api:
        _service(api)
        assert api.put(f"{ENV}/flags/new-checkout", json=OFF_FLAG).status_code == 201
    v1, v2 = _tree(tmp_path / "v1", False), _tree(tmp_path / "v2", True)
    first = _cli(server, "deploy", "record", "-s", "api", "-v", "1.0.0", "-e", "production",
                 "--scan", str(v1), "-r", "first cut")  # fmt: skip
    assert first.exit_code == 0, first.output
    second = _cli(server, "deploy", "record", "-s", "api", "-v", "1.1.0", "-e", "production",
                  "--scan", str(v2), "--commit", "abc123", "-r", "new checkout, dark")  # fmt: skip
    assert second.exit_code == 0, second.output
    assert "carries 1 flag(s): new-checkout" in second.output

    shown = _cli(server, "status", "-e", "production")
    assert (
        "new-checkout  (api): referenced by deployed code, not released to anyone" in shown.output
    )
    with server.client() as api:
        status = api.get(f"{ENV}/status").json()
        assert [d["flag"] for d in status["deployed_dark"]] == ["new-checkout"]
        data, etag = _flag(api, "new-checkout")
        released = api.put(
            f"{ENV}/flags/new-checkout",
            json={**data, "default": "on"},
            params={"reason": "launch day"},
            headers={"If-Match": etag},
        )
        assert released.status_code == 200, released.text
        assert api.get(f"{ENV}/status").json()["deployed_dark"] == []

    back = _cli(server, "deploy", "rollback", "-s", "api", "-e", "production",
                "-r", "checkout errors")  # fmt: skip
    assert back.exit_code == 0, back.output
    assert "release follows: new-checkout switched off" in back.output

    with server.client() as api:
        data, _ = _flag(api, "new-checkout")
        assert data["enabled"] is False
        deploys = api.get(f"{ENV}/deploys").json()["deploys"]
        assert [(d["id"], d["version"], d["rollback"]) for d in deploys] == [
            ("d3", "1.0.0", True),
            ("d2", "1.1.0", False),
            ("d1", "1.0.0", False),
        ]
        marks = api.get(f"{ENV}/timeline").json()["marks"]
        audit = api.get(f"{ENV}/audit").json()
    moments = [
        (m["action"], m["summary"], m["reason"]) for m in marks if m["action"] != "flag.create"
    ]
    assert moments[0] == ("deploy.recorded", "api deployed 1.0.0", "first cut")
    assert moments[1] == ("deploy.recorded", "api deployed 1.1.0 (abc123)", "new checkout, dark")
    assert moments[2] == ("flag.update", "flag new-checkout released", "launch day")
    assert moments[3] == ("deploy.rolled_back", "api rolled back to 1.0.0", "checkout errors")
    assert moments[4][:2] == ("flag.update", "flag new-checkout switched off")
    assert moments[4][2].startswith("deploy d3 rolled api back to 1.0.0")
    assert "released after d2" in moments[4][2]
    assert [m["actor"] for m in marks][-1] == "deploy:d3"
    entries = audit["entries"] if isinstance(audit, dict) else audit
    assert any(e["action"] == "deploy.rolled_back" for e in entries)
    lines = _cli(server, "timeline", "-e", "production").output.splitlines()
    assert "api rolled back to 1.0.0" in lines[-2]
    assert "flag new-checkout switched off" in lines[-1]
    # back from 1.0.0 there is no older version: not to 1.1.0, the one rolled back from
    again = _cli(server, "deploy", "rollback", "-s", "api", "-e", "production")
    assert again.exit_code == 1
    assert "version: service 'api' has no older version deployed here" in again.output
    with server.client() as api:
        assert len(api.get(f"{ENV}/deploys").json()["deploys"]) == 3


def test_keep_and_ask_let_a_deploy_rollback_leave_the_flag_or_open_a_request(
    sqlite_server: Server,
) -> None:
    server = sqlite_server
    refs = {"references": {"beta": ["app.py:3"]}}
    with server.client() as api:
        _service(api)
        api.put(f"{ENV}/flags/beta", json=OFF_FLAG)
        api.post(f"{ENV}/deploys", json={"service": "api", "version": "a1", "references": {}})
        api.post(f"{ENV}/deploys", json={"service": "api", "version": "b2", **refs})
        data, etag = _flag(api, "beta")
        api.put(f"{ENV}/flags/beta", json={**data, "default": "on"}, headers={"If-Match": etag})
        refused = api.put(f"{ENV}/deploy-settings", json={"on_deploy_rollback": "never"})
        assert refused.status_code == 400
        assert (
            api.put(f"{ENV}/deploy-settings", json={"on_deploy_rollback": "ask"}).status_code == 200
        )
        # "a1" then "b2" are not semver: "a1" was deployed first, so it is the older one
        back = api.post(f"{ENV}/deploys", json={"service": "api", "version": "a1"}).json()
        assert back["rollback"] is True
        (followed,) = back["release_follows"]
        assert followed["action"] == "ask"
        assert _flag(api, "beta")[0]["default"] == "on"  # still on: a request waits
        (request,) = api.get(f"{ENV}/changes", params={"state": "open"}).json()["changes"]
        assert request["id"] == followed["change_request"]
        assert request["requester"] == "deploy:d3"

        api.put(f"{ENV}/deploy-settings", json={"on_deploy_rollback": "keep"})
        api.post(f"{ENV}/deploys", json={"service": "api", "version": "b2", **refs})
        for enabled in (False, True):  # released again after this deploy brought the code back
            data, etag = _flag(api, "beta")
            changed = api.put(
                f"{ENV}/flags/beta", json={**data, "enabled": enabled}, headers={"If-Match": etag}
            )
            assert changed.status_code == 200, changed.text
        kept = api.post(f"{ENV}/deploys", json={"service": "api", "rollback": True}).json()
        assert (kept["version"], kept["release_follows"][0]["action"]) == ("a1", "keep")
        assert _flag(api, "beta")[0]["enabled"] is not False
        status = api.get(f"{ENV}/status").json()
        assert status["released_without_code"] == [
            {"flag": "beta", "why": "released, but no current deploy references it"}
        ]
        # a version whose code was never scanned: nothing is known, nothing follows
        api.post(f"{ENV}/deploys", json={"service": "api", "version": "b2", **refs})
        back_to = {"service": "api", "version": "0.0.1", "rollback": True}
        unknown = api.post(f"{ENV}/deploys", json=back_to).json()
        assert (unknown["rollback"], unknown["references"]) == (True, None)
        assert unknown["release_follows"] == []
        assert api.get(f"{ENV}/status").json()["scanned"] is False


# -- bad input ---------------------------------------------------------------------------------


def test_bad_input_is_refused_naming_the_field_and_nothing_is_recorded(
    sqlite_server: Server, tmp_path: Path
) -> None:
    server = sqlite_server
    unknown = _cli(server, "deploy", "record", "-s", "nope", "-v", "1", "-e", "production")
    assert unknown.exit_code == 1
    assert "service: no service 'nope' in project 'shop'" in unknown.output
    with server.client() as api:
        _service(api)
        huge = api.post(f"{ENV}/deploys", json={"service": "api", "version": "9" * 10_000_000})
        assert huge.status_code == 422, huge.text[:300]
        assert [p["path"] for p in huge.json()["problems"]] == ["version"]
        bad = api.post(
            f"{ENV}/deploys",
            json={"service": "api", "version": "1 2", "link": "ftp://x", "at": "yesterday"},
        )
        assert sorted(p["path"] for p in bad.json()["problems"]) == ["at", "link", "version"]
    missing = _cli(server, "deploy", "record", "-s", "api", "-v", "1", "-e", "production",
                   "--scan", str(tmp_path / "not-there"))  # fmt: skip
    assert missing.exit_code != 0
    assert "does not exist" in missing.output
    long = _cli(server, "deploy", "record", "-s", "api", "-v", "x" * 5000, "-e", "production")
    assert long.exit_code == 1
    assert "version: " in long.output
    with server.client() as api:
        assert api.get(f"{ENV}/deploys").json()["deploys"] == []
        api.post(f"{ENV}/deploys", json={"service": "api", "version": "1.0.0"})
    not_http = _cli(server, "deploy", "verify", "-e", "production", "-s", "api",
                    "--http", "ftp://example.com/health")  # fmt: skip
    assert not_http.exit_code == 1, not_http.output
    assert "checks[0].http: must be an http:// or https:// URL" in not_http.output
    with server.client() as api:
        assert api.get(f"{ENV}/deploys/d1").json()["verified"] is None
        refused = api.post(
            f"{ENV}/deploys/d1/verification",
            json={"result": "passed", "checks": [{"name": "x", "passed": False}]},
        )
        assert refused.status_code == 422
        assert refused.json()["problems"][0]["path"] == "result"
        assert api.get(f"{ENV}/timeline").json()["marks"][-1]["action"] == "deploy.recorded"


def test_a_deployer_token_records_deploys_and_changes_nothing_else(sqlite_server: Server) -> None:
    server = sqlite_server
    with server.client() as api:
        made = api.post("/api/v1/tokens", json={"name": "ci", "kind": "admin", "role": "deployer"})
        assert made.status_code == 201, made.text
        secret = made.json()["secret"]
    with server.client(secret) as ci:
        assert ci.put(f"{SERVICES}/api", json={}).status_code == 201
        assert ci.post(f"{ENV}/deploys", json={"service": "api", "version": "1"}).status_code == 201
        assert ci.get(f"{ENV}/status").status_code == 200
        assert ci.put(f"{ENV}/flags/x", json=OFF_FLAG).status_code == 403
        assert (
            ci.put(f"{ENV}/deploy-settings", json={"on_deploy_rollback": "keep"}).status_code == 403
        )
    with server.client() as api:
        assert api.get(f"{ENV}/deploys").json()["deploys"][0]["actor"] == "ci"


def test_deploys_rollbacks_and_verifications_are_announced_as_webhooks(tmp_path: Path) -> None:
    import json

    from tests.test_webhooks import FAST, Receiver

    receiver = Receiver(_free_port(), tmp_path / "received.jsonl")
    receiver.start()
    events = ["deploy.recorded", "deploy.rolled_back", "deploy.verified", "flag.switched_off"]
    try:
        with database("sqlite", tmp_path) as url:
            server = start_server(url, None, True, *FAST)
            try:
                with server.client() as api:
                    hook = api.post(
                        "/api/v1/projects/shop/webhooks",
                        json={"url": receiver.url, "events": events},
                    )
                    assert hook.status_code == 201, hook.text
                    _service(api)
                    api.put(f"{ENV}/flags/beta", json=OFF_FLAG)
                    first = {"service": "api", "version": "1.0.0", "references": {}}
                    api.post(f"{ENV}/deploys", json=first)
                    refs = {"beta": ["app.py:1"]}
                    api.post(
                        f"{ENV}/deploys",
                        json={"service": "api", "version": "1.1.0", "references": refs},
                    )
                    data, etag = _flag(api, "beta")
                    api.put(
                        f"{ENV}/flags/beta",
                        json={**data, "default": "on"},
                        headers={"If-Match": etag},
                    )
                    api.post(f"{ENV}/deploys", json={"service": "api", "version": "1.0.0"})
                    check = {"name": "smoke", "kind": "http", "passed": True}
                    stored = api.post(
                        f"{ENV}/deploys/d3/verification",
                        json={"result": "passed", "checks": [check]},
                    )
                    assert stored.status_code == 200, stored.text

                def got() -> list[str]:
                    return [json.loads(r["body"])["event"] for r in receiver.received()]

                assert wait_for(lambda: len(got()) == 5)
                assert sorted(got()) == sorted(
                    [
                        "deploy.recorded",
                        "deploy.recorded",
                        "deploy.rolled_back",
                        "flag.switched_off",
                        "deploy.verified",
                    ]
                )
                bodies = [json.loads(r["body"]) for r in receiver.received()]
                off = next(b for b in bodies if b["event"] == "flag.switched_off")
                assert off["actor"] == "deploy:d3"
                assert off["reason"].startswith("deploy d3 rolled api back to 1.0.0")
            finally:
                stop(server)
    finally:
        receiver.stop()


def test_a_release_due_later_takes_its_first_step_once_the_deploy_passed(tmp_path: Path) -> None:
    plan = {
        "flag": "checkout",
        "control": "off",
        "treatment": "on",
        "steps": [{"percent": 10, "hold": "1h"}, {"percent": 100}],
        "options": {"requires_verified_deploy": "api"},
    }
    fast = ("--release-tick", "0.3", "--worker-interval", "0.2")
    with database("sqlite", tmp_path) as url:
        server = start_server(url, None, True, *fast)
        try:
            with server.client() as api:
                _service(api)
                api.put(f"{ENV}/flags/checkout", json=OFF_FLAG)
                api.post(f"{ENV}/deploys", json={"service": "api", "version": "1.0.0"})
                soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
                made = api.post(f"{ENV}/releases", json={"plan": plan, "start_at": soon})
                assert made.status_code == 201, made.text
                assert made.json()["phase"] == "scheduled"

                def release() -> dict[str, Any]:
                    return dict(api.get(f"{ENV}/releases/r1").json())

                assert wait_for(lambda: release()["state"].get("waiting") == "deploy")
                held = release()
                assert held["phase"] == "scheduled"
                assert "api" in held["state"]["history"][-1]["text"]
                assert "was not verified" in held["state"]["history"][-1]["text"]
                assert _flag(api, "checkout")[0]["default"] == "off"
                forced = api.post(f"{ENV}/releases/r1/start")
                assert forced.status_code == 422, forced.text
                assert forced.json()["problems"][0]["path"] == "options.requires_verified_deploy"

                check = {"name": "smoke", "kind": "http", "passed": True}
                passed = api.post(
                    f"{ENV}/deploys/d1/verification", json={"result": "passed", "checks": [check]}
                )
                assert passed.status_code == 200, passed.text
                assert wait_for(lambda: release()["phase"] == "running")
        finally:
            stop(server)
