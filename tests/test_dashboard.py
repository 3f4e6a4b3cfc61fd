"""The dashboard in a real browser (Debian's chromium, driven by Playwright) against a
real server process: signing in and out, the kill switch (by mouse and by keyboard
alone) reaching a live SDK client in another process, what a viewer may not do,
forged posts, accessibility (axe-core from npm) and 200% zoom.

Skipped when chromium or npm is missing, unless UNVEIL_TEST_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server_process import Server, database, sdk_key, start_server, stop, wait_for

CHROMIUM = "/usr/bin/chromium"
AXE_VERSION = "4.10.3"
CACHE = Path(__file__).resolve().parent.parent / ".cache" / f"axe-core-{AXE_VERSION}"
SHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
FLAGS = "/api/v1/projects/shop/environments/production/flags"
EDITOR = ("alice", "alice-password-1")
VIEWER = ("vera", "vera-password-12")


def _missing(what: str) -> None:
    if os.environ.get("UNVEIL_TEST_REQUIRE_SERVICES"):
        pytest.fail(f"{what} is needed for the dashboard tests")
    pytest.skip(f"{what} is not installed")


def _axe_script() -> str:
    script = CACHE / "package" / "axe.min.js"
    if not script.exists():
        npm = shutil.which("npm")
        if npm is None:
            _missing("npm")
        CACHE.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(
            [str(npm), "pack", f"axe-core@{AXE_VERSION}", "--silent"],
            cwd=CACHE,
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        with tarfile.open(CACHE / out.stdout.strip().splitlines()[-1]) as archive:
            archive.extractall(CACHE, filter="data")
    return script.read_text()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        _missing("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright")
    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with database("sqlite", tmp_path_factory.mktemp("dashboard")) as url:
        server = start_server(url)
        try:
            with server.client() as api:
                for name, password, role in (*[(*EDITOR, "editor")], (*VIEWER, "viewer")):
                    body = {"name": name, "password": password, "role": role}
                    assert api.post("/api/v1/users", json=body).status_code == 201
                flag = {
                    "variants": {"on": True, "off": False},
                    "default": "on",
                    "description": "The new checkout",
                }
                assert api.put(f"{FLAGS}/new-checkout", json=flag).status_code == 201
                plain = {"variants": {"on": True, "off": False}, "default": "off"}
                assert api.put(f"{FLAGS}/dark-mode", json=plain).status_code == 201
            yield server
        finally:
            stop(server)


def _sign_in(browser: Any, site: Server, who: tuple[str, str], **options: Any) -> Any:
    page = browser.new_page(**options)
    page.goto(f"{site.url}/login")
    page.get_by_label("Name").fill(who[0])
    page.get_by_label("Password").fill(who[1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{site.url}/p/shop/*/flags")
    return page


def _serious_violations(page: Any) -> list[str]:
    # evaluated through the debugging protocol: the page's own policy rightly refuses inline scripts
    page.evaluate(_axe_script())
    found = page.evaluate("async () => (await axe.run(document)).violations")
    return [
        f"{v['id']} ({v['impact']}): {v['help']}"
        for v in found
        if v["impact"] in ("serious", "critical")
    ]


def _set_enabled(site: Server, key: str, enabled: bool) -> None:
    with site.client() as api:
        got = api.get(f"{FLAGS}/{key}")
        data = {**got.json()["data"], "enabled": enabled}
        put = api.put(f"{FLAGS}/{key}", json=data, headers={"If-Match": got.headers["etag"]})
        assert put.status_code == 200, put.text


def _enabled(site: Server, key: str) -> bool:
    with site.client() as api:
        return bool(api.get(f"{FLAGS}/{key}").json()["data"].get("enabled", True))


def test_signing_in_and_out(browser: Any, site: Server) -> None:
    page = browser.new_page()
    page.goto(f"{site.url}/p/shop/production/flags")
    page.wait_for_url(f"{site.url}/login*")  # not signed in: sent to sign in first
    page.get_by_label("Name").fill(EDITOR[0])
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text() == "the name or the password is not right"
    page.get_by_label("Password").fill(EDITOR[1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{site.url}/p/shop/production/flags")  # back where it was going
    assert page.get_by_role("link", name="new-checkout").is_visible()
    cookie = next(c for c in page.context.cookies() if c["name"] == "unveil_session")
    assert cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict"
    assert cookie["expires"] > 0
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{site.url}/login")
    # the old cookie is dead on the server, not only forgotten by the browser
    replay = httpx.post(
        f"{site.url}/p/shop/production/flags/new-checkout/switch",
        cookies={"unveil_session": cookie["value"]},
        data={"to": "off"},
    )
    assert replay.status_code == 403
    page.goto(f"{site.url}/p/shop/production/flags")
    page.wait_for_url(f"{site.url}/login*")
    page.close()


def test_failed_sign_ins_are_slowed_down(site: Server) -> None:
    with httpx.Client(base_url=site.url) as web:
        answers = [
            web.post("/login", data={"name": "mallory-target", "password": f"guess-{n}"})
            for n in range(5)
        ]
    assert [a.status_code for a in answers[:3]] == [401, 401, 401]
    assert answers[4].status_code == 429
    assert int(answers[4].headers["retry-after"]) >= 1


_WATCHER = """
import sys, time
from unveil import Client
client = Client(sys.argv[1], sys.argv[2], events=False)
assert client.wait_until_ready(30)
last = None
while True:
    now = client.enabled("new-checkout", {"key": "user-1"})
    if now != last:
        print(f"{time.time():.3f} {now}", flush=True)
        last = now
    time.sleep(0.005)
"""


def test_kill_switch_reaches_a_live_sdk_client_within_a_second(browser: Any, site: Server) -> None:
    _set_enabled(site, "new-checkout", True)
    watcher = subprocess.Popen(
        [sys.executable, "-c", _WATCHER, site.url, sdk_key(site.database_url)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        assert watcher.stdout.readline().split()[1] == "True"
        page = _sign_in(browser, site, EDITOR)
        page.get_by_role("link", name="new-checkout").click()
        page.get_by_role("button", name="Turn off…").click()
        assert "Everyone gets “off”" in page.inner_text("main")
        page.get_by_label("Reason (goes into the audit log)").fill("checkout errors spiking")
        page.screenshot(path=str(SHOTS / "kill-switch-confirm.png"))
        page.get_by_role("button", name="Yes, turn it off").click()
        clicked = time.time()
        page.wait_for_url("**/flags/new-checkout?notice=*")
        seen_at, value = watcher.stdout.readline().split()
        assert value == "False"
        assert float(seen_at) - clicked < 1.0, (
            f"the client changed {float(seen_at) - clicked:.2f}s later"
        )
        assert page.get_by_role("status").inner_text() == "The flag is off."
        history = page.locator(".history li").first.inner_text()
        assert "alice" in history
        assert "checkout errors spiking" in history
        assert "+ enabled: false" in history
        page.screenshot(path=str(SHOTS / "flag.png"), full_page=True)
        page.close()
    finally:
        watcher.kill()
        watcher.wait(timeout=30)
    assert not _enabled(site, "new-checkout")


def test_kill_switch_with_the_keyboard_alone(browser: Any, site: Server) -> None:
    _set_enabled(site, "dark-mode", True)
    page = _sign_in(browser, site, EDITOR)
    page.goto(f"{site.url}/p/shop/production/flags/dark-mode")
    for _ in range(30):  # tab until the kill switch has the focus
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "Turn off…":
            break
    else:
        pytest.fail("the kill switch cannot be reached with Tab")
    page.keyboard.press("Enter")
    page.wait_for_url("**/switch")
    # the reason field has the focus on arrival; Enter sends the form
    page.keyboard.type("rolling back by keyboard")
    page.keyboard.press("Enter")
    page.wait_for_url("**/flags/dark-mode?notice=*")
    assert not _enabled(site, "dark-mode")
    page.close()


def test_a_viewer_finds_no_control_and_forged_posts_are_refused(browser: Any, site: Server) -> None:
    _set_enabled(site, "new-checkout", True)
    page = _sign_in(browser, site, VIEWER)
    page.goto(f"{site.url}/p/shop/production/flags/new-checkout")
    buttons = [b.inner_text() for b in page.get_by_role("button").all()]
    assert buttons == ["Sign out"]  # nothing that changes a flag
    csrf = page.locator("input[name=csrf]").first.input_value()
    # the viewer's own session and a valid token: the server still refuses
    forged = page.request.post(
        f"{site.url}/p/shop/production/flags/new-checkout/switch",
        form={"csrf": csrf, "to": "off", "reason": "x", "confirmed": "yes", "version": "0"},
    )
    assert forged.status == 403
    assert "a viewer can change nothing" in forged.text()
    page.close()
    editor = _sign_in(browser, site, EDITOR)
    # an editor's session without the CSRF token (what a forging site would send)
    no_token = editor.request.post(
        f"{site.url}/p/shop/production/flags/new-checkout/switch",
        form={"to": "off", "reason": "x", "confirmed": "yes"},
    )
    assert no_token.status == 403
    assert "security token" in no_token.text()
    # the token of the session but from another site's page
    token = editor.locator("input[name=csrf]").first.input_value()
    cross = editor.request.post(
        f"{site.url}/p/shop/production/flags/new-checkout/switch",
        form={"csrf": token, "to": "off", "reason": "x", "confirmed": "yes"},
        headers={"Origin": "https://evil.example"},
    )
    assert cross.status == 403
    assert "another site" in cross.text()
    editor.close()
    assert _enabled(site, "new-checkout")  # none of it changed anything


def test_a_post_without_a_session_is_refused_before_its_body_is_read(site: Server) -> None:
    body = b"to=off&" + b"x" * (10 << 20)
    answer = httpx.post(
        f"{site.url}/p/shop/production/flags/new-checkout/switch",
        content=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=30,
    )
    assert answer.status_code == 403
    assert answer.text == "sign in first"


def test_pages_pass_axe_and_carry_a_strict_policy(browser: Any, site: Server) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    login = browser.new_page()
    login.goto(f"{site.url}/login")
    assert _serious_violations(login) == []
    login.close()
    page = _sign_in(browser, site, EDITOR)
    policy = page.request.get(f"{site.url}/p/shop/production/flags").headers
    assert "script-src 'self'" in policy["content-security-policy"]
    assert "unsafe-inline" not in policy["content-security-policy"]
    assert _serious_violations(page) == []
    page.screenshot(path=str(SHOTS / "flags.png"), full_page=True)
    page.goto(f"{site.url}/p/shop/production/flags/new-checkout")
    assert _serious_violations(page) == []
    _set_enabled(site, "dark-mode", True)
    page.goto(f"{site.url}/p/shop/production/flags/dark-mode")
    page.get_by_role("button", name="Turn off…").click()
    assert _serious_violations(page) == []
    page.close()


def test_pages_stay_usable_at_200_percent_zoom(browser: Any, site: Server) -> None:
    # 200% zoom of a 1280-pixel window is a 640-pixel layout viewport at twice the density
    page = _sign_in(
        browser, site, EDITOR, viewport={"width": 640, "height": 400}, device_scale_factor=2
    )
    for path in ("/p/shop/production/flags", "/p/shop/production/flags/new-checkout"):
        page.goto(site.url + path)
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px at 200%"
    assert page.get_by_role("button", name="Sign out").is_visible()
    page.close()


def _rules(site: Server, key: str) -> list[Any]:
    with site.client() as api:
        return list(api.get(f"{FLAGS}/{key}").json()["data"].get("rules", []))


def test_a_bad_rule_value_is_shown_at_its_field_and_nothing_is_saved(
    browser: Any, site: Server
) -> None:
    before = _rules(site, "new-checkout")
    page = _sign_in(browser, site, EDITOR)
    page.goto(f"{site.url}/p/shop/production/flags/new-checkout")
    page.get_by_role("link", name="Edit targeting").click()
    page.get_by_role("button", name="Add a rule").click()
    rule = len(before)
    page.locator(f"#f-r{rule}-c0-attr").fill("orders")
    page.locator(f"#f-r{rule}-c0-op").select_option("gt")
    page.locator(f"#f-r{rule}-c0-values").fill("many")
    page.get_by_role("button", name="Save targeting").click()
    values = page.locator(f"#f-r{rule}-c0-values")
    assert values.get_attribute("aria-invalid") == "true"
    described = values.get_attribute("aria-describedby")
    assert page.locator(f"#{described}").inner_text() == "must be a number, not str"
    summary = page.get_by_role("alert").inner_text()
    assert "Not saved: 1 problem" in summary
    assert f"Rule {rule + 1}, condition 1, values: must be a number, not str" in summary
    assert _serious_violations(page) == []
    page.screenshot(path=str(SHOTS / "rules-editor-error.png"), full_page=True)
    assert _rules(site, "new-checkout") == before  # nothing was written
    values.fill("3")  # what was typed is still there; only the wrong value changes
    page.get_by_role("button", name="Save targeting").click()
    page.wait_for_url("**/flags/new-checkout?notice=*")
    after = _rules(site, "new-checkout")
    assert after[rule] == {"when": [{"attr": "orders", "op": "gt", "values": [3]}], "serve": "on"}
    page.close()


def test_a_segment_made_on_its_page_is_used_in_a_rule(browser: Any, site: Server) -> None:
    page = _sign_in(browser, site, EDITOR)
    page.goto(f"{site.url}/p/shop/production/segments")
    page.get_by_label("Key").fill("vip customers")  # a space: refused, named
    page.get_by_role("button", name="Create segment").click()
    assert page.get_by_role("alert").is_visible()
    page.get_by_label("Key").fill("vip")
    page.get_by_role("button", name="Create segment").click()
    page.wait_for_url("**/segments/vip")
    page.get_by_label("Always in (keys, one per line)").fill("user-7\nuser-9")
    page.get_by_role("button", name="Save segment").click()
    page.wait_for_url("**/segments/vip?notice=*")
    assert _serious_violations(page) == []
    page.goto(f"{site.url}/p/shop/production/flags/dark-mode/edit")
    page.get_by_role("button", name="Add a rule").click()
    rule = len(_rules(site, "dark-mode"))
    page.locator(f"#f-r{rule}-c0-kind").select_option("segment")
    page.locator(f"#f-r{rule}-c0-segment").fill("vip")
    page.locator(f"#f-r{rule}-serve-mode").select_option("on")
    page.get_by_role("button", name="Save targeting").click()
    page.wait_for_url("**/flags/dark-mode?notice=*")
    assert _rules(site, "dark-mode")[rule] == {"when": [{"segment": "vip"}], "serve": "on"}
    with site.client() as api:
        vip = api.get("/api/v1/projects/shop/environments/production/segments/vip").json()
    assert vip["data"]["include"] == ["user-7", "user-9"]
    page.goto(f"{site.url}/p/shop/production/segments/nobody-here")
    assert "no segment 'nobody-here'" in page.inner_text("main")  # a page, not JSON
    page.close()


RELEASES = "/api/v1/projects/shop/environments/production/releases"


def test_a_release_started_watched_paused_and_aborted_from_its_pages(
    browser: Any, site: Server
) -> None:
    from playwright.sync_api import expect

    with site.client() as api:
        flag = {"variants": {"on": True, "off": False}, "default": "off"}
        assert api.put(f"{FLAGS}/search-v2", json=flag).status_code == 201
        releaser = {"name": "rita", "password": "rita-password-12", "role": "releaser"}
        assert api.post("/api/v1/users", json=releaser).status_code == 201
    page = _sign_in(browser, site, ("rita", "rita-password-12"))
    page.goto(f"{site.url}/p/shop/production/flags/search-v2")
    page.get_by_role("link", name="Start a guarded release…").click()
    page.get_by_label("Steps").fill("10 1h\n5 1h\n100")  # not increasing: refused, named
    page.get_by_role("button", name="Start the release").click()
    steps = page.locator("#f-steps")
    assert steps.get_attribute("aria-invalid") == "true"
    assert "line 2:" in page.locator("#f-steps-error").inner_text()
    with site.client() as api:
        assert api.get(RELEASES).json()["releases"] == []  # nothing started
    page.get_by_label("Steps").fill("10 1h\n100")
    page.get_by_role("button", name="Start the release").click()
    page.wait_for_url("**/releases/*")
    live = page.locator("#live")
    assert "running" in live.inner_text()
    assert "treatment at 10%" in live.inner_text()
    page.evaluate("window.stillThisPage = true")  # gone if the page reloads
    # the application reports exposures and errors of both arms: the chart draws itself
    events = [
        *(
            {"kind": "exposure", "flag": "search-v2", "variant": v}
            for v in ["on"] * 40 + ["off"] * 60
        ),
        *(
            {"kind": "metric", "metric": "errors", "variants": {"search-v2": v}}
            for v in ["on"] * 3 + ["off"] * 2
        ),
    ]
    sent = httpx.post(
        f"{site.url}/sdk/v1/events",
        json={"events": events},
        headers={"Authorization": f"Bearer {sdk_key(site.database_url)}"},
    )
    assert sent.status_code == 202, sent.text
    expect(page.locator("#live svg polyline")).to_have_count(2, timeout=20_000)
    assert page.evaluate("window.stillThisPage") is True
    assert "control (off)" in page.locator("#live table.numbers").inner_text()
    assert _serious_violations(page) == []
    page.screenshot(path=str(SHOTS / "release.png"), full_page=True)
    release_id = page.url.rsplit("/", 1)[1]
    # someone else pauses it through the API: the open page follows, without a reload
    with site.client() as api:
        paused = api.post(f"{RELEASES}/{release_id}/pause", json={"reason": "looking at logs"})
        assert paused.status_code == 200, paused.text
    expect(page.locator("#live")).to_contain_text("paused", timeout=10_000)
    assert page.evaluate("window.stillThisPage") is True
    page.reload()  # the buttons follow the phase
    page.get_by_role("button", name="Resume").click()
    page.wait_for_url("**?notice=Resumed.")
    page.get_by_label("Reason (for pause and abort)").fill("checkout errors")
    page.get_by_role("button", name="Abort: control for everyone").click()
    page.wait_for_url("**?notice=Aborted.")
    assert "aborted" in page.locator("#live").inner_text()
    with site.client() as api:
        state = api.get(f"{RELEASES}/{release_id}").json()
        assert state["phase"] == "aborted"
        assert api.get(f"{FLAGS}/search-v2").json()["data"]["default"] == "off"
    # the flag's kill switch says what was served in the last hour: the exposures sent above
    page.goto(f"{site.url}/p/shop/production/flags/search-v2")
    switch = page.locator("section", has_text="Kill switch").inner_text()
    assert "60 served “off”" in switch
    assert "40 served “on”" in switch
    page.close()


def test_a_change_scheduled_from_the_kill_switch_applies_at_its_time(
    browser: Any, site: Server
) -> None:
    from datetime import UTC, datetime, timedelta

    from playwright.sync_api import expect

    with site.client() as api:
        flag = {"variants": {"on": True, "off": False}, "default": "on"}
        assert api.put(f"{FLAGS}/promo-banner", json=flag).status_code == 201
    page = _sign_in(browser, site, EDITOR)
    page.goto(f"{site.url}/p/shop/production/flags/promo-banner")
    page.get_by_role("button", name="Turn off…").click()
    page.get_by_label("Reason (goes into the audit log)").fill("the promotion ends")
    page.get_by_label("At").fill("2020-01-01T10:00:00")  # in the past: refused, named
    page.get_by_role("button", name="Yes, turn it off").click()
    assert "past" in page.get_by_role("alert").inner_text()
    assert _enabled(site, "promo-banner")
    when = (datetime.now(UTC) + timedelta(seconds=3)).strftime("%Y-%m-%dT%H:%M:%S")
    page.get_by_label("At").fill(when)
    page.get_by_label("Time zone").fill("UTC")
    page.get_by_role("button", name="Yes, turn it off").click()
    page.wait_for_url("**/flags/promo-banner?notice=*")
    assert page.get_by_role("status").inner_text().startswith("Scheduled for")
    assert _enabled(site, "promo-banner")  # not yet
    page.get_by_role("link", name="Schedules").click()
    row = page.locator("tr", has_text="promo-banner")
    assert "pending" in row.inner_text()
    assert _serious_violations(page) == []
    page.screenshot(path=str(SHOTS / "schedules.png"), full_page=True)
    assert wait_for(lambda: not _enabled(site, "promo-banner"), timeout=30)
    page.reload()
    expect(page.locator("tr", has_text="promo-banner")).to_contain_text("applied")
    page.close()


def test_a_change_request_is_approved_by_a_second_person_only(browser: Any, site: Server) -> None:
    staging = "/api/v1/projects/shop/environments/staging"
    with site.client() as api:
        flag = {"variants": {"on": True, "off": False}, "default": "on", "enabled": False}
        assert api.put(f"{staging}/flags/wishlist", json=flag).status_code == 201
        assert api.put(f"{staging}/settings", json={"requires_approval": True}).status_code == 200
        for name in ("rose", "rob"):  # both may approve, but not what they asked for
            releaser = {"name": name, "password": f"{name}-password-123", "role": "releaser"}
            assert api.post("/api/v1/users", json=releaser).status_code == 201
    asker = _sign_in(browser, site, ("rose", "rose-password-123"))
    asker.goto(f"{site.url}/p/shop/staging/flags/wishlist")
    asker.get_by_role("button", name="Turn on…").click()
    asker.get_by_label("Reason (goes into the audit log)").fill("ready for the demo")
    asker.get_by_role("button", name="Yes, turn it on").click()
    asker.wait_for_url("**/flags/wishlist?notice=*")
    assert "change request was opened" in asker.get_by_role("status").inner_text()
    with site.client() as api:
        assert api.get(f"{staging}/flags/wishlist").json()["data"]["enabled"] is False
    asker.get_by_role("link", name="Approvals").click()
    card = asker.locator("article", has_text="wishlist")
    assert "+ enabled: true" in card.inner_text()
    assert card.get_by_role("button", name=re.compile("^Approve")).count() == 0
    change_id = card.locator("h3").inner_text().split(":")[0]
    csrf = asker.locator("input[name=csrf]").first.input_value()
    forged = asker.request.post(
        f"{site.url}/p/shop/staging/changes/{change_id}/approve", form={"csrf": csrf}
    )
    assert "someone else must approve it" in forged.text()  # refused by the server itself
    asker.close()
    approver = _sign_in(browser, site, ("rob", "rob-password-123"))
    approver.goto(f"{site.url}/p/shop/staging/changes")
    assert _serious_violations(approver) == []
    approver.screenshot(path=str(SHOTS / "approvals.png"), full_page=True)
    approver.get_by_label(f"Comment on {change_id}").fill("looks right")
    approver.get_by_role("button", name=f"Approve {change_id}").click()
    approver.wait_for_url("**/changes?notice=*")
    assert "applied" in approver.get_by_role("status").inner_text()
    with site.client() as api:
        assert api.get(f"{staging}/flags/wishlist").json()["data"]["enabled"] is True
    approver.close()


def test_webhooks_are_listed_and_their_secret_shown_once(browser: Any, site: Server) -> None:
    with site.client() as api:
        admin = {"name": "ada", "password": "ada-password-1234", "role": "admin"}
        assert api.post("/api/v1/users", json=admin).status_code == 201
    page = _sign_in(browser, site, ("ada", "ada-password-1234"))
    page.goto(f"{site.url}/p/shop/production/webhooks")
    page.get_by_label("URL (http or https)").fill("http://127.0.0.1:9/hooks")
    page.get_by_label("flag.switched_off").check()
    page.get_by_role("button", name="Subscribe").click()
    secret = page.locator("code.secret").inner_text()
    assert len(secret) >= 20
    page.get_by_role("link", name="Back to the webhooks").click()
    listing = page.inner_text("main")
    assert "http://127.0.0.1:9/hooks" in listing
    assert secret not in page.content()  # never shown again
    assert _serious_violations(page) == []
    page.close()


def test_flags_are_described_and_found_by_type_tag_and_owner(browser: Any, site: Server) -> None:
    page = _sign_in(browser, site, EDITOR)
    page.goto(f"{site.url}/p/shop/production/flags/new-checkout")
    page.get_by_text("Describe it").click()
    page.get_by_label("Type", exact=True).select_option("experiment")
    page.get_by_label("Owner").fill("team-payments")
    page.get_by_label("Tags, separated by commas").fill("checkout, q4")
    page.get_by_role("button", name="Save what it is for").click()
    page.wait_for_url("**?notice=The+metadata+is+saved.")
    assert "40 days" in page.locator("section", has_text="What it is for").inner_text()
    page.goto(f"{site.url}/p/shop/production/flags?tag=q4")
    keys = page.locator("tbody th a").all_inner_texts()
    assert keys == ["new-checkout"]
    page.goto(f"{site.url}/p/shop/production/flags?owner=team-payments&type=experiment")
    assert page.locator("tbody th a").all_inner_texts() == ["new-checkout"]
    page.goto(f"{site.url}/p/shop/production/flags?type=permission")
    assert page.locator("tbody th a").all_inner_texts() == []
    page.goto(f"{site.url}/p/shop/production/flags/new-checkout")
    page.get_by_text("Describe it").click()
    page.get_by_label("Expected lifetime in days (empty: the type's default)").fill("0")
    page.get_by_role("button", name="Save what it is for").click()
    assert "lifetime_days" in page.get_by_role("status").inner_text()  # named, not saved
    page.close()


def test_an_experiment_report_is_read_on_its_page(browser: Any, site: Server) -> None:
    import time as clock

    now = int(clock.time()) // 10 * 10
    buckets = {"control_ms": {"count": 100, "sum": 500.0, "buckets": {"70": 100}}}
    events = [
        {
            "kind": "experiment",
            "experiment": "search-v2",
            "at": now,
            "outcomes": {"match": 97, "mismatch": 3},
            **buckets,
            "candidate_ms": {"count": 100, "sum": 800.0, "buckets": {"75": 100}},
        },
        {
            "kind": "mismatch",
            "experiment": "search-v2",
            "at": now + 1,
            "context": "user-[redacted]",
            "control": {"ids": [1, 2]},
            "candidate": {"ids": [2, 1]},
        },
    ]
    sent = httpx.post(
        f"{site.url}/sdk/v1/events",
        json={"events": events},
        headers={"Authorization": f"Bearer {sdk_key(site.database_url)}"},
    )
    assert sent.status_code == 202, sent.text
    page = _sign_in(browser, site, VIEWER)

    def listed() -> bool:
        page.goto(f"{site.url}/p/shop/production/experiments")
        return page.get_by_role("link", name="search-v2").count() == 1

    assert wait_for(listed, timeout=30)  # once the intake has written its windows
    assert "3.00%" in page.locator("tr", has_text="search-v2").inner_text()
    page.get_by_role("link", name="search-v2").click()
    main = page.inner_text("main")
    assert "Mismatch rate: 3.00%" in main
    assert "candidate minus control" in main
    assert '{"ids": [2, 1]}' in main
    assert "user-[redacted]" in main
    assert page.locator("svg.chart").count() == 2
    assert _serious_violations(page) == []
    page.screenshot(path=str(SHOTS / "experiment.png"), full_page=True)
    page.close()


def test_the_timeline_after_a_deploy_a_release_and_a_deploy_rollback(
    browser: Any, site: Server
) -> None:
    env = "/api/v1/projects/shop/environments/production"
    with site.client() as api:
        flag = {"variants": {"on": True, "off": False}, "default": "on", "enabled": False}
        assert api.put(f"{FLAGS}/gift-cards", json=flag).status_code == 201
        assert api.put("/api/v1/projects/shop/services/shop-web", json={}).status_code in (200, 201)
        v1 = {"service": "shop-web", "version": "1.0.0", "references": {}}
        assert api.post(f"{env}/deploys", json=v1).status_code == 201
        v2 = {
            "service": "shop-web",
            "version": "1.1.0",
            "references": {"gift-cards": ["shop/cards.py:12"]},
            "reason": "weekly train",
        }
        assert api.post(f"{env}/deploys", json=v2).status_code == 201
    page = _sign_in(browser, site, EDITOR)
    page.goto(f"{site.url}/p/shop/production/timeline")
    dark = page.locator("section", has_text="Deployed dark").inner_text()
    assert "gift-cards" in dark  # the code is there, nobody has it yet
    _set_enabled(site, "gift-cards", True)  # released
    with site.client() as api:
        back = {"service": "shop-web", "version": "1.0.0", "references": {}}
        rolled = api.post(f"{env}/deploys", json=back)
        assert rolled.status_code == 201, rolled.text
    assert not _enabled(site, "gift-cards")  # the release followed the rollback
    page.reload()
    marks = page.locator(".timeline li").all_inner_texts()
    deploys = [m for m in marks if m.lower().startswith("deploy")]
    assert len(deploys) >= 3
    assert any("gift-cards" in m for m in marks if m.lower().startswith("release"))
    newest_first = "\n".join(marks)
    assert newest_first.index("1.0.0") < newest_first.index("1.1.0")
    assert "weekly train" in newest_first
    assert _serious_violations(page) == []
    page.screenshot(path=str(SHOTS / "timeline.png"), full_page=True)
    page.close()


def test_prerequisites_are_edited_and_stale_flags_found_from_the_list(
    browser: Any, site: Server
) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from unveil.store import tables as t
    from unveil.store.database import make_engine

    with site.client() as api:
        flag = {"variants": {"on": True, "off": False}, "default": "on"}
        assert api.put(f"{FLAGS}/old-banner", json=flag).status_code == 201
        assert api.put(f"{FLAGS}/needs-payments", json=flag).status_code == 201
    page = _sign_in(browser, site, EDITOR)
    page.goto(f"{site.url}/p/shop/production/flags/needs-payments/edit")
    page.get_by_role("button", name="Add a prerequisite").click()
    page.locator("#f-p0-flag").fill("no-such-flag")
    page.get_by_role("button", name="Save targeting").click()
    assert page.locator("#f-p0-flag").get_attribute("aria-invalid") == "true"
    assert "Prerequisite 1, flag" in page.get_by_role("alert").inner_text()
    page.locator("#f-p0-flag").fill("old-banner")
    page.get_by_role("button", name="Save targeting").click()
    page.wait_for_url("**/flags/needs-payments?notice=*")
    with site.client() as api:
        data = api.get(f"{FLAGS}/needs-payments").json()["data"]
    assert data["prerequisites"] == [{"flag": "old-banner", "variants": ["on"]}]
    # old-banner has served "on" to everyone for 60 days (its history moved back in time)
    engine = make_engine(site.database_url)
    try:
        with engine.begin() as conn:
            long_ago = datetime.now(UTC) - timedelta(days=60)
            conn.execute(
                update(t.audit).where(t.audit.c.target == "old-banner").values(at=long_ago)
            )
    finally:
        engine.dispose()
    page.goto(f"{site.url}/p/shop/production/flags?state=stale")
    row = page.locator("tbody tr", has_text="old-banner")
    assert "Stale:" in row.inner_text()
    assert page.locator("tbody tr", has_text="needs-payments").count() == 0
    page.close()


def test_every_page_passes_axe_and_stays_usable_at_200_percent(browser: Any, site: Server) -> None:
    paths = [
        "/p/shop/production/flags",
        "/p/shop/production/flags/new-checkout",
        "/p/shop/production/flags/new-checkout/edit",
        "/p/shop/production/flags/new-checkout/release",
        "/p/shop/production/segments",
        "/p/shop/production/releases",
        "/p/shop/production/experiments",
        "/p/shop/production/timeline",
        "/p/shop/production/schedules",
        "/p/shop/production/changes",
        "/p/shop/production/webhooks",
        "/p/shop/production/launches",
    ]
    admin = ("ada2", "ada2-password-123")
    with site.client() as api:
        body = {"name": admin[0], "password": admin[1], "role": "admin"}
        assert api.post("/api/v1/users", json=body).status_code == 201
    zoomed = {"viewport": {"width": 640, "height": 400}, "device_scale_factor": 2}
    for options in ({}, zoomed):
        page = _sign_in(browser, site, admin, **options)
        for path in paths:
            answer = page.goto(site.url + path)
            assert answer is not None
            assert answer.status == 200, path
            assert _serious_violations(page) == [], path
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{path} scrolls sideways by {overflow}px"
        page.close()


def test_a_release_is_scheduled_from_its_start_form(browser: Any, site: Server) -> None:
    from datetime import UTC, datetime, timedelta

    with site.client() as api:
        flag = {"variants": {"on": True, "off": False}, "default": "off"}
        assert api.put(f"{FLAGS}/later-search", json=flag).status_code == 201
        body = {"name": "rhea", "password": "rhea-password-12", "role": "releaser"}
        assert api.post("/api/v1/users", json=body).status_code == 201
    page = _sign_in(browser, site, ("rhea", "rhea-password-12"))
    page.goto(f"{site.url}/p/shop/production/flags/later-search/release")
    page.get_by_label("Steps").fill("10 1h\n100")
    page.get_by_label("At", exact=True).fill("2020-01-01T10:00:00")
    page.get_by_role("button", name="Start the release").click()
    assert page.locator("#f-at").get_attribute("aria-invalid") == "true"
    when = (datetime.now(UTC) + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%S")
    page.get_by_label("At", exact=True).fill(when)
    page.get_by_role("button", name="Start the release").click()
    page.wait_for_url("**/flags/later-search?notice=*")
    assert "scheduled for" in page.get_by_role("status").inner_text()
    with site.client() as api:
        pending = api.get(f"{RELEASES.rsplit('/', 1)[0]}/schedules").json()["schedules"]
        mine = [s for s in pending if s["target"] == "later-search"]
        assert [s["action"] for s in mine] == ["release.start"]
        assert [s["state"] for s in mine] == ["pending"]
        assert api.get(f"{RELEASES}?flag=later-search").json()["releases"] == []
    page.close()


def test_a_launch_is_read_on_the_calendar_and_stopped_from_it(browser: Any, site: Server) -> None:
    shop = "/api/v1/projects/shop"
    with site.client() as api:
        for key in ("gift-a", "gift-b"):
            flag = {"variants": {"on": True, "off": False}, "default": "on", "enabled": False}
            assert api.put(f"{FLAGS}/{key}", json=flag).status_code == 201
        made = api.post(
            f"{shop}/launches",
            json={
                "name": "Gifts",
                "notes": "Gifts are here.\nSecond line.",
                "changes": [
                    {"environment": "production", "flag": k, "enabled": True}
                    for k in ("gift-a", "gift-b")
                ],
            },
        )
        assert made.status_code == 201, made.text
        launch = made.json()["id"]
        assert api.post(f"{shop}/launches/{launch}/start").status_code == 200
        assert wait_for(lambda: _enabled(site, "gift-a") and _enabled(site, "gift-b"))
    page = _sign_in(browser, site, EDITOR)
    page.goto(f"{site.url}/p/shop/production/launches")
    card = page.locator("article", has_text="Gifts")
    assert "Gifts are here." in card.inner_text()
    assert _serious_violations(page) == []
    card.get_by_label(f"Reason for stopping {launch}").fill("gift provider down")
    card.get_by_role("button", name="Stop Gifts: turn every flag back").click()
    page.wait_for_url("**/launches?notice=*")
    assert not _enabled(site, "gift-a")
    assert not _enabled(site, "gift-b")
    page.close()
