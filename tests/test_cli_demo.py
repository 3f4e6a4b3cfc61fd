"""The CLI against a real ``unveil serve --demo``, walked as the README walks it.

No --project anywhere: the demo seeds the project the CLI uses by default.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tests.server_process import ADMIN_TOKEN, Server, database, start_server, stop
from unveil.cli.main import DEMO_ENVIRONMENTS, _demo_path, main
from unveil.sdk.files import load_document, read_data

DEMO_FLAGS = sorted(load_document(_demo_path()).flags)
QUICK_START = """\
version: 1
flags:
  new-checkout:
    description: New checkout flow
    targets: {on: [user-1]}
    rules:
      - when: [{attr: country, op: in, values: [NL, DE]}]
        serve: on
    default: {rollout: {on: 25, off: 75}}
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with database("sqlite", tmp_path_factory.mktemp("demo")) as url:
        running = start_server(url, None, False, "--demo")
        try:
            yield running
        finally:
            stop(running)


def _cli(server: Server, *args: str) -> Result:
    env = {"UNVEIL_URL": server.url, "UNVEIL_TOKEN": ADMIN_TOKEN, "UNVEIL_CONFIG": "/nonexistent"}
    env["UNVEIL_PROJECT"] = ""  # not set: the default project
    result = CliRunner().invoke(main, list(args), env=env)
    # whatever happened, it was said in words: no traceback, no stray exception
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    return result


def _flag(server: Server, env: str, key: str) -> dict[str, Any]:
    with server.client() as api:
        answer = api.get(f"/api/v1/projects/default/environments/{env}/flags/{key}")
        assert answer.status_code == 200
        return dict(answer.json())


@pytest.mark.parametrize("key", DEMO_FLAGS)
def test_every_demo_flag_shows_as_the_server_has_it(demo: Server, key: str) -> None:
    """Flags with segments and prerequisites too (these once crashed with a traceback)."""
    shown = _cli(demo, "flags", "show", key, "-e", "production")
    assert shown.exit_code == 0, shown.output
    header, _, body = shown.output.partition("\n")
    stored = _flag(demo, "production", key)
    assert header.startswith(f"# default / production: flag version {stored['version']}")
    if "environment_version" in stored:
        assert header.endswith(
            f" (last changed at environment version {stored['environment_version']})"
        )
    assert read_data(body, "yaml") == {"flags": {key: stored["data"]}}


def test_the_demo_is_in_the_default_project(demo: Server) -> None:
    for env in DEMO_ENVIRONMENTS:
        listed = _cli(demo, "flags", "list", "-e", env)
        assert listed.exit_code == 0, listed.output
        assert "flag version" in listed.output
        for key in DEMO_FLAGS:
            assert key in listed.output


def test_rollout_of_a_non_boolean_flag_points_at_variant(demo: Server) -> None:
    before = _flag(demo, "development", "search-ranking")
    refused = _cli(demo, "flags", "rollout", "search-ranking", "10", "-e", "development")
    assert refused.exit_code == 2
    assert "unknown field" not in refused.output
    assert "search-ranking" in refused.output
    assert "--variant" in refused.output
    assert "classic, semantic, hybrid" in refused.output
    unknown = _cli(
        demo, "flags", "rollout", "search-ranking", "10", "--variant", "x", "-e", "development"
    )
    assert unknown.exit_code == 2
    assert "no variant 'x'" in unknown.output
    assert _flag(demo, "development", "search-ranking") == before  # nothing changed
    rolled = _cli(
        demo,
        "flags",
        "rollout",
        "search-ranking",
        "10",
        "--variant",
        "semantic",
        "-e",
        "development",
    )
    assert rolled.exit_code == 0, rolled.output
    assert "search-ranking: semantic to 10% in development (flag version 2" in rolled.output
    default = _flag(demo, "development", "search-ranking")["data"]["default"]
    assert default["rollout"] == {"classic": 90, "semantic": 10}
    assert "the default now serves: classic 90%, semantic 10%" in rolled.output  # hybrid is gone
    precise = _cli(
        demo,
        "flags",
        "rollout",
        "search-ranking",
        "10.0001",
        "--variant",
        "semantic",
        "-e",
        "development",
    )
    assert precise.exit_code == 2  # refused, as the API refuses it, not rounded in silence
    assert "more than three decimals" in precise.output
    assert _flag(demo, "development", "search-ranking")["data"]["default"] == default


def test_writes_and_audit_say_which_version_is_which(demo: Server) -> None:
    written = _cli(demo, "flags", "disable", "payments-v2", "-e", "development", "-r", "probe")
    assert written.exit_code == 0, written.output
    flag_version = _flag(demo, "development", "payments-v2")["version"]
    assert f"(flag version {flag_version}" in written.output
    with demo.client() as api:
        path = "/api/v1/projects/default/environments/development"
        env_version = api.get(f"{path}/document").headers["etag"].strip('"')
        # the environment's version is printed exactly when the server reports it
        current = api.get(f"{path}/flags/payments-v2")
        echo = api.put(
            f"{path}/flags/payments-v2",
            json=current.json()["data"],
            headers={"If-Match": current.headers["etag"]},
        ).json()
    if "environment_version" in echo:
        assert f"environment version {env_version}" in written.output
    else:
        assert "environment version" not in written.output
    history = _cli(demo, "audit", "-e", "development", "--flag", "payments-v2")
    assert f"flag.update payments-v2  (environment version {env_version})" in history.output


def test_audit_shows_what_changed_and_takes_a_time_window(demo: Server) -> None:
    assert (
        _cli(demo, "flags", "disable", "new-checkout", "-e", "staging", "-r", "kill").exit_code == 0
    )
    history = _cli(demo, "audit", "-e", "staging", "--flag", "new-checkout")
    assert history.exit_code == 0, history.output
    assert "reason: kill" in history.output
    assert "~ enabled: true -> false" in history.output
    seeded = _cli(demo, "audit", "-e", "staging", "--flag", "staging")
    assert "document.apply staging" in seeded.output
    assert "flags: 6 added; segments: 2 added" in seeded.output
    assert "+ flag new-checkout" in seeded.output
    none = _cli(demo, "audit", "-e", "staging", "--until", "2000-01-01T00:00:00Z")
    assert none.exit_code == 0, none.output
    assert "0 entries" in none.output
    recent = _cli(
        demo, "audit", "-e", "staging", "--since", "1h", "--until", "2999-01-01T00:00:00Z"
    )
    assert "~ enabled: true -> false" in recent.output
    later = _cli(demo, "audit", "-e", "staging", "--since", "2999-01-01T00:00:00Z")
    assert "0 entries" in later.output
    bad = _cli(demo, "audit", "-e", "staging", "--until", "yesterday")
    assert bad.exit_code == 1
    assert "until" in bad.output
    bad_age = _cli(demo, "audit", "-e", "staging", "--since", "3x")
    assert bad_age.exit_code != 0
    assert "since" in bad_age.output


def test_dry_run_of_the_readme_file_says_what_and_why(demo: Server, tmp_path: Path) -> None:
    path = tmp_path / "flags.yaml"
    path.write_text(QUICK_START)
    dry = _cli(demo, "apply", "-f", str(path), "-e", "production", "--dry-run")
    assert dry.exit_code == 0, dry.output
    lines = dry.output.splitlines()
    assert lines[0] == "production: flags: 1 changed, 5 removed; segments: 2 removed"
    assert "~ flag new-checkout" in lines
    assert '    - prerequisites: [{"flag": "payments-v2", "variants": ["on"]}]' in lines
    assert '    - targets.on[1]: "user-2"' in lines
    assert "- flag payments-v2" in lines
    assert (
        "5 flags and 2 segments not in flags.yaml would be removed: "
        "apply makes production exactly flags.yaml" in lines
    )
    assert lines[-1].startswith("dry run: nothing was changed")
    assert _flag(demo, "production", "payments-v2")["version"] >= 1  # still there


def test_export_edit_dry_run_apply(demo: Server, tmp_path: Path) -> None:
    """The README's change-through-a-file walk: only the edited field shows."""
    exported = _cli(demo, "export", "-e", "production")
    assert exported.exit_code == 0
    assert exported.output.count("rollout: {on: 25, off: 75}") == 1
    path = tmp_path / "flags.yaml"
    path.write_text(
        exported.output.replace("rollout: {on: 25, off: 75}", "rollout: {on: 50, off: 50}")
    )
    dry = _cli(demo, "apply", "-f", str(path), "-e", "production", "--dry-run")
    assert dry.output.splitlines()[:4] == [
        "production: flags: 1 changed",
        "~ flag new-checkout",
        "    ~ default.rollout.on: 25 -> 50",
        "    ~ default.rollout.off: 75 -> 50",
    ]
    assert "removed" not in dry.output
    applied = _cli(demo, "apply", "-f", str(path), "-e", "production", "-r", "half")
    assert applied.exit_code == 0, applied.output
    assert "applied to production (environment version" in applied.output
    assert _flag(demo, "production", "new-checkout")["data"]["default"] == {
        "rollout": {"on": 50, "off": 50}
    }
    again = _cli(demo, "apply", "-f", str(path), "-e", "production")
    assert "production is up to date (environment version" in again.output
    history = _cli(demo, "audit", "-e", "production", "--flag", "production")
    assert "~ default.rollout.on: 25 -> 50" in history.output
    assert json.loads(_cli(demo, "export", "-e", "production", "--to", "json").output)["flags"]
