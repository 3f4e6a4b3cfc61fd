"""Properties that must hold for every input, checked with hypothesis."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.strategies import ANY_CONTEXT, CONTEXTS, documents, weights
from unveil.core import ErrorCode, Evaluation, ReferenceEvaluator, Ruleset, document_to_data
from unveil.core.compiler import compile_flags
from unveil.core.model import FULL_WEIGHT
from unveil.sdk.files import dump_document, read_data

SLOW = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _random_keys(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"user-{rng.getrandbits(64):016x}" for _ in range(count)]


@SLOW
@given(shares=weights(["a", "b", "c", "d", "e"]), seed=st.integers(0, 2**32))
def test_bucketing_spreads_keys_as_the_weights_say(shares: dict[str, Any], seed: int) -> None:
    n = 100_000
    rs = Ruleset.from_data(
        {
            "flags": {
                "f": {
                    "kind": "string",
                    "variants": {v: v for v in "abcde"},
                    "off_variant": "a",
                    "salt": f"salt-{seed}",
                    "default": {"rollout": shares},
                }
            }
        }
    )
    counts: dict[str, int] = {}
    for key in _random_keys(n, seed):
        variant = rs.evaluate("f", {"key": key}).variant
        assert variant is not None
        counts[variant] = counts.get(variant, 0) + 1
    for variant, pct in shares.items():
        p = pct / 100
        expected = n * p
        # five standard deviations of a binomial: fails by chance about once in 3.5 million
        tolerance = 5 * (n * p * (1 - p)) ** 0.5 + 1
        assert abs(counts.get(variant, 0) - expected) <= tolerance, (variant, counts, shares)


@settings(max_examples=60, deadline=None)
@given(
    low=st.integers(0, FULL_WEIGHT),
    high=st.integers(0, FULL_WEIGHT),
    salt=st.text(max_size=8),
    seed=st.integers(0, 2**32),
)
def test_raising_a_rollout_never_takes_anyone_out(
    low: int, high: int, salt: str, seed: int
) -> None:
    low, high = sorted((low, high))

    def rollout(on: int) -> Ruleset:
        return Ruleset.from_data(
            {
                "flags": {
                    "f": {
                        "salt": salt,
                        "default": {"rollout": {"on": on / 1000, "off": (FULL_WEIGHT - on) / 1000}},
                    }
                }
            }
        )

    before, after = rollout(low), rollout(high)
    for key in _random_keys(2_000, seed):
        if before.value("f", {"key": key}) is True:
            assert after.value("f", {"key": key}) is True


@settings(max_examples=60, deadline=None)
@given(old=weights(["a", "b", "c"]), grow=st.sampled_from("abc"), seed=st.integers(0, 2**32))
def test_growing_one_of_many_variants_keeps_its_members(
    old: dict[str, Any], grow: str, seed: int
) -> None:
    """A variant that takes share from the others keeps everyone it had."""
    shares = {v: round(old.get(v, 0) * 1000) for v in "abc"}
    taken = sum(s // 2 for v, s in shares.items() if v != grow)
    new = {v: (s + taken if v == grow else s - s // 2) for v, s in shares.items()}

    def rollout(w: dict[str, int]) -> Ruleset:
        return Ruleset.from_data(
            {
                "flags": {
                    "f": {
                        "kind": "string",
                        "variants": {"a": "A", "b": "B", "c": "C"},
                        "off_variant": "a",
                        "default": {"rollout": {v: x / 1000 for v, x in w.items()}},
                    }
                }
            }
        )

    before, after = rollout(shares), rollout(new)
    for key in _random_keys(2_000, seed):
        if before.evaluate("f", {"key": key}).variant == grow:
            assert after.evaluate("f", {"key": key}).variant == grow


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    doc=documents(),
    contexts=st.lists(ANY_CONTEXT, min_size=1, max_size=8),
    default=st.one_of(
        st.none(), st.booleans(), st.text(max_size=3), st.integers(), st.just({}), st.just([])
    ),
)
def test_evaluation_never_raises(doc: dict[str, Any], contexts: list[Any], default: Any) -> None:
    rs = Ruleset.from_data(doc)
    for context in contexts:
        for key in [*rs.flag_keys(), "missing"]:
            result = rs.evaluate(key, context, default)
            assert isinstance(result, Evaluation)
            if result.error_code is not None:
                assert result.value is default or result.value == default
            rs.value(key, context, default)
            assert isinstance(rs.enabled(key, context), bool)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents(), contexts=st.lists(CONTEXTS, min_size=1, max_size=10))
def test_compiled_code_agrees_with_the_reference(
    doc: dict[str, Any], contexts: list[dict[str, Any]]
) -> None:
    rs = Ruleset.from_data(doc)
    reference = ReferenceEvaluator(rs.document)
    compiled = compile_flags(rs.document)
    for context in contexts:
        for key, run in compiled.items():
            fast, slow = run(context), reference.evaluate(key, context)
            assert fast == slow, (key, context)
            assert slow.error_code in (
                None,
                ErrorCode.TARGETING_KEY_MISSING,
                ErrorCode.INVALID_CONTEXT,
            )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents())
def test_export_then_parse_is_identity(doc: dict[str, Any]) -> None:
    parsed = Ruleset.from_data(doc).document
    data = document_to_data(parsed)
    again = Ruleset.from_data(data).document
    assert again == parsed
    assert document_to_data(again) == data
    for fmt in ("yaml", "json"):
        text = dump_document(parsed, fmt)
        assert Ruleset.from_data(read_data(text, fmt)).document == parsed


def test_compiled_code_agrees_with_the_reference_on_the_demo_flags() -> None:
    """Hand-picked contexts that reach every step: targets, segments, rules, rollouts."""
    from unveil.cli.main import DEMO_CONTEXTS, _demo_path
    from unveil.sdk.files import load_document

    document = load_document(_demo_path())
    reference = ReferenceEvaluator(document)
    compiled = compile_flags(document)
    contexts: list[dict[str, Any]] = [
        *DEMO_CONTEXTS,
        {"key": "user-2"},
        {"key": "user-9", "email": "x@mail.test"},
        {"key": 17, "plan": "pro"},
        {"key": "user-3", "country": "NL", "plan": "enterprise", "app_version": "3.0"},
        {"key": "user-4", "now": 1_798_000_000, "email": "z@unveil.test"},
        {"key": ["odd"], "country": {"NL": 1}, "email": 5},
    ]
    reasons = set()
    for context in contexts:
        for key, run in compiled.items():
            fast, slow = run(context), reference.evaluate(key, context)
            assert fast == slow, (key, context)
            reasons.add(slow.reason)
    assert len(reasons) == 6  # every reason, errors included, was reached
