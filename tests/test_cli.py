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


def test_a_large_document_diff_gives_counts_first_then_keys() -> None:
    from unveil.cli.diff import DETAILED_ITEMS, diff_documents, document_lines

    before = {"flags": {f"f{i}": {"default": "off"} for i in range(DETAILED_ITEMS + 5)}}
    after = {"flags": {f"f{i}": {"default": "on"} for i in range(DETAILED_ITEMS + 5)}}
    after["flags"]["new"] = {"default": "on"}
    lines = document_lines(diff_documents(before, after))
    assert lines[0] == f"flags: 1 added, {DETAILED_ITEMS + 5} changed"
    assert "~ flag f0" in lines
    assert "+ flag new" in lines
    assert not any("default" in line for line in lines)  # too many for per-field lines
    assert lines[-1] == f"(fields left out: more than {DETAILED_ITEMS} items changed)"
    small = document_lines(diff_documents(before, {"flags": {**before["flags"], "f0": {}}}))
    assert small == ["flags: 1 changed", "~ flag f0", '    - default: "off"']


def test_field_diffs_tell_types_apart_and_stay_bounded() -> None:
    from unveil.cli.diff import MAX_DEPTH, diff_values, field_lines

    assert field_lines(diff_values({"values": [1]}, {"values": [True]})) == [
        "~ values[0]: 1 -> true"
    ]
    deep: object = "x"
    other: object = "y"
    for _ in range(50):  # deeper than a person reads: shown whole below MAX_DEPTH
        deep, other = {"a": deep}, {"a": other}
    changes = diff_values({"v": deep}, {"v": other})
    assert len(changes) == 1
    assert changes[0].path == "v" + ".a" * (MAX_DEPTH - 1)
    many = field_lines(diff_values({}, {f"k{i}": i for i in range(20)}), limit=3)
    assert many == ["+ k0: 0", "+ k1: 1", "+ k2: 2", "… and 17 more"]
