"""The evaluation order and its reasons, one step at a time (DESIGN.md, Semantics)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ruleset
from unveil.core import ErrorCode, Reason, Ruleset
from unveil.core.bucketing import murmur3_bucket

CHECKOUT: dict[str, Any] = {
    "payments-v2": {"default": "on"},
    "new-checkout": {
        "targets": {"on": ["user-1"], "off": ["user-2"]},
        "prerequisites": [{"flag": "payments-v2", "variants": ["on"]}],
        "rules": [
            {
                "when": [
                    {"attr": "country", "op": "in", "values": ["NL", "DE"]},
                    {"attr": "plan", "op": "eq", "values": ["enterprise"]},
                ],
                "serve": "on",
            },
            {"when": [{"segment": "beta"}], "serve": {"rollout": {"on": 50, "off": 50}}},
        ],
        "default": "off",
    },
}
BETA = {
    "beta": {
        "include": ["user-7"],
        "exclude": ["user-8"],
        "rules": [{"when": [{"attr": "email", "op": "ends_with", "values": ["@example.com"]}]}],
    }
}


@pytest.fixture
def checkout() -> Ruleset:
    return ruleset(CHECKOUT, BETA)


def test_disabled_serves_off_variant_before_anything_else() -> None:
    flags = {**CHECKOUT, "new-checkout": {**CHECKOUT["new-checkout"], "enabled": False}}
    rs = ruleset(flags, BETA)
    result = rs.evaluate("new-checkout", {"key": "user-1"})
    assert (result.value, result.variant, result.reason) == (False, "off", Reason.DISABLED)


def test_prerequisite_not_met_serves_off_variant(checkout: Ruleset) -> None:
    flags = {**CHECKOUT, "payments-v2": {"default": "off"}}
    result = ruleset(flags, BETA).evaluate("new-checkout", {"key": "user-1"})
    assert (result.variant, result.reason) == ("off", Reason.PREREQUISITE_FAILED)
    assert result.error_code is None


def test_disabled_prerequisite_serves_its_off_variant_and_fails_the_dependent() -> None:
    flags = {**CHECKOUT, "payments-v2": {"enabled": False, "default": "on"}}
    result = ruleset(flags, BETA).evaluate("new-checkout", {"key": "user-1"})
    assert result.reason is Reason.PREREQUISITE_FAILED


def test_prerequisite_that_errors_fails_the_dependent() -> None:
    flags = {**CHECKOUT, "payments-v2": {"default": {"rollout": {"on": 50, "off": 50}}}}
    result = ruleset(flags, BETA).evaluate("new-checkout", {"country": "NL"})
    assert (result.variant, result.reason) == ("off", Reason.PREREQUISITE_FAILED)


def test_individual_target_comes_before_rules(checkout: Ruleset) -> None:
    result = checkout.evaluate(
        "new-checkout", {"key": "user-2", "country": "NL", "plan": "enterprise"}
    )
    assert (result.variant, result.reason, result.rule) == ("off", Reason.TARGETING_MATCH, None)


def test_first_matching_rule_wins_and_names_itself(checkout: Ruleset) -> None:
    result = checkout.evaluate(
        "new-checkout",
        {"key": "u", "country": "DE", "plan": "enterprise", "email": "x@example.com"},
    )
    assert (result.variant, result.reason, result.rule) == ("on", Reason.TARGETING_MATCH, 0)


def test_all_conditions_of_a_rule_must_hold(checkout: Ruleset) -> None:
    result = checkout.evaluate("new-checkout", {"key": "u", "country": "DE", "plan": "free"})
    assert (result.variant, result.reason) == ("off", Reason.DEFAULT)


def test_rule_with_rollout_reports_split(checkout: Ruleset) -> None:
    result = checkout.evaluate("new-checkout", {"key": "user-7"})
    assert result.reason is Reason.SPLIT
    assert result.rule == 1
    expected = "on" if murmur3_bucket("new-checkout", "user-7") < 50_000 else "off"
    assert result.variant == expected


def test_segment_exclude_wins_over_rules(checkout: Ruleset) -> None:
    result = checkout.evaluate("new-checkout", {"key": "user-8", "email": "e@example.com"})
    assert (result.variant, result.reason) == ("off", Reason.DEFAULT)


def test_segment_rule_match(checkout: Ruleset) -> None:
    result = checkout.evaluate("new-checkout", {"key": "zed", "email": "z@example.com"})
    assert result.rule == 1


def test_negated_segment_clause() -> None:
    rs = ruleset(
        {
            "f": {
                "rules": [{"when": [{"segment": "s", "not": True}], "serve": "on"}],
                "default": "off",
            }
        },
        {"s": {"include": ["a"]}},
    )
    assert rs.value("f", {"key": "a"}) is False
    assert rs.value("f", {"key": "b"}) is True


def test_segment_referring_to_segment() -> None:
    rs = ruleset(
        {"f": {"rules": [{"when": [{"segment": "outer"}], "serve": "on"}], "default": "off"}},
        {"inner": {"include": ["a"]}, "outer": {"rules": [{"when": [{"segment": "inner"}]}]}},
    )
    assert rs.value("f", {"key": "a"}) is True
    assert rs.value("f", {"key": "b"}) is False


def test_default_variant_reason_default(checkout: Ruleset) -> None:
    result = checkout.evaluate("payments-v2", {})
    assert (result.value, result.variant, result.reason) == (True, "on", Reason.DEFAULT)


@pytest.mark.parametrize("share", [0, 100])
def test_zero_and_hundred_percent_need_no_key(share: int) -> None:
    rs = ruleset({"f": {"default": {"rollout": {"on": share, "off": 100 - share}}}})
    result = rs.evaluate("f", {})
    assert result.value is (share == 100)
    assert result.reason is Reason.SPLIT


def test_zero_percent_variant_is_never_served() -> None:
    rs = ruleset(
        {
            "f": {
                "kind": "string",
                "variants": {"a": "A", "b": "B", "c": "C"},
                "off_variant": "a",
                "default": {"rollout": {"a": 0, "b": 99.999, "c": 0.001}},
            }
        }
    )
    seen = {rs.evaluate("f", {"key": f"k{i}"}).variant for i in range(5_000)}
    assert "a" not in seen
    assert "b" in seen


def test_rollout_by_another_attribute_and_salt() -> None:
    rs = ruleset({"f": {"default": {"rollout": {"on": 50, "off": 50}, "by": "org", "salt": "s1"}}})
    for org in ("acme", "globex", "initech", "umbrella"):
        expected = "on" if murmur3_bucket("s1", org) < 50_000 else "off"
        # every member of an org gets the same answer, whatever their key
        assert {rs.evaluate("f", {"key": k, "org": org}).variant for k in "abc"} == {expected}


def test_flag_salt_replaces_key_in_hash() -> None:
    rs = ruleset({"f": {"salt": "xyz", "default": {"rollout": {"on": 50, "off": 50}}}})
    for key in ("a", "b", "c", "d", "e"):
        expected = "on" if murmur3_bucket("xyz", key) < 50_000 else "off"
        assert rs.evaluate("f", {"key": key}).variant == expected


def test_whole_number_keys_bucket_like_their_text() -> None:
    rs = ruleset({"f": {"default": {"rollout": {"on": 50, "off": 50}}}})
    assert rs.evaluate("f", {"key": 12345}).variant == rs.evaluate("f", {"key": "12345"}).variant


# -- errors: the caller's default, with an OpenFeature code -----------------------------


def test_unknown_flag(checkout: Ruleset) -> None:
    result = checkout.evaluate("nope", {}, default=True)
    assert (result.value, result.reason, result.error_code) == (
        True,
        Reason.ERROR,
        ErrorCode.FLAG_NOT_FOUND,
    )
    assert checkout.value("nope", {}, "d") == "d"
    assert checkout.enabled("nope", {}) is False


@pytest.mark.parametrize("default", ["yes", 1, 1.5, {"a": 1}, [True]])
def test_type_mismatch(checkout: Ruleset, default: Any) -> None:
    result = checkout.evaluate("payments-v2", {}, default)
    assert result.error_code is ErrorCode.TYPE_MISMATCH
    assert result.value == default
    assert checkout.value("payments-v2", {}, default) == default


def test_none_default_accepts_any_kind(checkout: Ruleset) -> None:
    assert checkout.evaluate("payments-v2", {}, None).value is True


def test_number_flags_refuse_boolean_defaults() -> None:
    rs = ruleset(
        {
            "n": {
                "kind": "number",
                "variants": {"a": 1, "b": 2.5},
                "off_variant": "a",
                "default": "b",
            }
        }
    )
    assert rs.value("n", {}, 0) == 2.5
    assert rs.value("n", {}, 0.0) == 2.5
    assert rs.evaluate("n", {}, False).error_code is ErrorCode.TYPE_MISMATCH


def test_missing_targeting_key_for_rollout() -> None:
    rs = ruleset({"f": {"default": {"rollout": {"on": 25, "off": 75}}}})
    result = rs.evaluate("f", {"country": "NL"}, default=True)
    assert (result.value, result.error_code) == (True, ErrorCode.TARGETING_KEY_MISSING)
    assert "key" in (result.error_message or "")


@pytest.mark.parametrize("bad_key", [["a"], {"a": 1}, 1.5, True])
def test_unbucketable_key_is_invalid_context(bad_key: Any) -> None:
    rs = ruleset({"f": {"default": {"rollout": {"on": 25, "off": 75}}}})
    result = rs.evaluate("f", {"key": bad_key}, default=False)
    assert (result.value, result.error_code) == (False, ErrorCode.INVALID_CONTEXT)


@pytest.mark.parametrize("context", [5, "user-1", ["key", "a"], object(), b"bytes"])
def test_context_that_is_not_a_mapping(checkout: Ruleset, context: Any) -> None:
    result = checkout.evaluate("payments-v2", context, default=False)
    assert (result.value, result.error_code) == (False, ErrorCode.INVALID_CONTEXT)
    assert checkout.value("payments-v2", context, False) is False


def test_none_context_is_empty(checkout: Ruleset) -> None:
    assert checkout.evaluate("payments-v2", None).value is True


def test_unhashable_attribute_values_take_the_safe_path(checkout: Ruleset) -> None:
    # the compiled fast path meets a list where it hashes; the answer stays right
    result = checkout.evaluate("new-checkout", {"key": ["x"], "country": ["NL"], "plan": {}})
    assert (result.variant, result.reason) == ("off", Reason.DEFAULT)


def test_json_values_are_copies() -> None:
    rs = ruleset(
        {
            "j": {
                "kind": "json",
                "variants": {"a": {"list": [1]}, "b": None},
                "off_variant": "b",
                "default": "a",
            }
        }
    )
    first = rs.value("j", {})
    first["list"].append(2)
    assert rs.value("j", {}) == {"list": [1]}
    assert rs.evaluate("j", {}).value == {"list": [1]}


def test_enabled_on_a_non_boolean_flag_means_not_the_off_variant() -> None:
    rs = ruleset(
        {
            "s": {
                "kind": "string",
                "variants": {"a": "A", "b": "B"},
                "off_variant": "a",
                "rules": [
                    {"when": [{"attr": "plan", "op": "eq", "values": ["pro"]}], "serve": "b"}
                ],
                "default": "a",
            }
        }
    )
    assert rs.enabled("s", {"plan": "pro"}) is True
    assert rs.enabled("s", {"plan": "free"}, default=True) is False
    assert rs.enabled("s", "not a mapping", default=True) is True
    assert rs.enabled("missing", {}, default=True) is True
    assert rs.evaluate("s", {}, default=True).error_code is ErrorCode.TYPE_MISMATCH


def test_mapping_contexts_other_than_dict() -> None:
    from types import MappingProxyType

    rs = ruleset({"f": {"targets": {"on": ["a"]}, "default": "off"}})
    assert rs.value("f", MappingProxyType({"key": "a"})) is True


def test_answer_is_the_flags_own_answer_and_the_ruleset_keeps_no_state() -> None:
    from unveil.core import Ruleset, parse_document

    rs = Ruleset(parse_document({"flags": {"f": {"targets": {"on": ["a"]}, "default": "off"}}}))
    assert not hasattr(rs, "forget_seen")
    first = rs.answer("f", {"key": "a"})
    assert first is not None
    assert (first.variant, first.reason) == ("on", Reason.TARGETING_MATCH)
    assert rs.answer("f", {"key": "a"}) == first  # the same answer every time
    assert rs.is_on(first) is True
    assert rs.answer("missing", {"key": "a"}) is None  # where value gives the default
    assert rs.answer("f", {"key": "a"}, default="text") is None
    assert rs.answer("f", "not a mapping") is None
    js = ruleset(
        {"j": {"kind": "json", "variants": {"a": {"n": [1]}}, "off_variant": "a", "default": "a"}}
    )
    mine = js.answer("j")
    assert mine is not None
    mine.value["n"].append(2)  # a copy: the flag is not changed
    assert js.value("j") == {"n": [1]}
