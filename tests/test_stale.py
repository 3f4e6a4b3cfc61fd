"""Stale flags against a real server process: each criterion, the setting N, the webhook.

Time is the one thing a test cannot wait for (N is in days), so the tests
age what the server reads: they move audit entries back in time in the
server's own database, as if the writes had been made weeks ago. Everything
else is the real thing: flags written through the API, exposures sent by an
SDK key to the events intake, metadata through its endpoint, the leader's
recurring job, and a receiver process for the webhook.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from tests.event_flood import EVENTS
from tests.server_process import Server, database, sdk_key, start_server, stop, wait_for
from tests.test_webhooks import Receiver, _subscribe, receiver  # noqa: F401 (a fixture)
from unveil.service.stale import StaleService
from unveil.store import tables as t
from unveil.store.database import make_engine
from unveil.store.events import EventCounts
from unveil.store.unit import Store

ENV = "/api/v1/projects/shop/environments/production"
STALE = f"{ENV}/stale-flags"
SETTINGS = "/api/v1/projects/shop/settings"
SPLIT = {"default": {"rollout": {"on": 50, "off": 50}}}
NOW = datetime.now(UTC)


def _put(api: httpx.Client, key: str, body: dict[str, Any]) -> None:
    path = f"{ENV}/flags/{key}"
    current = api.get(path)
    headers = {"If-Match": current.headers["etag"]} if current.status_code == 200 else {}
    answer = api.put(path, json=body, headers=headers)
    assert answer.status_code < 300, answer.text


def _age(database_url: str, key: str, *days_ago: float) -> None:
    """Move the flag's own audit entries back: the oldest to the first age given, and so on."""
    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            ids = conn.execute(
                select(t.audit.c.id).where(t.audit.c.target == key).order_by(t.audit.c.id)
            ).scalars()
            ids = list(ids)
            assert len(ids) == len(days_ago), ids
            for entry, days in zip(ids, days_ago, strict=True):
                at = NOW - timedelta(days=days)
                conn.execute(update(t.audit).where(t.audit.c.id == entry).values(at=at))
    finally:
        engine.dispose()


def _expose(server: Server, *flags: str) -> None:
    """Exposures of ``flags`` sent by an SDK, waited for until the server counted them."""
    key = sdk_key(server.database_url)
    events = [{"kind": "exposure", "flag": f, "variant": "on"} for f in flags]
    with server.client(key) as sdk:
        assert sdk.post(EVENTS, json={"events": events}).status_code == 202
    with server.client() as api:

        def counted() -> bool:
            counts = api.get(f"{ENV}/events").json()["counts"]
            return set(flags) <= {c["flag"] for c in counts if c["metric"] == "$exposure"}

        assert wait_for(counted, timeout=60)


def _stale(api: httpx.Client) -> dict[str, dict[str, Any]]:
    answer = api.get(STALE)
    assert answer.status_code == 200, answer.text
    return {f["key"]: f for f in answer.json()["flags"]}


def _codes(flag: dict[str, Any]) -> list[str]:
    return [r["code"] for r in flag["reasons"]]


def test_each_criterion_names_its_flags_with_the_reason_and_since_when(server: Server) -> None:
    with server.client() as api:
        _put(api, "old-on", {"default": "on"})  # one variant for everyone, for 40 days
        _put(api, "fresh-on", {"default": "on"})  # the same, for a moment only
        _put(api, "busy-split", SPLIT)  # two variants, evaluated: not stale
        _put(api, "quiet-split", SPLIT)  # two variants, never evaluated in 40 days
        _put(api, "old-release", SPLIT)  # a release flag of 10 days with a lifetime of 5
        meta = {"type": "release", "lifetime_days": 5}
        assert api.put("/api/v1/projects/shop/flags/old-release/meta", json=meta).is_success
        _put(api, "forever", SPLIT)  # an operational flag has no lifetime
        assert api.put("/api/v1/projects/shop/flags/forever/meta", json={"type": "operational"})
        # created as a split 60 days ago, rolled out to "on" 45 days ago, re-described
        # yesterday: rolled out since 45 days, the last write kept it so
        _put(api, "walked", SPLIT)
        _put(api, "walked", {"default": "on"})
        _put(api, "walked", {"default": "on", "description": "checkout v2"})
        for key in ("old-on", "busy-split", "quiet-split", "forever"):
            _age(server.database_url, key, 40)
        _age(server.database_url, "old-release", 10)
        _age(server.database_url, "walked", 60, 45, 1)
        _expose(server, "old-on", "busy-split", "old-release", "forever", "walked")

        stale = _stale(api)
        assert sorted(stale) == ["old-on", "old-release", "quiet-split", "walked"]
        assert _codes(stale["old-on"]) == ["rolled_out"]
        assert stale["old-on"]["reasons"][0]["text"].startswith("serves 'on' to everyone since")
        assert _codes(stale["quiet-split"]) == ["not_evaluated"]
        assert "never evaluated since it was created" in stale["quiet-split"]["reasons"][0]["text"]
        assert _codes(stale["old-release"]) == ["past_lifetime"]
        assert (
            "a release flag, past its expected lifetime of 5 days"
            in (stale["old-release"]["reasons"][0]["text"])
        )
        (walked,) = stale["walked"]["reasons"]
        assert walked["code"] == "rolled_out"
        since = datetime.fromisoformat(walked["since"])
        assert abs(since - (NOW - timedelta(days=45))) < timedelta(minutes=5)
        assert all(f["references"] == {} for f in stale.values())  # no deploys recorded

        # N = 50: forty and forty-five days are not enough any more; the lifetime still is
        assert api.put(SETTINGS, json={"stale_after_days": 50}).json() == {"stale_after_days": 50}
        assert sorted(_stale(api)) == ["old-release"]
        assert api.get(SETTINGS).json() == {"stale_after_days": 50}


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({"stale_after_days": 0}, "stale_after_days"),
        ({"stale_after_days": "30"}, "stale_after_days"),
        ({"stale_after_days": True}, "stale_after_days"),
        ({"stale_after_days": 3651}, "stale_after_days"),
        ({"stale_after_days": 30, "stale": 1}, "stale"),
    ],
)
def test_a_bad_setting_is_refused_naming_the_field_and_changes_nothing(
    tmp_path: Path, body: dict[str, Any], said: str
) -> None:
    with database("sqlite", tmp_path) as url:
        running = start_server(url)
        try:
            with running.client() as api:
                refused = api.put(SETTINGS, json=body)
                assert refused.status_code == 422, refused.text
                assert said in [p["path"] for p in refused.json()["problems"]]
                assert api.get(SETTINGS).json() == {"stale_after_days": 30}
                assert api.get("/api/v1/projects/nope/settings").status_code == 404
                assert api.get(f"{ENV[:-10]}nowhere/stale-flags").status_code == 404
        finally:
            stop(running)


@pytest.fixture(params=["sqlite", "postgresql"])
def fast_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """A server whose leader looks for stale flags every 0.2 s."""
    with database(request.param, tmp_path) as url:
        running = start_server(
            url, None, True, "--stale-check", "0.2", "--worker-interval", "0.2",
            "--webhook-retry-base", "0.2",
        )  # fmt: skip
        try:
            yield running
        finally:
            stop(running)


def _stale_events(got: Receiver) -> list[dict[str, Any]]:
    bodies = [json.loads(r["body"]) for r in got.received()]
    return [b for b in bodies if b["event"] == "flag.stale"]


def _audit_actions(database_url: str, action: str) -> list[str]:
    engine = make_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(t.audit.c.target).where(t.audit.c.action == action))
            return [r.target for r in rows]
    finally:
        engine.dispose()


def test_flag_stale_fires_once_when_a_flag_becomes_stale(
    fast_server: Server,
    receiver: Receiver,  # noqa: F811 (the fixture)
) -> None:
    receiver.start()
    with fast_server.client() as api:
        _subscribe(api, receiver.url, "flag.stale")
        _put(api, "first", {"default": "on"})
        _put(api, "second", {"default": "on"})
        _age(fast_server.database_url, "first", 40)
        assert wait_for(lambda: len(_stale_events(receiver)) == 1)
        (event,) = _stale_events(receiver)
        assert event["target"] == "first"
        assert event["environment"] == "production"
        assert event["reason"].startswith("serves 'on' to everyone since")
        assert [r["code"] for r in event["explanation"]["reasons"]] == [
            "rolled_out",
            "not_evaluated",
        ]
        assert _stale(api)["first"]["found_at"] is not None
        # the second becomes stale later: by its announcement the leader has looked at
        # the first again (and again), and it was not announced twice
        _age(fast_server.database_url, "second", 40)
        assert wait_for(lambda: len(_stale_events(receiver)) == 2)
        assert [e["target"] for e in _stale_events(receiver)] == ["first", "second"]
        assert _audit_actions(fast_server.database_url, "stale.found") == ["first", "second"]
        # no longer stale (two variants, and evaluated): the mark goes (audited, not announced)
        _put(api, "first", SPLIT)
        _expose(fast_server, "first")
        assert wait_for(
            lambda: _audit_actions(fast_server.database_url, "stale.cleared") == ["first"]
        )
        _put(api, "third", {"default": "on"})
        _age(fast_server.database_url, "third", 40)
        assert wait_for(lambda: len(_stale_events(receiver)) == 3)
        assert [e["target"] for e in _stale_events(receiver)] == ["first", "second", "third"]


def test_two_checks_in_a_row_mark_and_announce_a_flag_once(engine: Any) -> None:
    from unveil.service.access import AccessService
    from unveil.service.flags import Change, FlagService

    store = Store(engine)
    AccessService(store).ensure_environment("shop", "production")
    FlagService(store).put_item(
        "flags", "shop", "production", "f", {"default": "on"}, Change("me"), None
    )
    with engine.begin() as conn:
        conn.execute(update(t.audit).values(at=NOW - timedelta(days=40)))
    counts = EventCounts(engine)
    stale = StaleService(store, counts)
    try:
        with store.unit_of_work() as work:
            assert stale.check(work) == 1
        with store.unit_of_work() as work:
            assert stale.check(work) == 0  # still stale, marked already: not again

        def fenced() -> None:
            with store.unit_of_work() as work:
                work.stale.clear(work.environments.id_of("shop", "production") or 0, "f")
                assert stale.check(work) == 1
                raise RuntimeError("the job's finish matched nothing")

        # a job whose fenced finish fails rolls back with its effect: no second mark
        with pytest.raises(RuntimeError):
            fenced()
    finally:
        counts.close()
    with engine.connect() as conn:
        found = conn.execute(select(t.audit.c.target).where(t.audit.c.action == "stale.found"))
        assert [r.target for r in found] == ["f"]


def test_the_cli_lists_stale_flags_with_where_a_local_tree_refers_to_them(
    tmp_path: Path,
) -> None:
    from click.testing import CliRunner

    from tests.server_process import ADMIN_TOKEN
    from unveil.cli.main import main

    tree = tmp_path / "app"
    tree.mkdir()
    (tree / "shop.py").write_text('def f(flags, ctx):\n    return flags.enabled("old-on", ctx)\n')
    with database("sqlite", tmp_path) as url:
        running = start_server(url)
        try:
            env = {
                "UNVEIL_URL": running.url,
                "UNVEIL_TOKEN": ADMIN_TOKEN,
                "UNVEIL_PROJECT": "shop",
                "UNVEIL_CONFIG": "/nonexistent",
                "COLUMNS": "200",
            }

            def cli(*args: str) -> Any:
                return CliRunner().invoke(main, list(args), env=env)

            with running.client() as api:
                _put(api, "old-on", {"default": "on"})
                _put(api, "fresh", SPLIT)
            _age(url, "old-on", 40)
            shown = cli("flags", "stale", "-e", "production", "--scan", str(tree))
            assert shown.exit_code == 0, shown.output
            assert "old-on" in shown.output
            assert "serves 'on' to everyone since" in shown.output
            assert "here: shop.py:2" in shown.output
            assert "fresh" not in shown.output
            assert "1 stale flag(s)" in shown.output
            as_json = cli("flags", "stale", "-e", "production", "--scan", str(tree), "--json")
            (flag,) = json.loads(as_json.output)["flags"]
            assert flag["local_references"] == ["shop.py:2"]
            assert cli("flags", "stale-after").output.strip().endswith("stale after 30 days")
            assert cli("flags", "stale-after", "45").exit_code == 0
            assert cli("flags", "stale", "-e", "production").output.count("old-on") == 0
            refused = cli("flags", "stale-after", "0")
            assert refused.exit_code == 2  # click's range check: the command used wrongly
            missing = cli("flags", "stale", "-e", "production", "--scan", str(tmp_path / "no"))
            assert missing.exit_code == 2
            assert "does not exist" in missing.output
            unknown = cli("flags", "stale", "-e", "nowhere")
            assert unknown.exit_code == 1
            assert "404" in unknown.output
        finally:
            stop(running)


def test_a_flag_no_latest_deploy_refers_to_is_stale_and_references_are_shown(
    server: Server,
) -> None:
    deploys = f"{ENV}/deploys"
    with server.client() as api:
        _put(api, "in-code", {"default": "on"})  # rolled out for 40 days, still in the code
        _put(api, "gone", SPLIT)  # live and evaluated, but its code left in v2
        _age(server.database_url, "in-code", 40)
        _expose(server, "in-code", "gone")
        for service in ("api", "web"):
            assert api.put(f"/api/v1/projects/shop/services/{service}", json={}).is_success
        v1 = {"in-code": ["src/app.py:3"], "gone": ["src/old.py:9"]}
        for version, refs in (("1.0.0", v1), ("1.1.0", {"in-code": ["src/app.py:4"]})):
            body = {"service": "api", "version": version, "references": refs}
            made = api.post(deploys, json=body)
            assert made.status_code == 201, made.text
        # a deploy recorded without a scan says nothing about which flags its code uses
        assert api.post(deploys, json={"service": "web", "version": "7"}).status_code == 201
        stale = _stale(api)
        assert sorted(stale) == ["gone", "in-code"]
        assert _codes(stale["gone"]) == ["not_deployed"]
        assert stale["gone"]["reasons"][0]["text"] == (
            "no latest deploy refers to it (services: api)"
        )
        assert stale["gone"]["references"] == {}
        assert _codes(stale["in-code"]) == ["rolled_out"]
        assert stale["in-code"]["references"] == {"api": ["src/app.py:4"]}


def test_the_walk_back_stops_where_the_history_is_broken_or_served_more() -> None:
    from unveil.service.stale import _walk_back
    from unveil.store.stale import FlagWrite

    def at(days: int) -> datetime:
        return NOW - timedelta(days=days)

    on, split = {"default": "on"}, SPLIT
    described = {"default": "on", "description": "x"}
    history = [  # newest first
        FlagWrite("flag.update", at(1), 4, on, described),
        FlagWrite("flag.update", at(20), 3, split, on),
        FlagWrite("flag.create", at(60), 2, None, split),
    ]
    assert _walk_back("on", history) == at(20)  # before day 20 it served two variants
    unbroken = [
        FlagWrite("flag.update", at(1), 4, on, described),
        FlagWrite("flag.create", at(50), 3, None, on),
    ]
    assert _walk_back("on", unbroken) == at(50)
    gap = [  # what the newest write replaced is not what the one before wrote: a write unseen
        FlagWrite("flag.update", at(1), 9, {"default": "on", "description": "y"}, described),
        FlagWrite("flag.create", at(50), 3, None, on),
    ]
    assert _walk_back("on", gap) == at(1)


def test_an_exposure_older_than_n_days_is_named_as_the_last_one(engine: Any) -> None:
    from unveil.service.access import AccessService
    from unveil.service.flags import Change, FlagService

    store = Store(engine)
    AccessService(store).ensure_environment("shop", "production")
    for key in ("quiet", "busy"):
        FlagService(store).put_item("flags", "shop", "production", key, SPLIT, Change("me"), None)
    with engine.begin() as conn:
        conn.execute(update(t.audit).values(at=NOW - timedelta(days=90)))
    with store.reading() as r:
        environment_id = r.environments.id_of("shop", "production") or 0
    counts = EventCounts(engine)
    try:
        old = int((NOW - timedelta(days=40)).timestamp()) // 10 * 10
        recent = int((NOW - timedelta(days=2)).timestamp()) // 10 * 10
        counts.add(
            [
                ((environment_id, old, "quiet", "on", "$exposure"), 3, 3.0),
                ((environment_id, old, "busy", "on", "$exposure"), 3, 3.0),
                ((environment_id, recent, "busy", "off", "$exposure"), 1, 1.0),
                ((environment_id, recent, "quiet", "on", "errors"), 1, 1.0),  # not an exposure
            ]
        )
        report = StaleService(store, counts).report("shop", "production")
    finally:
        counts.close()
    (quiet,) = report["flags"]
    assert quiet["key"] == "quiet"
    (reason,) = quiet["reasons"]
    day = (NOW - timedelta(days=40)).date().isoformat()
    assert reason == {
        "code": "not_evaluated",
        "since": reason["since"],
        "text": f"not evaluated for 30 days or more (last exposure {day})",
    }
    assert datetime.fromisoformat(reason["since"]).date().isoformat() == day
