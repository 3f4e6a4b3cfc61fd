"""The examples in README.md and docs/ do what the text around them says."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server_process import Server, database, sdk_key, start_server, stop

ROOT = Path(__file__).resolve().parent.parent


def _code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def _block_after(path: Path, heading: str, language: str) -> str:
    text = path.read_text(encoding="utf-8")
    return _code_blocks(text[text.index(heading) :], language)[0]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with database("sqlite", tmp_path) as url:
        running = start_server(url)
        try:
            with running.client() as api:
                answer = api.put(
                    "/api/v1/projects/shop/environments/production/flags/new-checkout",
                    json={"targets": {"on": ["user-1"]}, "default": "off"},
                )
                assert answer.status_code == 201, answer.text
            yield running
        finally:
            stop(running)


def test_the_openfeature_example_evaluates_once_ready(server: Server, tmp_path: Path) -> None:
    """docs/sdk.md: the first evaluation after setting the provider is a real answer."""
    from openfeature import api

    code = _block_after(ROOT / "docs" / "sdk.md", "## OpenFeature", "python")
    lines = code.rstrip().splitlines()
    assert lines[-1].startswith("client.get_boolean_details(")
    lines[-1] = "details = " + lines[-1]
    source = "\n".join(lines).replace('"unveil-sdk-..."', "KEY")
    source = source.replace("Client(url,", "Client(url, cache_dir=CACHE,")
    namespace: dict[str, Any] = {
        "url": server.url,
        "KEY": sdk_key(server.database_url),
        "CACHE": tmp_path / "cache",
    }
    try:
        exec(compile(source, "docs/sdk.md", "exec"), namespace)
        details = namespace["details"]
        assert details.error_code is None, (details.error_code, details.error_message)
        assert details.value is True
        assert details.reason == "TARGETING_MATCH"
    finally:
        api.shutdown()


def test_the_readme_quick_start_answers_as_it_says(tmp_path: Path) -> None:
    from unveil import Client, Reason

    flags_file = _code_blocks((ROOT / "README.md").read_text(encoding="utf-8"), "yaml")[0]
    path = tmp_path / "flags.yaml"
    path.write_text(flags_file)
    result = Client.from_file(path).evaluate("new-checkout", {"key": "user-9"})
    assert (result.value, result.variant, result.reason) == (True, "on", Reason.SPLIT)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "# (True, 'on', <Reason.SPLIT: 'SPLIT'>)" in readme
    assert (
        repr((result.value, result.variant, result.reason))
        == "(True, 'on', <Reason.SPLIT: 'SPLIT'>)"
    )


def test_no_doc_promises_what_is_not_built() -> None:
    """What exists is described as existing; what does not, as not built yet."""
    paths = [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
    for path in paths:
        text = path.read_text(encoding="utf-8").lower()
        assert "being built" not in text, path
        assert "(and later" not in text, path
    # the dashboard's pages that exist are the ones its doc describes; the rest is said
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/dashboard.md" in readme
    dashboard = (ROOT / "docs" / "dashboard.md").read_text(encoding="utf-8")
    assert "## What is not built yet" in dashboard


def test_time_operators_compare_the_attribute_the_app_passes() -> None:
    """docs/flags-file.md, "Time": the attribute is compared; the clock is never read."""
    from datetime import UTC, datetime

    from unveil import Client
    from unveil.cli.main import _demo_path

    flags = Client.from_file(_demo_path())
    inside = datetime(2026, 12, 24, 10, tzinfo=UTC)
    outside = datetime(2027, 2, 1, tzinfo=UTC)

    def variant(context: dict[str, Any]) -> str | None:
        return flags.evaluate("holiday-banner", {"key": "u", **context}).variant

    assert variant({"now": inside.timestamp()}) == "winter"
    assert variant({"now": inside.isoformat()}) == "winter"
    assert variant({"now": outside.timestamp()}) == "none"
    assert variant({"now": inside}) == "none"  # a datetime object is not read
    assert variant({}) == "none"  # no attribute: outside the rule, whatever the clock says
    code = _block_after(ROOT / "docs" / "flags-file.md", "### Time", "python")
    namespace: dict[str, Any] = {"flags": flags, "user": type("User", (), {"id": "u"})()}
    exec(compile(code, "docs/flags-file.md", "exec"), namespace)  # our own docs


def test_the_releasing_quick_start_starts_a_release_on_the_demo_server(tmp_path: Path) -> None:
    """docs/releasing.md, "In five minutes": the releases file checks and starts as shown."""
    from click.testing import CliRunner

    from tests.server_process import ADMIN_TOKEN
    from unveil.cli.main import main

    block = _block_after(ROOT / "docs" / "releasing.md", "## In five minutes", "sh")
    heredoc = block.split("<<'YAML'\n", 1)[1].split("\nYAML\n", 1)[0]
    releases = tmp_path / "releases.yaml"
    releases.write_text(heredoc + "\n", encoding="utf-8")
    commands = [line.split("#")[0].split() for line in block.splitlines()]
    wanted = [c[1:] for c in commands if c[:2] == ["unveil", "release"]]
    assert [c[1] for c in wanted] == ["check", "start", "status"]
    with database("sqlite", tmp_path) as url:
        running = start_server(url, None, False, "--demo")
        try:
            env = {"UNVEIL_URL": running.url, "UNVEIL_TOKEN": ADMIN_TOKEN}
            for args in wanted:
                args = [str(releases) if a == "releases.yaml" else a for a in args]
                result = CliRunner().invoke(main, args, env=env, catch_exceptions=False)
                assert result.exit_code == 0, (args, result.output)
            assert "r1  new-checkout  running  step 1/4  25% treatment" in result.output
        finally:
            stop(running)
