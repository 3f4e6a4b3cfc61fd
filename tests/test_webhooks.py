"""Webhooks against a real server process and a real receiver process on loopback.

The signature is checked with the recipe of docs/governance.md, copied here
exactly (a test below also checks that the doc still says it).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server_process import (
    Server,
    _free_port,
    database,
    start_server,
    stop,
    wait_for,
)

ENV = "/api/v1/projects/shop/environments/production"
HOOKS = "/api/v1/projects/shop/webhooks"
RECEIVER = Path(__file__).with_name("webhook_receiver.py")
GOVERNANCE = Path(__file__).resolve().parents[1] / "docs" / "governance.md"
#: retries within a fraction of a second, so that tests wait for events, not for backoff
FAST = ("--webhook-retry-base", "0.2", "--worker-interval", "0.2")


# -- the recipe of docs/governance.md, exactly -------------------------------------------------


def verify(secret: str, header: str, body: bytes, tolerance: int = 300) -> bool:
    """True if the Unveil-Signature header signs this body with this secret."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp, signature = int(parts["t"]), parts["v1"]
    except (KeyError, ValueError):
        return False  # not a signature at all
    if abs(time.time() - timestamp) > tolerance:
        return False  # too old (or from the future): a replay
    expected = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, signature)


# -- a receiver process ------------------------------------------------------------------------


@dataclass
class Receiver:
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self, *options: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(RECEIVER), str(self.port), str(self.log), *options],
            stdout=subprocess.PIPE,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == b"ready"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def received(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    made = Receiver(_free_port(), tmp_path / "received.jsonl")
    try:
        yield made
    finally:
        made.stop()


@contextmanager
def serving(url: str, *extra: str, seed: bool = True) -> Iterator[Server]:
    running = start_server(url, None, seed, *extra)
    try:
        yield running
    finally:
        stop(running)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with database(request.param, tmp_path) as url:
        yield url


def _subscribe(api: httpx.Client, url: str, *events: str, **more: Any) -> dict[str, Any]:
    made = api.post(HOOKS, json={"url": url, "events": list(events), **more})
    assert made.status_code == 201, made.text
    return dict(made.json())


def _flag(api: httpx.Client, key: str, **fields: Any) -> httpx.Response:
    path = f"{ENV}/flags/{key}"
    current = api.get(path)
    headers = {"If-Match": current.headers["etag"]} if current.status_code == 200 else {}
    answer = api.put(path, json={"default": "off", **fields}, headers=headers)
    assert answer.status_code < 300, answer.text
    return answer


def _deliveries(api: httpx.Client, hook: int) -> list[dict[str, Any]]:
    answer = api.get(f"{HOOKS}/{hook}/deliveries")
    assert answer.status_code == 200, answer.text
    return list(answer.json()["deliveries"])


def _oldest(api: httpx.Client, hook: int) -> dict[str, Any]:
    """The subscription's oldest delivery, or an empty one while none is made yet."""
    found = _deliveries(api, hook)
    return found[-1] if found else {"state": None, "attempts": []}


def _newest(api: httpx.Client, hook: int) -> dict[str, Any]:
    """The subscription's newest delivery, or an empty one while none is made yet."""
    found = _deliveries(api, hook)
    return found[0] if found else {"state": None, "attempts": []}


# -- the tests ---------------------------------------------------------------------------------


def _openssl_hex(secret: str, header: str, body: bytes, where: Path) -> str:
    """The shell one-liner of docs/governance.md, run as written."""
    if shutil.which("openssl") is None:
        if os.environ.get("UNVEIL_TEST_REQUIRE_SERVICES"):
            pytest.fail("openssl (Debian's openssl package) is required here")
        pytest.skip("openssl is not installed")
    (line,) = [x for x in GOVERNANCE.read_text().splitlines() if x.startswith("printf ")]
    (where / "body.json").write_bytes(body)
    timestamp = dict(item.split("=", 1) for item in header.split(","))["t"]
    done = subprocess.run(
        ["bash", "-c", line],
        cwd=where,
        env={"T": timestamp, "SECRET": secret, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        check=True,
    )
    return done.stdout.decode().strip()


def test_deliveries_are_signed_as_the_doc_says_and_carry_the_change(
    database_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.start()
    with serving(database_url, *FAST) as server, server.client() as api:
        hook = _subscribe(api, receiver.url, "flag.changed", "flag.switched_off")
        assert hook["secret"].startswith("whsec_")
        assert "secret" not in api.get(f"{HOOKS}/{hook['id']}").json()
        assert "secret" not in api.get(HOOKS).text
        _flag(api, "checkout", description="new checkout")
        _flag(api, "checkout", enabled=False)
        assert wait_for(lambda: len(receiver.received()) == 2)
        first, second = receiver.received()
        for got in (first, second):
            body = got["body"].encode()
            assert verify(hook["secret"], got["headers"]["Unveil-Signature"], body)
            assert not verify("whsec_another", got["headers"]["Unveil-Signature"], body)
            assert not verify(hook["secret"], got["headers"]["Unveil-Signature"], body + b" ")
            signature = got["headers"]["Unveil-Signature"]
            assert f"v1={_openssl_hex(hook['secret'], signature, body, tmp_path)}" in signature
        created, off = json.loads(first["body"]), json.loads(second["body"])
        assert created["event"] == "flag.changed"
        assert created["action"] == "flag.create"
        assert off["event"] == "flag.switched_off"
        assert second["headers"]["Unveil-Event"] == "flag.switched_off"
        assert second["headers"]["Unveil-Delivery"] == str(off["id"])
        assert {k: off[k] for k in ("project", "environment", "target", "actor")} == {
            "project": "shop",
            "environment": "production",
            "target": "checkout",
            "actor": "admin (UNVEIL_ADMIN_TOKEN)",
        }
        audit = api.get(f"{ENV}/audit", params={"target": "checkout"}).json()["entries"]
        assert off["audit_id"] == audit[-1]["id"]
        assert off["environment_version"] == audit[-1]["environment_version"]
        assert set(off) == {
            "id",
            "event",
            "action",
            "occurred_at",
            "project",
            "environment",
            "target",
            "actor",
            "reason",
            "environment_version",
            "audit_id",
            "explanation",
        }
        shown = _deliveries(api, hook["id"])
        assert [d["state"] for d in shown] == ["delivered", "delivered"]
        assert shown[0]["attempts"][0]["status"] == 200
        assert shown[0]["body"] == off


def test_the_doc_holds_the_recipe_this_test_uses() -> None:
    import inspect

    doc = GOVERNANCE.read_text()
    assert inspect.getsource(verify) in doc
    assert "| openssl dgst -sha256 -hmac" in doc


def test_the_recipe_says_no_to_a_header_that_is_not_a_signature() -> None:
    """The review: the doc's recipe raised (a 500 in the receiver) on a forged header."""
    from unveil.service.webhooks import sign

    now = int(time.time())
    good = sign("whsec_s", now, b"{}")
    assert verify("whsec_s", good, b"{}")
    for header in ("", "garbage", "t=abc,v1=00", f"t={now}", "v1=00", f"t={now},v2=00", "=,="):
        assert not verify("whsec_s", header, b"{}"), header
    assert not verify("whsec_s", sign("whsec_s", now - 301, b"{}"), b"{}")


def test_a_receiver_down_for_a_while_gets_every_event_in_order_once_back(
    database_url: str, receiver: Receiver
) -> None:
    with serving(database_url, *FAST) as server, server.client() as api:
        hook = _subscribe(api, receiver.url, "flag.changed")
        for i in range(5):
            _flag(api, f"f{i}")
        # down for a while: the first delivery is tried again and again, the rest wait
        assert wait_for(lambda: len(_oldest(api, hook["id"])["attempts"]) >= 3)
        first, *rest = reversed(_deliveries(api, hook["id"]))
        assert all(d["attempts"] == [] for d in rest)  # per subscription, one at a time
        assert first["attempts"][0]["status"] is None  # nobody answered
        assert "Connect" in first["attempts"][0]["error"]
        receiver.start()
        delivered = ["delivered"] * 5
        assert wait_for(
            lambda: [d["state"] for d in _deliveries(api, hook["id"])] == delivered, timeout=60
        )
        bodies = [json.loads(r["body"]) for r in receiver.received()]
        assert [b["target"] for b in bodies] == [f"f{i}" for i in range(5)]  # each once, in order


def test_a_hanging_receiver_never_delays_a_change(database_url: str, receiver: Receiver) -> None:
    receiver.start("--hang", "30")
    with serving(database_url, *FAST) as server, server.client() as api:
        hook = _subscribe(api, receiver.url, "flag.changed")
        _flag(api, "slow")
        # the delivery is in flight and hanging, held by the receiver
        assert wait_for(lambda: [d["state"] for d in _deliveries(api, hook["id"])] == ["sending"])
        latencies = []
        for i in range(10):
            started = time.monotonic()
            _flag(api, "slow", description=f"change {i}")
            latencies.append(time.monotonic() - started)
        assert max(latencies) < 2.0, latencies
        # the hanging attempt ends at the read timeout, recorded as such
        assert wait_for(lambda: bool(_oldest(api, hook["id"])["attempts"]), timeout=20)
        attempt = _deliveries(api, hook["id"])[-1]["attempts"][0]
        assert attempt["status"] is None
        assert "Timeout" in attempt["error"]
        assert 9_000 <= attempt["duration_ms"] <= 15_000
        # removing the subscription while an attempt hangs drops it; the attempt ends unheard
        assert wait_for(lambda: _oldest(api, hook["id"])["state"] == "sending")
        assert api.delete(f"{HOOKS}/{hook['id']}").status_code == 204
        assert api.get(f"{HOOKS}/{hook['id']}/deliveries").status_code == 404


def test_kill_9_between_the_change_and_its_delivery_still_delivers_after_restart(
    database_url: str, receiver: Receiver
) -> None:
    with serving(database_url, *FAST) as server:
        with server.client() as api:
            hook = _subscribe(api, receiver.url, "flag.changed")
            _flag(api, "survivor")
        server.kill()  # the receiver is not up: nothing can have been delivered
    receiver.start()
    with serving(database_url, *FAST, seed=False) as again, again.client() as api:
        assert wait_for(lambda: len(receiver.received()) >= 1, timeout=30)
        body = json.loads(receiver.received()[0]["body"])
        assert body["target"] == "survivor"
        assert verify(
            hook["secret"],
            receiver.received()[0]["headers"]["Unveil-Signature"],
            receiver.received()[0]["body"].encode(),
        )
        assert _deliveries(api, hook["id"])[0]["state"] == "delivered"


def test_redelivery_sends_the_same_body_again_and_is_audited(
    database_url: str, receiver: Receiver
) -> None:
    receiver.start()
    with serving(database_url, *FAST) as server, server.client() as api:
        hook = _subscribe(api, receiver.url, "flag.changed")
        _flag(api, "again")
        assert wait_for(lambda: len(receiver.received()) == 1)
        delivery = _deliveries(api, hook["id"])[0]
        redone = api.post(f"{HOOKS}/{hook['id']}/deliveries/{delivery['id']}/redeliver")
        assert redone.status_code == 200, redone.text
        assert wait_for(lambda: len(receiver.received()) == 2)
        first, second = receiver.received()
        assert first["body"] == second["body"]
        assert first["headers"]["Unveil-Delivery"] == second["headers"]["Unveil-Delivery"]
        assert wait_for(lambda: len(_newest(api, hook["id"])["attempts"]) == 2)
        missing = api.post(f"{HOOKS}/{hook['id']}/deliveries/999999/redeliver")
        assert missing.status_code == 404


def test_a_slack_subscription_gets_one_line_of_text(database_url: str, receiver: Receiver) -> None:
    receiver.start()
    with serving(database_url, *FAST) as server, server.client() as api:
        _subscribe(api, receiver.url, "flag.switched_off", format="slack")
        _flag(api, "pay")  # a change that is not a switch-off: not sent
        current = api.get(f"{ENV}/flags/pay")
        off = api.put(
            f"{ENV}/flags/pay",
            json={"default": "off", "enabled": False},
            headers={"If-Match": current.headers["etag"]},
            params={"reason": "<!channel> see <https://evil.example|the runbook> & more"},
        )
        assert off.status_code == 200, off.text
        assert wait_for(lambda: len(receiver.received()) == 1)
        text = json.loads(receiver.received()[0]["body"])
        assert list(text) == ["text"]
        assert "flag.switched_off" in text["text"]
        assert "pay" in text["text"]
        assert "shop/production" in text["text"]
        # the review: a reason's Slack markup pinged the channel; it is shown as written
        assert text["text"].endswith(
            "&lt;!channel&gt; see &lt;https://evil.example|the runbook&gt; &amp; more"
        )
        assert "<" not in text["text"]


def test_environments_filter_and_removal(database_url: str, receiver: Receiver) -> None:
    receiver.start()
    with serving(database_url, *FAST) as server, server.client() as api:
        hook = _subscribe(api, receiver.url, "flag.changed", environments=["staging"])
        _flag(api, "prod-only")
        api.put("/api/v1/projects/shop/environments/staging/flags/st", json={"default": "on"})
        assert wait_for(lambda: len(receiver.received()) == 1)
        assert json.loads(receiver.received()[0]["body"])["environment"] == "staging"
        assert api.delete(f"{HOOKS}/{hook['id']}").status_code == 204
        assert api.get(f"{HOOKS}/{hook['id']}").status_code == 404
        assert api.get(HOOKS).json()["webhooks"] == []
        audit = api.get("/api/v1/audit").json()["entries"]
        actions = [e["action"] for e in audit if e["target"].startswith("shop/webhooks/")]
        assert actions == ["webhook.create", "webhook.delete"]
        assert "whsec_" not in json.dumps(audit)


#: Subscriptions refused, and the field each refusal names.
BAD_SUBSCRIPTIONS: list[tuple[dict[str, Any], str]] = [
    ({"url": "ftp://example.com/x", "events": ["flag.changed"]}, "url"),
    ({"url": "file:///etc/passwd", "events": ["flag.changed"]}, "url"),
    ({"url": "javascript:alert(1)", "events": ["flag.changed"]}, "url"),
    ({"url": "http://user:pw@example.com/", "events": ["flag.changed"]}, "url"),
    ({"url": "https://example.com/#frag", "events": ["flag.changed"]}, "url"),
    ({"url": "https://example.com/" + "a" * 2000, "events": ["flag.changed"]}, "url"),
    ({"url": "http:///nohost", "events": ["flag.changed"]}, "url"),
    ({"url": "http://example.com:99999/", "events": ["flag.changed"]}, "url"),
    ({"url": "http://exa mple.com/", "events": ["flag.changed"]}, "url"),
    ({"url": "http://example.com:0/", "events": ["flag.changed"]}, "url"),
    ({"url": "http://xn--ab-.com/", "events": ["flag.changed"]}, "url"),
    ({"url": "http://ab..com/", "events": ["flag.changed"]}, "url"),
    ({"url": "http://" + "a" * 64 + ".com/", "events": ["flag.changed"]}, "url"),
    ({"url": "http://example.com/\x1b[31m", "events": ["flag.changed"]}, "url"),
    ({"url": "https://example.com/", "events": ["flag.changed", "flag.exploded"]}, "events[1]"),
    ({"url": "https://example.com/", "events": []}, "events"),
    ({"url": "https://example.com/", "events": ["flag.changed"], "format": "xml"}, "format"),
    (
        {"url": "https://example.com/", "events": ["flag.changed"], "environments": ["moon"]},
        "environments[0]",
    ),
]


def test_bad_subscriptions_are_refused_naming_the_field(server: Server) -> None:
    with server.client() as api:
        for body, field in BAD_SUBSCRIPTIONS:
            answer = api.post(HOOKS, json=body)
            assert answer.status_code == 422, (body, answer.text)
            assert field in [p["path"] for p in answer.json()["problems"]], body
        assert api.get(HOOKS).json()["webhooks"] == []
        actions = [e["action"] for e in api.get("/api/v1/audit").json()["entries"]]
        assert "webhook.create" not in actions


def test_a_viewer_reads_without_the_secret_and_changes_nothing(server: Server) -> None:
    with server.client() as api:
        made = api.post(
            "/api/v1/tokens", json={"name": "watcher", "kind": "admin", "role": "viewer"}
        )
        viewer = made.json()["secret"]
        hook = _subscribe(api, "https://example.invalid/hook", "release.started")
    with server.client(viewer) as api:
        assert api.get(HOOKS).status_code == 200
        assert "secret" not in api.get(f"{HOOKS}/{hook['id']}").json()
        assert api.get(f"{HOOKS}/{hook['id']}/deliveries").json() == {"deliveries": []}
        refused = api.post(HOOKS, json={"url": "https://x.invalid/", "events": ["flag.changed"]})
        assert refused.status_code == 403
        assert api.delete(f"{HOOKS}/{hook['id']}").status_code == 403


def test_the_cli_adds_lists_shows_redelivers_and_removes(
    tmp_path: Path, receiver: Receiver
) -> None:
    import re

    from click.testing import CliRunner

    from tests.server_process import ADMIN_TOKEN
    from unveil.cli.main import main

    receiver.start()
    with serving(f"sqlite:///{tmp_path / 'unveil.db'}", *FAST) as server, server.client() as api:
        env = {
            "UNVEIL_URL": server.url,
            "UNVEIL_TOKEN": ADMIN_TOKEN,
            "UNVEIL_PROJECT": "shop",
            "UNVEIL_CONFIG": "/none",
        }

        def cli(*args: str) -> Any:
            return CliRunner().invoke(main, ["webhooks", *args], env=env)

        added = cli("add", receiver.url, "--event", "flag.changed", "--env", "production")
        assert added.exit_code == 0, added.output
        found = re.search(
            r"webhook (\d+) sends.*secret \(shown once, keep it\): (whsec_\S+)", added.output, re.S
        )
        assert found is not None, added.output
        hook, secret = int(found.group(1)), found.group(2)
        listed = cli("list")
        assert receiver.url in listed.output
        assert secret not in listed.output
        refused = cli("add", "ftp://example.com/", "--event", "flag.changed")
        assert refused.exit_code == 1
        assert "url" in refused.output
        _flag(api, "by-cli")
        assert wait_for(lambda: len(receiver.received()) == 1)
        assert wait_for(lambda: _newest(api, hook)["state"] == "delivered")
        delivery = _deliveries(api, hook)[0]["id"]
        shown = cli("deliveries", str(hook))
        assert shown.exit_code == 0, shown.output
        assert "delivered" in shown.output
        assert "by-cli" in shown.output
        again = cli("redeliver", str(hook), str(delivery))
        assert again.exit_code == 0, again.output
        assert wait_for(lambda: len(receiver.received()) == 2)
        assert cli("remove", str(hook)).exit_code == 0
        assert api.get(HOOKS).json()["webhooks"] == []
        assert cli("remove", str(hook)).exit_code == 1


def test_a_release_announces_its_start_with_the_explanation(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.start()
    plan = {
        "flag": "search",
        "control": "off",
        "treatment": "on",
        "steps": [{"percent": 10, "hold": "1h"}, {"percent": 100}],
    }
    with serving(f"sqlite:///{tmp_path / 'unveil.db'}", *FAST) as server, server.client() as api:
        hook = _subscribe(api, receiver.url, "release.started", "release.paused")
        _flag(api, "search")
        started = api.post(f"{ENV}/releases", json={"plan": plan})
        assert started.status_code == 201, started.text
        release = started.json()["id"]
        assert api.post(f"{ENV}/releases/{release}/pause", json={"reason": "lunch"}).is_success
        assert wait_for(lambda: len(receiver.received()) == 2)
        began, paused = (json.loads(r["body"]) for r in receiver.received())
        assert (began["event"], paused["event"]) == ("release.started", "release.paused")
        assert began["target"] == "search"
        assert began["actor"] == f"release:{release}"
        assert isinstance(began["explanation"], dict)
        audit = api.get(f"{ENV}/audit", params={"target": "search"}).json()["entries"]
        entry = next(e for e in audit if e["id"] == began["audit_id"])
        assert entry["action"] == "release.started"
        assert json.loads(entry["after"]) == began["explanation"]
        assert paused["reason"].endswith(": lunch")
        assert [d["event"] for d in _deliveries(api, hook["id"])] == [
            "release.paused",
            "release.started",
        ]


def test_a_scheduled_change_announces_that_it_was_applied(
    tmp_path: Path, receiver: Receiver
) -> None:
    from datetime import UTC, datetime, timedelta

    receiver.start()
    with serving(f"sqlite:///{tmp_path / 'unveil.db'}", *FAST) as server, server.client() as api:
        _flag(api, "promo")
        _subscribe(api, receiver.url, "schedule.applied", "schedule.failed")
        at = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
        made = api.post(
            f"{ENV}/schedules",
            json={"action": "flag.put", "key": "promo", "data": {"default": "on"}, "at": at},
        )
        assert made.status_code == 201, made.text
        assert wait_for(lambda: len(receiver.received()) == 1)
        body = json.loads(receiver.received()[0]["body"])
        assert (body["event"], body["action"]) == ("schedule.applied", "schedule.applied")
        assert body["target"] == "promo"
        assert body["environment"] == "production"


#: Strings no column can hold, in each field: refused by the one decoder, naming the field.
UNCARRIABLE: list[tuple[dict[str, Any], str]] = [
    ({"url": "http://a\x00b.com/", "events": ["flag.changed"]}, "url"),
    ({"url": "https://example.com/", "events": ["flag.changed", "x\x00"]}, "events[1]"),
    (
        {"url": "https://example.com/", "events": ["flag.changed"], "environments": ["p\x00"]},
        "environments[0]",
    ),
    ({"url": "https://example.com/", "events": ["flag.changed"], "format": "\ud800"}, "format"),
]


def test_nul_and_lone_surrogates_are_refused_naming_the_field(server: Server) -> None:
    """The review: a NUL in a subscription's url was reported at path ``body``."""
    with server.client() as api:
        for body, field in UNCARRIABLE:
            answer = api.post(
                HOOKS, content=json.dumps(body), headers={"Content-Type": "application/json"}
            )
            assert answer.status_code == 400, (body, answer.text)
            assert [p["path"] for p in answer.json()["problems"]] == [field], answer.text
        assert api.get(HOOKS).json()["webhooks"] == []


#: Receivers that do not take a delivery, and what its first attempt records.
REFUSING: list[tuple[tuple[str, ...], int]] = [
    (("--status", "302", "--location", "http://127.0.0.1:9/elsewhere"), 302),
    (("--status", "404"), 404),
    (("--status", "503"), 503),
]


@pytest.mark.parametrize(("options", "status"), REFUSING)
def test_a_receiver_that_redirects_or_refuses_is_a_failed_attempt_tried_again(
    tmp_path: Path, receiver: Receiver, options: tuple[str, ...], status: int
) -> None:
    receiver.start(*options)
    with serving(f"sqlite:///{tmp_path / 'unveil.db'}", *FAST) as server, server.client() as api:
        hook = _subscribe(api, receiver.url, "flag.changed")
        _flag(api, "refused")
        assert wait_for(lambda: len(_oldest(api, hook["id"])["attempts"]) >= 2)
        (delivery,) = _deliveries(api, hook["id"])
        assert delivery["state"] in ("pending", "sending")
        first = delivery["attempts"][0]
        assert first["status"] == status
        assert first["error"] == f"the receiver answered {status}"
        assert len(receiver.received()) >= 2  # each attempt reached it; no redirect followed


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_huge_answer_is_not_read_and_a_dripping_one_is_cut_off(
    tmp_path: Path, receiver: Receiver
) -> None:
    """The review: a receiver that answers a byte every half second (each read within
    the read timeout) held a sender for ever; a whole attempt now has a deadline."""
    huge = Receiver(_free_port(), tmp_path / "huge.jsonl")
    huge.start("--huge", "2048")  # 2 GiB of answer
    receiver.start("--drip", "0.5")
    extra = (*FAST, "--webhook-deadline", "2")
    try:
        with (
            serving(f"sqlite:///{tmp_path / 'unveil.db'}", *extra) as server,
            server.client() as api,
        ):
            big = _subscribe(api, huge.url, "flag.changed")
            drip = _subscribe(api, receiver.url, "flag.changed")
            before = _rss_kib(server.process.pid)
            _flag(api, "answered")
            assert wait_for(lambda: _oldest(api, big["id"])["state"] == "delivered")
            assert _rss_kib(server.process.pid) - before < 64 * 1024  # not read whole
            assert wait_for(lambda: bool(_oldest(api, drip["id"])["attempts"]))
            cut = _deliveries(api, drip["id"])[0]["attempts"][0]
            assert cut["status"] is None
            assert cut["error"] == "no whole answer within 2 s: cut off"
            assert 1_500 <= cut["duration_ms"] <= 6_000
    finally:
        huge.stop()


def test_a_flood_of_changes_to_a_hanging_receiver_answers_fast_and_waits_in_the_database(
    tmp_path: Path, receiver: Receiver
) -> None:
    receiver.start("--hang", "60")
    with serving(f"sqlite:///{tmp_path / 'unveil.db'}", *FAST) as server, server.client() as api:
        hooks = [_subscribe(api, receiver.url, "flag.changed")["id"] for _ in range(10)]
        before = _rss_kib(server.process.pid)
        latencies = []
        for i in range(100):
            started = time.monotonic()
            _flag(api, f"flood-{i % 5}", description=f"change {i}")
            latencies.append(time.monotonic() - started)
        assert max(latencies) < 2.0, max(latencies)
        # 10 subscriptions x 100 changes wait; the eight senders each hold one, the oldest
        # of its subscription, and nothing else is being sent
        assert wait_for(lambda: _metric(server, "unveil_webhook_waiting") == 1000.0)
        assert wait_for(lambda: _sending(api, hooks) == 8)
        for h in hooks:
            states = [
                d["state"]
                for d in api.get(f"{HOOKS}/{h}/deliveries?limit=500").json()["deliveries"]
            ]
            assert len(states) == 100
            assert set(states[:-1]) == {"pending"}
        assert _rss_kib(server.process.pid) - before < 100 * 1024


def _sending(api: httpx.Client, hooks: list[int]) -> int:
    return sum(
        d["state"] == "sending"
        for h in hooks
        for d in api.get(f"{HOOKS}/{h}/deliveries?limit=500").json()["deliveries"]
    )


def _metric(server: Server, name: str) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return None


def _by_outcome(server: Server) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "unveil_webhook_attempts_total":
                found[sample.labels["outcome"]] = sample.value
    return found


def test_metrics_count_deliveries_by_outcome_the_waiting_and_the_latency(
    tmp_path: Path, receiver: Receiver
) -> None:
    extra = (*FAST, "--webhook-give-up", "4")
    with serving(f"sqlite:///{tmp_path / 'unveil.db'}", *extra) as server, server.client() as api:
        assert _by_outcome(server) == {"delivered": 0, "failed": 0, "given_up": 0}
        hook = _subscribe(api, receiver.url, "flag.changed")
        _flag(api, "lost")  # nobody listens: tried again and again, then given up
        assert wait_for(lambda: _by_outcome(server)["failed"] >= 2)
        assert _metric(server, "unveil_webhook_waiting") == 1.0
        assert wait_for(lambda: _by_outcome(server)["given_up"] == 1, timeout=40)
        assert _metric(server, "unveil_webhook_waiting") == 0.0
        failed = _by_outcome(server)["failed"]
        recorded = sum(len(d["attempts"]) for d in _deliveries(api, hook["id"]))
        assert recorded == failed + 1  # every failed attempt, and the one given up
        receiver.start()
        for key in ("a", "b", "c"):
            _flag(api, key)
        assert wait_for(lambda: _by_outcome(server)["delivered"] == 3)
        assert _metric(server, "unveil_webhook_delivery_seconds_count") == 3.0
        total = _metric(server, "unveil_webhook_delivery_seconds_sum")
        assert total is not None
        assert 0 < total < 3 * 5.0
        # a redelivery's success is a delivered attempt, but not a second first delivery
        delivery = _deliveries(api, hook["id"])[0]["id"]
        assert api.post(f"{HOOKS}/{hook['id']}/deliveries/{delivery}/redeliver").is_success
        assert wait_for(lambda: _by_outcome(server)["delivered"] == 4)
        assert _metric(server, "unveil_webhook_delivery_seconds_count") == 3.0
        assert _metric(server, "unveil_webhook_waiting") == 0.0


def test_kill_9_while_a_delivery_is_being_sent_sends_it_again_after_restart(
    database_url: str, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.start("--hang", "60")
    with serving(database_url, *FAST) as server:
        with server.client() as api:
            hook = _subscribe(api, receiver.url, "flag.changed")
            _flag(api, "mid-send")
            assert wait_for(lambda: _oldest(api, hook["id"])["state"] == "sending")
        server.kill()
    receiver.stop()
    receiver.start()  # the same port, answering now
    with serving(database_url, *FAST, seed=False) as again, again.client() as api:
        assert wait_for(lambda: _newest(api, hook["id"])["state"] == "delivered")
        (delivery,) = _deliveries(api, hook["id"])
        got = receiver.received()
        assert [json.loads(r["body"])["id"] for r in got] == [delivery["id"]]
        # the attempt cut by the kill left no record; the one that got through has one
        assert [(a["number"], a["status"]) for a in delivery["attempts"]] == [(2, 200)]


def _log_of(server: Server) -> str:
    return Path(os.readlink(f"/proc/{server.process.pid}/fd/2")).read_text()


def test_the_secret_is_shown_once_and_never_again(tmp_path: Path, receiver: Receiver) -> None:
    from click.testing import CliRunner

    from tests.server_process import ADMIN_TOKEN
    from unveil.cli.main import main

    receiver.start()
    with serving(f"sqlite:///{tmp_path / 'unveil.db'}", *FAST, "--log-level", "debug") as server:
        with server.client() as api:
            hook = _subscribe(api, receiver.url, "flag.changed")
            secret = hook["secret"]
            _flag(api, "quiet")
            assert wait_for(lambda: len(receiver.received()) == 1)
            delivery = _deliveries(api, hook["id"])[0]["id"]
            api.post(f"{HOOKS}/{hook['id']}/deliveries/{delivery}/redeliver")
            assert wait_for(lambda: len(receiver.received()) == 2)
            reads = [
                api.get(HOOKS).text,
                api.get(f"{HOOKS}/{hook['id']}").text,
                api.get(f"{HOOKS}/{hook['id']}/deliveries").text,
                api.get("/api/v1/audit").text,
                api.get(f"{ENV}/audit").text,
            ]
            env = {"UNVEIL_URL": server.url, "UNVEIL_TOKEN": ADMIN_TOKEN}
            env |= {"UNVEIL_PROJECT": "shop", "UNVEIL_CONFIG": "/none"}
            for args in (["list"], ["deliveries", str(hook["id"])]):
                shown = CliRunner().invoke(main, ["webhooks", *args], env=env)
                assert shown.exit_code == 0, shown.output
                reads.append(shown.output)
            assert api.delete(f"{HOOKS}/{hook['id']}").status_code == 204
            reads.append(api.get("/api/v1/audit").text)
        reads.append(_log_of(server))
        reads += [json.dumps(r) for r in receiver.received()]
    assert all(secret not in read for read in reads)
    assert all(secret[6:] not in read for read in reads)


def _cluster(server: Server) -> dict[str, Any]:
    with server.client() as api:
        found: dict[str, Any] = api.get("/api/v1/cluster").json()
        return found


def test_two_nodes_on_postgresql_the_other_delivers_each_event_once_when_the_leader_dies(
    receiver: Receiver,
) -> None:
    """Two server processes on one database; the leader is killed -9 while its first
    delivery hangs in the receiver (and before any is taken); the other node takes the
    lead, sends that one again and the rest after it: each once, in order."""
    from tests.server_process import postgres_database

    receiver.start("--hang", "120")  # takes the leader's first attempt and never answers
    with postgres_database() as url:
        nodes = [start_server(url, None, True, *FAST)]
        try:
            nodes.append(start_server(url, None, False, *FAST))
            assert wait_for(lambda: sum(_cluster(n)["leading"] for n in nodes) == 1)
            leader = next(n for n in nodes if _cluster(n)["leading"])
            other = next(n for n in nodes if n is not leader)
            leader_node, other_node = _cluster(leader)["node"], _cluster(other)["node"]
            with other.client() as api:  # changes through the node that does not deliver
                hook = _subscribe(api, receiver.url, "flag.changed")
                for i in range(5):
                    _flag(api, f"two-{i}")
                assert wait_for(lambda: _oldest(api, hook["id"])["state"] == "sending")
                assert wait_for(lambda: len(_deliveries(api, hook["id"])) == 5)
                assert [d["attempts"] for d in _deliveries(api, hook["id"])] == [[]] * 5
            leader.kill()
            receiver.stop()
            receiver.start()  # the same port, answering now
            with other.client() as api:
                delivered = ["delivered"] * 5
                assert wait_for(
                    lambda: [d["state"] for d in _deliveries(api, hook["id"])] == delivered,
                    timeout=60,
                )
                shown = list(reversed(_deliveries(api, hook["id"])))
                assert _cluster(other)["leading"]
            got = [json.loads(r["body"]) for r in receiver.received()]
            assert [b["id"] for b in got] == [d["id"] for d in shown]  # each once, in order
            assert [b["target"] for b in got] == [f"two-{i}" for i in range(5)]
            for d in shown:  # every recorded attempt got through, sent by the new leader
                assert [(a["status"], a["node"]) for a in d["attempts"]] == [(200, other_node)]
            assert leader_node != other_node
            # the claim the dead leader held was its first attempt: the retry is the second
            assert shown[0]["attempts"][0]["number"] == 2
        finally:
            for node in nodes:
                stop(node)


def test_the_cli_shows_urls_as_written_never_as_markup(tmp_path: Path) -> None:
    """The review: ``unveil webhooks list`` crashed on a URL holding ``[/x]`` (Rich markup)."""
    from click.testing import CliRunner

    from tests.server_process import ADMIN_TOKEN
    from unveil.cli.main import main

    with serving(f"sqlite:///{tmp_path / 'unveil.db'}", *FAST) as server, server.client() as api:
        odd = ["http://127.0.0.1:9/[/x]", "http://127.0.0.1:9/[bold]loud:smile:"]
        for url in odd:
            _subscribe(api, url, "flag.changed")
        env = {"UNVEIL_URL": server.url, "UNVEIL_TOKEN": ADMIN_TOKEN}
        env |= {"UNVEIL_PROJECT": "shop", "UNVEIL_CONFIG": "/none", "COLUMNS": "200"}
        listed = CliRunner().invoke(main, ["webhooks", "list"], env=env)
        assert listed.exit_code == 0, listed.output
        for url in odd:
            assert url in listed.output


def test_the_docs_webhook_commands_run_as_written(tmp_path: Path, receiver: Receiver) -> None:
    """docs/governance.md followed literally: its ``unveil webhooks`` lines, with the
    example URLs pointed at a real receiver and the example ids at the real ones."""
    import shlex

    from click.testing import CliRunner

    from tests.server_process import ADMIN_TOKEN
    from unveil.cli.main import main

    doc = GOVERNANCE.read_text()
    assert all(f"\n## {part}\n" in doc for part in ("Schedules", "Approvals", "Webhooks"))
    block = doc[doc.index("### Subscribing") :]
    block = block[block.index("```\n") + 4 : block.index("\n```", block.index("```\n"))]
    lines = [line for line in block.splitlines() if line.startswith("unveil webhooks ")]
    assert [line.split()[2] for line in lines] == [
        "add",
        "add",
        "list",
        "deliveries",
        "redeliver",
        "remove",
    ]
    receiver.start()
    with serving(f"sqlite:///{tmp_path / 'unveil.db'}", *FAST) as server, server.client() as api:
        env = {"UNVEIL_URL": server.url, "UNVEIL_TOKEN": ADMIN_TOKEN}
        env |= {"UNVEIL_PROJECT": "shop", "UNVEIL_CONFIG": "/none", "COLUMNS": "200"}
        ids: dict[str, str] = {}
        _flag(api, "documented")  # made before subscribing: not announced
        for line in lines:
            words = shlex.split(line)[1:]
            words = [receiver.url if w.startswith("https://hooks.") else w for w in words]
            if words[1] in ("deliveries", "redeliver", "remove"):
                words[2] = ids["hook"]  # the doc's 3
            if words[1] == "remove":  # removing drops what is not yet sent: the redelivery first
                assert wait_for(lambda: len(receiver.received()) == 3)
            if words[1] == "redeliver":
                _flag(api, "documented", enabled=False)  # a switch-off: both subscribed to it
                assert wait_for(lambda: len(receiver.received()) == 2)
                first = int(ids["hook"])
                assert wait_for(lambda hook=first: _oldest(api, hook)["state"] == "delivered")
                words[3] = str(_deliveries(api, first)[0]["id"])  # the doc's 41
            done = CliRunner().invoke(main, words, env=env)
            assert done.exit_code == 0, (line, done.output)
            if words[1] == "add":
                ids.setdefault("hook", done.output.split()[1])
        assert len(receiver.received()) == 3  # the switch-off to each, and the redelivery
        left = api.get(HOOKS).json()["webhooks"]
        assert [h["format"] for h in left] == ["slack"]  # the first was removed


def test_a_refused_scheduled_change_reaches_a_receiver_as_schedule_failed(
    tmp_path: Path, receiver: Receiver
) -> None:
    from datetime import UTC, datetime, timedelta

    receiver.start()
    with serving(f"sqlite:///{tmp_path / 'unveil.db'}", *FAST) as server, server.client() as api:
        _flag(api, "promo")
        _subscribe(api, receiver.url, "schedule.applied", "schedule.failed")
        at = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
        made = api.post(
            f"{ENV}/schedules",
            json={"action": "flag.put", "key": "promo", "data": {"default": "on"}, "at": at},
        )
        assert made.status_code == 201, made.text
        _flag(api, "promo", default={"rollout": {"on": 10, "off": 90}})  # the same field, by hand
        assert wait_for(lambda: len(receiver.received()) == 1)
        body = json.loads(receiver.received()[0]["body"])
        assert (body["event"], body["target"]) == ("schedule.failed", "promo")
        assert body["actor"] == f"schedule:{made.json()['id']}"
        shown = api.get(f"{ENV}/schedules/{made.json()['id']}").json()
        assert shown["state"] == "failed"
