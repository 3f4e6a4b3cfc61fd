"""The command line, run in-process."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from unveil.cli.main import main


def test_validate_ok(tmp_path: Path) -> None:
    path = tmp_path / "flags.yaml"
    path.write_text("flags:\n  f: {default: on}\n")
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 0
    assert "ok: 1 flags, 0 segments" in result.output


def test_validate_prints_every_problem_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "flags.yaml"
    path.write_text(
        "flags:\n  f:\n    rules: [{when: [{attr: x, op: equal, values: [1]}], serve: on}]\n"
        "    default: {rollout: {on: 50, off: 40}}\n"
    )
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 1
    assert "refused: 2 problem(s)" in result.output
    assert "flags.f.rules[0].when[0].op: unknown operator 'equal'" in result.output
    assert "flags.f.default.rollout: percentages add up to 90, not 100" in result.output


def test_evaluate_prints_json(tmp_path: Path) -> None:
    path = tmp_path / "flags.yaml"
    path.write_text("flags:\n  f: {targets: {on: [a]}, default: off}\n")
    result = CliRunner().invoke(main, ["evaluate", str(path), "f", "-c", '{"key": "a"}'])
    assert result.exit_code == 0
    out = json.loads(result.output)
    assert (out["value"], out["variant"], out["reason"]) == (True, "on", "TARGETING_MATCH")


def test_evaluate_refuses_bad_context_json(tmp_path: Path) -> None:
    path = tmp_path / "flags.yaml"
    path.write_text("flags:\n  f: {default: off}\n")
    result = CliRunner().invoke(main, ["evaluate", str(path), "f", "-c", "{nope"])
    assert result.exit_code == 2
    assert "not JSON" in result.output


def test_format_writes_canonical_json(tmp_path: Path) -> None:
    path = tmp_path / "flags.yaml"
    path.write_text("flags:\n  f: {default: on}\n")
    result = CliRunner().invoke(main, ["format", str(path), "--to", "json"])
    assert result.exit_code == 0
    assert json.loads(result.output)["flags"]["f"]["off_variant"] == "off"


def test_demo_evaluates_the_bundled_flags() -> None:
    result = CliRunner().invoke(main, ["demo"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "valid" in result.output
    assert "new-checkout" in result.output
    assert "PREREQUISITE_FAILED" in result.output
