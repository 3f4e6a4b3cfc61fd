"""The offline client: from a file or a dict, reload, never raising."""

from __future__ import annotations

from pathlib import Path

import pytest

import unveil
from unveil import Client, ErrorCode, InvalidDocument, Reason


def test_from_dict() -> None:
    client = Client.from_file({"flags": {"f": {"default": "on"}}})
    assert client.enabled("f", {"key": "a"}) is True
    assert client.value("f", {}, False) is True
    assert client.evaluate("f").reason is Reason.DEFAULT


def test_from_file_and_reload(tmp_path: Path) -> None:
    path = tmp_path / "flags.yaml"
    path.write_text("flags:\n  f: {default: on}\n")
    client = Client.from_file(path)
    assert client.enabled("f") is True
    path.write_text("flags:\n  f: {default: off}\n")
    client.reload()
    assert client.enabled("f") is False


def test_bad_reload_keeps_the_flags_in_use(tmp_path: Path) -> None:
    path = tmp_path / "flags.yaml"
    path.write_text("flags:\n  f: {default: on}\n")
    client = Client.from_file(path)
    path.write_text("flags:\n  f: {default: maybe}\n")
    with pytest.raises(InvalidDocument, match="unknown variant 'maybe'"):
        client.reload()
    assert client.enabled("f") is True


def test_bad_file_refused_whole(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    path.write_text('{"flags": {"ok": {"default": "on"}, "bad": {"default": 1}}}')
    with pytest.raises(InvalidDocument) as info:
        Client.from_file(path)
    assert [p.path for p in info.value.problems] == ["flags.bad.default"]


def test_never_raises_on_nonsense() -> None:
    client = Client.from_file({"flags": {"f": {"default": {"rollout": {"on": 1, "off": 99}}}}})
    assert client.value("f", object(), "d") == "d"
    assert client.evaluate("f", {}, True).error_code is ErrorCode.TARGETING_KEY_MISSING
    assert client.evaluate("nope").error_code is ErrorCode.FLAG_NOT_FOUND


def test_the_public_names() -> None:
    assert set(unveil.__all__) == {
        "Client",
        "ErrorCode",
        "Evaluation",
        "InvalidDocument",
        "Reason",
        "UnveilError",
    }
