"""Flags files: YAML 1.2 and JSON, duplicate keys, syntax errors with line numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from unveil.core import InvalidDocument
from unveil.sdk.files import dump_document, load_document, read_data


def test_yaml_is_read_as_1_2_so_on_and_off_are_strings() -> None:
    data = read_data("a: on\nb: off\nc: yes\nd: no\ne: true\n", "yaml")
    assert data == {"a": "on", "b": "off", "c": "yes", "d": "no", "e": True}


def test_serve_on_names_the_variant(tmp_path: Path) -> None:
    path = tmp_path / "flags.yaml"
    path.write_text("version: 1\nflags:\n  f:\n    default: on\n")
    assert load_document(path).flags["f"].default == "on"


def test_yaml_timestamps_become_rfc3339_text(tmp_path: Path) -> None:
    path = tmp_path / "flags.yaml"
    path.write_text(
        "flags:\n  f:\n    rules:\n      - when: [{attr: t, op: after, "
        "values: [2026-01-01T00:00:00Z]}]\n        serve: on\n    default: off\n"
    )
    clause = load_document(path).flags["f"].rules[0].when[0]
    assert clause.values == ("2026-01-01T00:00:00Z",)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("text", "fmt", "expected"),
    [
        ("flags:\n  f: {default: on}\n  f: {default: off}\n", "yaml", "f.yaml:3:3"),
        ('{"flags": {"f": {"default": "on"}, "f": {}}}', "json", "duplicate key 'f'"),
        ("flags: [1\n", "yaml", "f.yaml:2:1"),
        ('{"flags": }', "json", "f.json:1:11: Expecting value"),
    ],
)
def test_syntax_errors_name_where(tmp_path: Path, text: str, fmt: str, expected: str) -> None:
    path = tmp_path / f"f.{fmt}"
    path.write_text(text)
    with pytest.raises(InvalidDocument) as info:
        load_document(path)
    assert expected in str(info.value)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidDocument, match="cannot read"):
        load_document(tmp_path / "missing.yaml")


def test_dumped_yaml_reads_back(tmp_path: Path) -> None:
    src = tmp_path / "in.yaml"
    src.write_text(
        "flags:\n  f:\n    description: 'a: b'\n    default: {rollout: {on: 12.5, off: 87.5}}\n"
    )
    doc = load_document(src)
    out = tmp_path / "out.yaml"
    out.write_text(dump_document(doc, "yaml"))
    assert load_document(out) == doc
    js = tmp_path / "out.json"
    js.write_text(dump_document(doc, "json"))
    assert load_document(js) == doc


def test_strings_the_yaml_emitter_would_write_unreadably_still_round_trip() -> None:
    from unveil.core import parse_document
    from unveil.sdk.files import dump_document, read_data

    document = parse_document(
        {
            "flags": {
                "f": {
                    "kind": "json",
                    "variants": {"a": {":a": ":b"}},
                    "off_variant": "a",
                    "default": "a",
                }
            }
        }
    )
    text = dump_document(document, "yaml")
    assert parse_document(read_data(text, "yaml")) == document


# -- review of issues 14/15: a checks file (or flags file) that is a trap ---------------


def test_a_yaml_alias_that_contains_itself_is_refused_not_a_crash() -> None:
    with pytest.raises(InvalidDocument, match="refers to itself"):
        read_data("a: &a [1, *a]\n", "yaml", "checks.yaml")


def test_aliases_that_expand_beyond_bounds_are_refused_at_once() -> None:
    """Nine levels of ten aliases each stand for 10**9 values (a billion laughs)."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    with pytest.raises(InvalidDocument, match="aliases"):
        read_data("\n".join(lines) + "\n", "yaml", "checks.yaml")
    # aliases used within reason are read as before
    assert read_data("a: &a {x: 1}\nb: [*a, *a]\n", "yaml") == {
        "a": {"x": 1},
        "b": [{"x": 1}, {"x": 1}],
    }


@pytest.mark.parametrize(
    ("text", "fmt"),
    [("[" * 100_000 + "]" * 100_000, "json"), ("a: " + "[" * 5000 + "]" * 5000, "yaml")],
)
def test_a_document_nested_too_deeply_is_refused_not_a_crash(text: str, fmt: str) -> None:
    with pytest.raises(InvalidDocument, match="nested too deeply"):
        read_data(text, fmt, "checks")
