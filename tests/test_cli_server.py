"""The CLI against a real server: flags, apply, export, audit, import --env."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tests.server_process import ADMIN_TOKEN, Server, database, start_server, stop
from unveil.cli.main import main


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with database("sqlite", tmp_path_factory.mktemp("cli")) as url:
        running = start_server(url)
        try:
            yield running
        finally:
            stop(running)


def _cli(server: Server, *args: str) -> Result:
    env = {
        "UNVEIL_URL": server.url,
        "UNVEIL_TOKEN": ADMIN_TOKEN,
        "UNVEIL_PROJECT": "shop",
        "UNVEIL_CONFIG": "/nonexistent",
    }
    return CliRunner().invoke(main, list(args), env=env)


def test_flag_commands_change_the_server(server: Server) -> None:
    assert _cli(server, "flags", "create", "cli-flag", "-e", "staging").exit_code == 0
    again = _cli(server, "flags", "create", "cli-flag", "-e", "staging")
    assert again.exit_code == 1
    assert "409" in again.output
    rolled = _cli(server, "flags", "rollout", "cli-flag", "25", "-e", "staging", "-r", "ramp")
    assert rolled.exit_code == 0, rolled.output
    disabled = _cli(server, "flags", "disable", "cli-flag", "-e", "staging")
    assert "disabled in staging (flag version 3" in disabled.output
    shown = _cli(server, "flags", "show", "cli-flag", "-e", "staging")
    assert "enabled: false" in shown.output
    assert "on: 25" in shown.output
    listed = _cli(server, "flags", "list", "-e", "staging")
    assert "cli-flag" in listed.output
    history = _cli(server, "audit", "-e", "staging", "--flag", "cli-flag")
    assert history.output.count("flag.update") == 2
    assert "ramp" in history.output
    missing = _cli(server, "flags", "enable", "nope", "-e", "staging")
    assert missing.exit_code == 1
    assert "404: no flag 'nope'" in missing.output


def test_apply_is_idempotent_and_export_gives_it_back(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "flags.yaml"
    path.write_text("flags:\n  dark-mode:\n    default: 'on'\n  search-v2:\n    default: 'off'\n")
    dry = _cli(server, "apply", "-f", str(path), "-e", "production", "--dry-run")
    assert "+ flag dark-mode" in dry.output
    assert "dry run" in dry.output
    first = _cli(server, "apply", "-f", str(path), "-e", "production")
    assert "applied to production" in first.output
    second = _cli(server, "apply", "-f", str(path), "-e", "production")
    assert "production is up to date" in second.output
    exported = _cli(server, "export", "-e", "production", "--to", "json")
    assert set(json.loads(exported.output)["flags"]) == {"dark-mode", "search-v2"}
    broken = tmp_path / "broken.yaml"
    broken.write_text("flags:\n  x: {rules: 3}\n")
    refused = _cli(server, "apply", "-f", str(broken), "-e", "production")
    assert refused.exit_code == 1
    assert "flags.x.rules: must be a list" in refused.output


def test_no_token_is_a_usage_error(server: Server) -> None:
    result = CliRunner().invoke(
        main, ["flags", "list", "-e", "x"], env={"UNVEIL_TOKEN": "", "UNVEIL_CONFIG": "/none"}
    )
    assert result.exit_code == 2
    assert "no token" in result.output


def test_import_unleash_straight_into_an_environment(server: Server, tmp_path: Path) -> None:
    source = tmp_path / "features.json"
    source.write_text(
        json.dumps(
            {
                "version": 2,
                "features": [
                    {
                        "name": "from-unleash",
                        "enabled": True,
                        "strategies": [
                            {
                                "name": "flexibleRollout",
                                "parameters": {"rollout": "30", "stickiness": "userId"},
                            }
                        ],
                    }
                ],
            }
        )
    )
    env = {"UNVEIL_URL": server.url, "UNVEIL_TOKEN": ADMIN_TOKEN, "UNVEIL_CONFIG": "/none"}
    result = CliRunner().invoke(
        main, ["import", "unleash", str(source), "--env", "staging", "-p", "shop"], env=env
    )
    assert result.exit_code == 0, result.output
    assert "+ flag from-unleash" in result.output
    with server.client() as api:
        flag = api.get("/api/v1/projects/shop/environments/staging/flags/from-unleash").json()
        assert flag["data"]["bucketing"] == "unleash"
        audit = api.get(
            "/api/v1/projects/shop/environments/staging/audit", params={"target": "staging"}
        ).json()["entries"]
        assert audit[-1]["reason"] == "imported from features.json"


def test_apply_says_was_for_one_removed_entry(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "flags.yaml"
    path.write_text("flags:\n  kept: {default: 'on'}\n  gone: {default: 'off'}\n")
    assert _cli(server, "apply", "-f", str(path), "-e", "staging").exit_code == 0
    path.write_text("flags:\n  kept: {default: 'on'}\n")
    one = _cli(server, "apply", "-f", str(path), "-e", "staging")
    assert one.exit_code == 0, one.output
    assert f"1 flag not in {path.name} was removed: apply makes staging exactly" in one.output
    path.write_text("flags: {}\n")
    dry = _cli(server, "apply", "-f", str(path), "-e", "staging", "--dry-run")
    assert f"1 flag not in {path.name} would be removed" in dry.output


def test_flags_list_narrows_by_pattern_and_speaks_json(server: Server) -> None:
    """At thousands of flags a table of all of them is no answer: a pattern narrows it, and
    --json gives scripts the rows without a table to parse."""
    for key in ("checkout-a", "checkout-b", "search-a"):
        assert _cli(server, "flags", "create", key, "-e", "production").exit_code == 0
    table = _cli(server, "flags", "list", "-e", "production", "--match", "checkout-*")
    assert table.exit_code == 0, table.output
    assert "checkout-a" in table.output
    assert "checkout-b" in table.output
    assert "search-a" not in table.output
    listed = _cli(server, "flags", "list", "-e", "production", "--match", "*-a", "--json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)
    assert [row["key"] for row in rows] == ["checkout-a", "search-a"]
    assert rows[0] == {
        "key": "checkout-a",
        "kind": "boolean",
        "enabled": True,
        "default": "off",
        "version": rows[0]["version"],
    }
    assert isinstance(rows[0]["version"], int)
