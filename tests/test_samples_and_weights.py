"""Samples, whole-number weights and the Unleash scheme: what imports rely on."""

from __future__ import annotations

from typing import Any

import mmh3
import pytest

from tests.conftest import ruleset
from unveil.core import InvalidDocument, Ruleset
from unveil.core.bucketing import scheme
from unveil.core.codec import document_to_data, parse_document


def _sampled(percent: float, bucketing: str = "murmur3", **extra: Any) -> Ruleset:
    sample = {"sample": percent, "by": "uid", "salt": "grp", **extra}
    return ruleset(
        {
            "f": {
                "bucketing": bucketing,
                "rules": [{"when": [sample], "serve": "on"}],
                "default": "off",
            }
        }
    )


def test_a_sample_lets_a_stable_share_through_and_the_rest_fall_through() -> None:
    rs = _sampled(30)
    inside = sum(rs.value("f", {"uid": f"u{i}"}) for i in range(20_000))
    assert 5_700 < inside < 6_300  # 30% of 20,000, within 5 sigma
    # the same users every time, and a missing or unusable attribute is outside
    assert [rs.value("f", {"uid": f"u{i}"}) for i in range(50)] == [
        rs.value("f", {"uid": f"u{i}"}) for i in range(50)
    ]
    assert rs.evaluate("f", {}).reason == "DEFAULT"
    assert rs.evaluate("f", {"uid": 1.5}).reason == "DEFAULT"


def test_a_bigger_sample_keeps_everyone_the_smaller_one_had() -> None:
    small, big = _sampled(10), _sampled(25)
    for i in range(2_000):
        ctx = {"uid": f"user-{i}"}
        if small.value("f", ctx):
            assert big.value("f", ctx)


def test_negated_sample_is_the_complement() -> None:
    rs, negated = _sampled(40), _sampled(40, **{"not": True})
    for i in range(500):
        ctx = {"uid": i}
        assert rs.value("f", ctx) is not negated.value("f", ctx)


def test_unleash_sample_is_unleash_percentage_arithmetic() -> None:
    # Unleash: enabled when murmur3("groupId:userId", seed 0) % 100 + 1 <= percent
    rs = _sampled(50, bucketing="unleash")
    for i in range(300):
        normalized = mmh3.hash(f"grp:{i}", 0, False) % 100 + 1
        assert rs.value("f", {"uid": str(i)}) is (normalized <= 50)
    fractional = _sampled(10.5, bucketing="unleash")
    for i in range(300):
        normalized = mmh3.hash(f"grp:{i}", 0, False) % 100 + 1
        assert fractional.value("f", {"uid": str(i)}) is (normalized <= 10)


def test_weights_split_by_their_own_total() -> None:
    rs = ruleset(
        {
            "f": {
                "kind": "string",
                "variants": {"a": "A", "b": "B", "c": "C"},
                "off_variant": "a",
                "default": {"weights": {"a": 1, "b": 1, "c": 2}, "by": "uid"},
            }
        }
    )
    counts = {"a": 0, "b": 0, "c": 0}
    for i in range(8_000):
        counts[rs.evaluate("f", {"uid": f"u{i}"}).variant] += 1  # type: ignore[index]
    assert 1_800 < counts["a"] < 2_200
    assert 1_800 < counts["b"] < 2_200
    assert 3_700 < counts["c"] < 4_300
    # native scheme: bucket = murmur3("salt.value") % total, ranges in variant order
    for i in range(200):
        bucket = mmh3.hash(f"f.u{i}", 0, False) % 4
        expected = "a" if bucket < 1 else "b" if bucket < 2 else "c"
        assert rs.evaluate("f", {"uid": f"u{i}"}).variant == expected


def test_unleash_split_uses_the_variant_seed() -> None:
    split = scheme("unleash").split
    assert (
        split("Feature.Variants.C", "232", 99)
        == mmh3.hash("Feature.Variants.C:232", 86028157, False) % 99
    )


def test_a_single_weighted_variant_needs_no_key() -> None:
    rs = ruleset({"f": {"default": {"weights": {"on": 3, "off": 0}, "by": "uid"}}})
    assert rs.evaluate("f", {}).variant == "on"


def test_weights_and_samples_survive_a_round_trip() -> None:
    data = {
        "version": 1,
        "flags": {
            "f": {
                "bucketing": "unleash",
                "rules": [
                    {
                        "when": [{"sample": 12.5, "by": "sessionId", "salt": "g"}],
                        "serve": {"weights": {"on": 33, "off": 66}, "by": "sessionId"},
                    },
                    {
                        "when": [
                            {
                                "attr": "email",
                                "op": "ends_with",
                                "values": ["@A.com"],
                                "ignore_case": True,
                            }
                        ],
                        "serve": "on",
                    },
                ],
                "default": {"weights": {"on": 50_000, "off": 50_000}},
            }
        },
    }
    doc = parse_document(data)
    out = document_to_data(doc)
    assert out["flags"]["f"]["rules"][0]["when"][0] == {
        "sample": 12.5,
        "by": "sessionId",
        "salt": "g",
    }
    assert out["flags"]["f"]["rules"][0]["serve"]["weights"] == {"on": 33, "off": 66}
    # weights that happen to total 100,000 are the same rollout as percentages
    assert out["flags"]["f"]["default"] == {"rollout": {"on": 50, "off": 50}}
    assert parse_document(out) == doc


def test_keys_may_be_any_printable_text_without_spaces() -> None:
    rs = ruleset({"Feature.UTF-8.Hellø_Wørld": {"default": "on"}, "😊_你好": {"default": "on"}})
    assert rs.value("😊_你好") is True


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        (
            {"rules": [{"when": [{"sample": 101}], "serve": "on"}], "default": "off"},
            "flags.f.rules[0].when[0].sample: a percentage must be a number from 0 to 100",
        ),
        (
            {"rules": [{"when": [{"sample": 5, "attr": "x"}], "serve": "on"}], "default": "off"},
            "flags.f.rules[0].when[0].attr: unknown field",
        ),
        (
            {
                "rules": [
                    {
                        "when": [{"attr": "n", "op": "lt", "values": [3], "ignore_case": True}],
                        "serve": "on",
                    }
                ],
                "default": "off",
            },
            "flags.f.rules[0].when[0].ignore_case: applies to text operators only",
        ),
        (
            {"default": {"weights": {"on": 1.5, "off": 1}}},
            "flags.f.default.weights.on: a weight must be a whole number",
        ),
        (
            {"default": {"weights": {"on": 0, "off": 0}}},
            "flags.f.default.weights: weights must add up to between 1 and",
        ),
        (
            {"default": {"weights": {"on": 1}, "rollout": {"on": 100}}},
            "flags.f.default: a mapping here needs either 'rollout'",
        ),
        (
            {
                "rules": [
                    {
                        "when": [{"attr": "ip", "op": "in_cidr", "values": ["10.0.0.300/8"]}],
                        "serve": "on",
                    }
                ],
                "default": "off",
            },
            "flags.f.rules[0].when[0].values[0]: '10.0.0.300/8' is not an IP address or CIDR",
        ),
        ({"bucketing": "nope", "default": "on"}, "flags.f.bucketing: unknown bucketing scheme"),
    ],
)
def test_bad_new_fields_are_refused_with_their_path(flag: dict[str, Any], expected: str) -> None:
    with pytest.raises(InvalidDocument) as caught:
        parse_document({"flags": {"f": flag}})
    assert any(str(p).startswith(expected) for p in caught.value.problems), caught.value.problems


def test_a_sample_in_a_segment_is_refused() -> None:
    with pytest.raises(InvalidDocument) as caught:
        parse_document(
            {
                "segments": {"s": {"rules": [{"when": [{"sample": 5}]}]}},
                "flags": {"f": {"default": "on"}},
            }
        )
    assert "segments.s.rules[0].when[0].sample: a sample belongs in a flag's rules" in str(
        caught.value
    )


@pytest.mark.parametrize("key", ["has space", "tab\there", "", "x" * 201, "nl\n"])
def test_keys_with_spaces_or_control_characters_are_refused(key: str) -> None:
    with pytest.raises(InvalidDocument, match="printable characters without spaces"):
        parse_document({"flags": {key: {"default": "on"}}})
