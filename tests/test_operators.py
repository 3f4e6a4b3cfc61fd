"""Every operator, with the edge cases: wrong types, missing attributes, empty lists."""

from __future__ import annotations

from typing import Any

import pytest

from unveil.core import InvalidDocument, Ruleset


def matches(op: str, values: list[Any] | None, attr_value: Any, *, negate: bool = False) -> bool:
    """Whether a one-clause rule matches a context holding ``attr_value`` as ``x``."""
    clause: dict[str, Any] = {"attr": "x", "op": op}
    if values is not None:
        clause["values"] = values
    if negate:
        clause["not"] = True
    rs = Ruleset.from_data(
        {"flags": {"f": {"rules": [{"when": [clause], "serve": "on"}], "default": "off"}}}
    )
    context = {} if attr_value is _MISSING else {"x": attr_value}
    result = rs.evaluate("f", context)
    assert result.error_code is None
    return result.variant == "on"


_MISSING = object()

CASES = [
    # eq: exactly one value, no type crossing
    ("eq", ["a"], "a", True),
    ("eq", ["a"], "A", False),
    ("eq", ["1"], 1, False),
    ("eq", [1], 1, True),
    ("eq", [1], 1.0, True),
    ("eq", [1], True, False),
    ("eq", [True], True, True),
    ("eq", [True], 1, False),
    ("eq", [False], False, True),
    ("eq", ["a"], ["a"], False),
    ("eq", ["a"], None, False),
    ("eq", ["a"], _MISSING, False),
    ("eq", ["a"], {"a": 1}, False),
    # in: any of a list; an empty list matches nothing
    ("in", ["NL", "DE"], "DE", True),
    ("in", ["NL", "DE"], "FR", False),
    ("in", [], "FR", False),
    ("in", [1, 2.5, "x"], 2.5, True),
    ("in", [1, 2.5, "x"], "x", True),
    ("in", [1, 2.5, "x"], "1", False),
    ("in", ["NL"], float("nan"), False),
    ("in", ["NL"], _MISSING, False),
    # string operators: strings only
    ("starts_with", ["ab", "x"], "abc", True),
    ("starts_with", ["ab"], "cab", False),
    ("starts_with", ["1"], 12, False),
    ("starts_with", [], "abc", False),
    ("ends_with", ["@example.com"], "ana@example.com", True),
    ("ends_with", ["@example.com"], "ana@example.com.evil", False),
    ("ends_with", ["x"], None, False),
    ("contains", ["mid"], "a-mid-b", True),
    ("contains", ["mid"], "nothing", False),
    ("contains", ["admin"], ["staff", "admin"], True),
    ("contains", ["admin"], ["staff"], False),
    ("contains", [2], [1, 2, 3], True),
    ("contains", [2], [1, True, "2"], False),
    ("contains", ["a"], 5, False),
    # matches: re2 search, anchors when wanted
    ("matches", [r"^user-\d+$"], "user-12", True),
    ("matches", [r"^user-\d+$"], "user-12x", False),
    ("matches", [r"\d"], "a1b", True),
    ("matches", [r"\d"], 1, False),
    ("matches", ["a"], "b" * 10_001 + "a", False),  # longer than the subject bound
    # numbers: decimal text counts as its number; no booleans, no NaN
    ("lt", [10], 9.5, True),
    ("lt", [10], 10, False),
    ("lte", [10], 10, True),
    ("gt", [10], 11, True),
    ("gt", [10], 10, False),
    ("gte", [10], 10.0, True),
    ("gt", [0], True, False),
    ("gt", [0], "5", True),
    ("gt", [0], " 5.5 ", True),
    ("lt", [0], "-1e3", True),
    ("gt", [0], "5 apples", False),
    ("gt", [0], "nan", False),
    ("gt", [0], "1e999", False),
    ("number_eq", [12], "12.0", True),
    ("number_eq", [12], 12, True),
    ("number_eq", [12.5], "12", False),
    ("number_eq", [12], "twelve", False),
    ("lt", [0], float("nan"), False),
    ("gt", [0], float("inf"), False),
    ("lt", [10], _MISSING, False),
    # semantic versions, leniently parsed
    ("semver_eq", ["1.2.0"], "1.2", True),
    ("semver_eq", ["1.2.0"], "v1.2.0+build.5", True),
    ("semver_lt", ["2.0.0"], "1.9.9", True),
    ("semver_lt", ["2.0.0"], "2.0.0-rc.1", True),
    ("semver_lt", ["2.0.0"], "2.0.0", False),
    ("semver_gt", ["2.0.0"], "10.0.0", True),
    ("semver_gt", ["1.0.0-alpha"], "1.0.0-alpha.1", True),
    ("semver_gt", ["1.0.0-beta.2"], "1.0.0-beta.11", True),
    ("semver_gt", ["1.0.0"], "not a version", False),
    ("semver_gt", ["1.0.0"], 2, False),
    ("semver_gte", ["1.2.2"], "1.2.2", True),
    ("semver_gte", ["1.2.2"], "1.2.1", False),
    ("semver_lte", ["1.2.2"], "1.2.2", True),
    ("semver_lte", ["1.2.2"], "1.2.3", False),
    ("semver_lte", ["1.2.2"], "junk", False),
    # networks: addresses and CIDR ranges, IPv4 and IPv6
    ("in_cidr", ["10.0.0.0/8", "192.168.1.7"], "10.20.30.40", True),
    ("in_cidr", ["10.0.0.0/8", "192.168.1.7"], "192.168.1.7", True),
    ("in_cidr", ["10.0.0.0/8", "192.168.1.7"], "192.168.1.8", False),
    ("in_cidr", ["2001:db8::/32"], "2001:db8:0:1::42", True),
    ("in_cidr", ["2001:db8::/32"], "10.0.0.1", False),
    ("in_cidr", ["10.0.0.0/8"], "not an address", False),
    ("in_cidr", ["10.0.0.0/8"], 167772161, False),
    ("in_cidr", [], "10.0.0.1", False),
    # instants: RFC 3339 or epoch seconds, either side
    ("before", ["2026-01-01T00:00:00Z"], "2025-12-31T23:59:59Z", True),
    ("before", ["2026-01-01T00:00:00Z"], "2026-01-01T00:00:00Z", False),
    ("before", ["2026-01-01T00:00:00Z"], "2026-01-01T00:30:00+01:00", True),
    ("after", ["2026-01-01T00:00:00Z"], 1767225601, True),
    ("after", [1767225600], "2026-01-01T00:00:01Z", True),
    ("after", ["2026-01-01T00:00:00Z"], "2026-01-01T00:00:01", True),  # naive is UTC
    ("after", ["2026-01-01T00:00:00Z"], "soon", False),
    ("after", ["2026-01-01T00:00:00Z"], True, False),
    # an integer no float can hold is no time (it raised OverflowError: issue 10, 9)
    pytest.param("after", ["2026-01-01T00:00:00Z"], 10**400, False, id="after-10^400"),
    pytest.param("before", ["2026-01-01T00:00:00Z"], -(10**400), False, id="before--10^400"),
    # exists: present and not null
    ("exists", None, "", True),
    ("exists", None, 0, True),
    ("exists", None, None, False),
    ("exists", None, _MISSING, False),
    ("exists", [], "x", True),
]


@pytest.mark.parametrize(("op", "values", "attr_value", "expected"), CASES)
def test_operator(op: str, values: list[Any] | None, attr_value: Any, expected: bool) -> None:
    assert matches(op, values, attr_value) is expected


@pytest.mark.parametrize(("op", "values", "attr_value", "expected"), CASES)
def test_negation_inverts_every_operator(
    op: str, values: list[Any] | None, attr_value: Any, expected: bool
) -> None:
    # negation is plain: a missing attribute is "not in", as people read it
    assert matches(op, values, attr_value, negate=True) is (not expected)


@pytest.mark.parametrize("op", ["before", "after"])
def test_a_bound_no_float_can_hold_is_refused_not_crashed(op: str) -> None:
    """An integer of 400 digits is JSON, but no instant: refused naming it (was OverflowError)."""
    clause = {"attr": "now", "op": op, "values": [10**400]}
    with pytest.raises(InvalidDocument) as caught:
        Ruleset.from_data(
            {"flags": {"f": {"rules": [{"when": [clause], "serve": "on"}], "default": "off"}}}
        )
    assert [p.path for p in caught.value.problems] == ["flags.f.rules[0].when[0].values[0]"]


def test_pathological_pattern_is_linear() -> None:
    # (a+)+$ takes exponential time in a backtracking engine; re2 answers at once
    assert matches("matches", [r"^(a+)+$"], "a" * 5_000 + "b") is False


IGNORE_CASE_CASES = [
    ("eq", ["Admin"], "aDMIN", True),
    ("in", ["NL", "de"], "DE", True),
    ("in", ["NL"], "FR", False),
    ("starts_with", ["TEST"], "test@example.com", True),
    ("ends_with", ["@Example.COM"], "ana@example.com", True),
    ("ends_with", ["@example.com"], "ana@example.org", False),
    ("contains", ["MID"], "a-mid-b", True),
    ("contains", ["ADMIN"], ["staff", "admin"], True),
    ("matches", ["^abc$"], "AbC", True),
    ("matches", ["^abc$"], "AbCd", False),
]


@pytest.mark.parametrize(("op", "values", "attr_value", "expected"), IGNORE_CASE_CASES)
def test_ignore_case(op: str, values: list[Any], attr_value: Any, expected: bool) -> None:
    clause = {"attr": "x", "op": op, "values": values, "ignore_case": True}
    rs = Ruleset.from_data(
        {"flags": {"f": {"rules": [{"when": [clause], "serve": "on"}], "default": "off"}}}
    )
    assert rs.value("f", {"x": attr_value}) is expected
    # and without ignore_case, the mixed-case cases do not match
    del clause["ignore_case"]
    plain = Ruleset.from_data(
        {"flags": {"f": {"rules": [{"when": [clause], "serve": "on"}], "default": "off"}}}
    )
    if expected:
        assert plain.value("f", {"x": attr_value}) is False
