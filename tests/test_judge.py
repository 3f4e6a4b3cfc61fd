"""The release judge: its promises about batches, false alarms, detection and explanations."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from unveil.release.evidence import RateEvidence, rank_counts
from unveil.release.histogram import Histogram
from unveil.release.judge import (
    ArmBatch,
    Batch,
    ContinuousGuard,
    Decision,
    Direction,
    JudgeConfig,
    JudgeError,
    JudgeState,
    RateGuard,
    explain,
    observe,
    start,
    verdict,
)
from unveil.release.verdict import VerdictKind

ERRORS = RateGuard("errors", "errors")
LATENCY = ContinuousGuard("latency", "latency_ms")
BOTH = JudgeConfig((ERRORS, LATENCY), horizon_s=1800)


def _arm(rng: random.Random, n: int, p: float, scale: float = 1.0, tail: float = 0.0) -> ArmBatch:
    errors = sum(rng.random() < p for _ in range(n))
    values = []
    for _ in range(n):
        v = scale * rng.lognormvariate(math.log(100.0), 0.5)
        if tail and rng.random() < tail:
            v *= 3.0
        values.append(v)
    return ArmBatch(n, {"errors": errors}, {"latency_ms": Histogram.of(values)})


def _run(
    config: JudgeConfig,
    seed: int,
    batches: int,
    n: int = 200,
    p_t: float = 0.01,
    scale_t: float = 1.0,
    tail_t: float = 0.0,
) -> JudgeState:
    rng = random.Random(seed)
    state = start(config)
    for i in range(1, batches + 1):
        batch = Batch(
            10.0 * i,
            _arm(rng, n, p_t, scale_t, tail_t),
            _arm(rng, n, 0.01),
        )
        state = observe(state, batch)
        if state.decision is not Decision.CONTINUE:
            break
    return state


# ----------------------------------------------------------------- configuration


def test_the_budget_is_split_across_every_test_and_adds_up_to_alpha() -> None:
    budget = BOTH.budget()
    assert budget == pytest.approx(
        {"errors:rate": 0.025, "latency:centre": 0.01, "latency:tail": 0.015}
    )
    assert sum(budget.values()) == pytest.approx(BOTH.alpha)
    weighted = JudgeConfig((ERRORS, RateGuard("5xx", "5xx", weight=3.0)), alpha=0.04)
    assert weighted.budget() == pytest.approx({"errors:rate": 0.01, "5xx:rate": 0.03})


def test_a_bad_configuration_names_every_problem() -> None:
    with pytest.raises(JudgeError) as caught:
        JudgeConfig(
            (RateGuard("a", "errors", margin=-1.0), RateGuard("a", "", weight=0.0)),
            alpha=1.5,
            horizon_s=-1,
        )
    message = str(caught.value)
    for part in ("alpha", "horizon_s", "guards[0].margin", "guards[1].name", "guards[1].metric"):
        assert part in message
    assert "guards[1].weight" in message
    with pytest.raises(JudgeError, match=r"guards\[0\]\.tail_share"):
        JudgeConfig((ContinuousGuard("latency", "latency_ms", tail_share=1.0),))
    with pytest.raises(JudgeError, match="guards: at least one"):
        JudgeConfig(())


def test_a_bad_batch_is_refused_naming_the_field_and_the_state_is_unchanged() -> None:
    state = start(BOTH)
    with pytest.raises(JudgeError, match=r"treatment\.exposures"):
        observe(state, Batch(10.0, ArmBatch(-1), ArmBatch(5)))
    with pytest.raises(JudgeError, match=r"control.counts\['errors'\]"):
        observe(state, Batch(10.0, ArmBatch(5), ArmBatch(5, {"errors": -2})))
    later = observe(state, Batch(20.0, ArmBatch(5), ArmBatch(5)))
    with pytest.raises(JudgeError, match="end_s"):
        observe(later, Batch(10.0, ArmBatch(5), ArmBatch(5)))
    assert state.batches == 0


# ---------------------------------------------------------------- the batch promise

counts = st.integers(0, 6)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 80), counts, counts), min_size=2, max_size=12),
    st.integers(1, 4),
    st.floats(0.0, 0.5),
)
def test_rate_evidence_does_not_depend_on_how_the_data_is_cut(
    pieces: list[tuple[int, int, int]], ratio: int, margin: float
) -> None:
    # The promise: while the arms' exposures keep one proportion, the evidence
    # after the same data is the same, however it was cut into batches.
    split = RateEvidence.start(margin, 0.25)
    for n_t, x_t, x_c in pieces:
        split = split.add(x_t, n_t, x_c, ratio * n_t)
    merged = RateEvidence.start(margin, 0.25).add(
        sum(p[1] for p in pieces),
        sum(p[0] for p in pieces),
        sum(p[2] for p in pieces),
        ratio * sum(p[0] for p in pieces),
    )
    assert split.log_fail() == pytest.approx(merged.log_fail(), abs=1e-9)
    assert split.log_pass() == pytest.approx(merged.log_pass(), abs=1e-9)
    assert split.interval(0.05) == pytest.approx(merged.interval(0.05), abs=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(50, 400), st.integers(0, 12), counts), min_size=2, max_size=10)
)
def test_the_judge_decides_the_same_on_the_same_data_cut_differently(
    pieces: list[tuple[int, int, int]],
) -> None:
    config = JudgeConfig((ERRORS,), min_exposures=10**9)

    def batch(end: float, n: int, x_t: int, x_c: int) -> Batch:
        return Batch(end, ArmBatch(n, {"errors": x_t}), ArmBatch(n, {"errors": x_c}))

    fine = start(config)
    decided_early = False
    for k, (n, x_t, x_c) in enumerate(pieces):
        fine = observe(fine, batch(10.0 * (k + 1), n, x_t, x_c))
        decided_early |= fine.decision is not Decision.CONTINUE and k < len(pieces) - 1
    coarse = observe(
        start(config),
        batch(
            10.0 * len(pieces),
            sum(p[0] for p in pieces),
            sum(p[1] for p in pieces),
            sum(p[2] for p in pieces),
        ),
    )
    if not decided_early:  # finer cuts may only decide sooner, never otherwise
        assert fine.decision is coarse.decision
        assert fine.fired == coarse.fired
    else:
        assert fine.decision is Decision.FAIL


buckets = st.dictionaries(st.integers(0, 241), st.integers(1, 30), min_size=1, max_size=25)


@settings(max_examples=60, deadline=None)
@given(buckets, buckets, st.lists(st.floats(-40.0, 40.0), min_size=1, max_size=5))
def test_the_rank_count_is_the_pairwise_count_of_values_spread_in_their_buckets(
    t: dict[int, int], c: dict[int, int], shifts: list[float]
) -> None:
    # Definition: each pair of buckets (i, j) counts P(i + U1 - shift > j + U2)
    # for independent uniforms, times the pairs of values in them.
    def kernel(y: float) -> float:
        return min(max(0.5 * (1 + y) ** 2 if y <= 0 else 1 - 0.5 * (1 - y) ** 2, 0.0), 1.0)

    h_t, h_c = Histogram.from_counts(t, 0.0), Histogram.from_counts(c, 0.0)
    expected = [
        sum(
            a * b * kernel(i - shift - j)
            if -1 < i - shift - j < 1
            else a * b * (i - shift - j >= 1)
            for i, a in t.items()
            for j, b in c.items()
        )
        for shift in shifts
    ]
    assert rank_counts(h_t, h_c, shifts) == pytest.approx(expected, rel=1e-9, abs=1e-9)


# ---------------------------------------------------------------- false alarms


@settings(max_examples=4, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    base=st.sampled_from([0.005, 0.02, 0.1]),
    ratio=st.sampled_from([1, 3, 20]),
    drift=st.booleans(),
)
def test_rate_false_alarms_stay_under_alpha_under_the_null(
    seed: int, base: float, ratio: int, drift: bool
) -> None:
    # R = 200 simulated A/A comparisons of 90 looks each, shares and a shared
    # drift varying; FAILs ~ Binomial(200, p <= 0.05): more than 20 happens
    # with chance < 0.2% if the promise holds.
    rng = random.Random(seed)
    alarms = 0
    for _ in range(200):
        ev = RateEvidence.start(0.0, 0.25)
        for i in range(90):
            p = base * (1.0 + (0.8 * math.sin(i / 9.0) if drift else 0.0))
            n_t = rng.randint(5, 60)
            n_c = ratio * n_t
            x_t = sum(rng.random() < p for _ in range(n_t))
            x_c = sum(rng.random() < p for _ in range(n_c))
            ev = ev.add(x_t, n_t, x_c, n_c)
            if ev.log_fail() >= math.log(1 / 0.05):
                alarms += 1
                break
    assert alarms <= 20


def test_the_whole_judge_keeps_quiet_on_identical_arms() -> None:
    # 40 A/A canaries of 60 looks (12,000 requests per arm each), with no
    # latency margin, so the arms sit exactly on the null's boundary; the
    # budget is 5%, so more than 7 alarms would happen with chance < 1% if it holds.
    strict = ContinuousGuard("latency", "latency_ms", margin=0.0, tail_margin=0.0)
    alarms = sum(
        _run(JudgeConfig((ERRORS, strict)), seed, 60).decision is Decision.FAIL
        for seed in range(40)
    )
    assert alarms <= 7


# ---------------------------------------------------------------- detection


def test_tripled_errors_fail_on_the_error_guard_and_say_so() -> None:
    state = _run(BOTH, 1, 60, p_t=0.03)
    assert state.decision is Decision.FAIL
    assert state.fired == "errors:rate"
    assert state.exposures_t < 4000
    out = explain(state)
    json.dumps(out, allow_nan=False)  # JSON-ready, no NaN or infinity
    guard = out["guards"][0]  # type: ignore[index]
    assert guard["tests"][0]["fired"] is True
    assert guard["estimate"] > 1.5
    low, _ = guard["interval"]
    assert low is not None
    assert low >= 1.0  # the lower end reached the bound: that is why it failed
    assert guard["counts"]["treatment"]["events"] > guard["counts"]["control"]["events"]
    assert "errors rate is higher" in guard["sentence"]
    assert out["summary"].startswith("Roll back")  # type: ignore[union-attr]


def test_slower_latency_fails_on_the_centre_test_with_an_interval_around_the_truth() -> None:
    state = _run(BOTH, 2, 30, scale_t=1.5)
    assert state.decision is Decision.FAIL
    assert state.fired == "latency:centre"
    guard = explain(state)["guards"][1]  # type: ignore[index]
    assert 1.2 < guard["estimate"] < 1.9
    low, high = guard["interval"]
    assert low is not None
    assert high is not None
    assert low < 1.5 < high
    assert "typical latency_ms is higher" in guard["sentence"]


def test_latency_just_past_the_margin_is_left_alone_and_twenty_percent_is_found_fast() -> None:
    # The centre test looks only for effects that matter (evidence.CENTRE_EFFECTS):
    # 6.5% slower against the default 5% margin is the few percent by which
    # healthy instances differ; 20% slower must fail within a few batches.
    for seed in (20, 21):
        near = _run(BOTH, seed, 120, scale_t=1.065)
        assert near.decision is not Decision.FAIL, explain(near)["summary"]
    slow = _run(BOTH, 22, 30, scale_t=1.2)
    assert slow.fired == "latency:centre"
    assert slow.exposures_t <= 1000


def test_by_default_the_judge_watches_until_the_horizon_and_catches_a_late_regression() -> None:
    # No early PASS unless asked for: errors triple after ten healthy minutes
    # and the canary still rolls back, not passes.
    rng = random.Random(23)
    state = start(BOTH)
    batches = 0
    while state.decision is Decision.CONTINUE:
        batches += 1
        p_t = 0.01 if batches <= 60 else 0.03
        state = observe(state, Batch(10.0 * batches, _arm(rng, 200, p_t), _arm(rng, 200, 0.01)))
        if batches <= 60:
            assert state.decision is Decision.CONTINUE
    assert state.fired == "errors:rate"
    assert 60 < batches < 180


def test_a_slower_tail_alone_fails_on_the_tail_test() -> None:
    state = _run(JudgeConfig((LATENCY,)), 3, 90, tail_t=0.05)
    assert state.decision is Decision.FAIL
    assert state.fired == "latency:tail"
    guard = explain(state)["guards"][0]  # type: ignore[index]
    assert (
        guard["counts"]["treatment"]["past_tail_threshold"]
        > (guard["counts"]["control"]["past_tail_threshold"])
    )


def test_a_rate_guards_margin_is_relative_to_controls_rate() -> None:
    # margin 0.5: up to 1.5 times control's error rate is allowed. 1.3 times is a
    # regression without a margin and none with it; 2.5 times is one either way.
    lenient = JudgeConfig((RateGuard("errors", "errors", margin=0.5),))
    strict = JudgeConfig((ERRORS,))
    assert _run(strict, 8, 90, n=2000, p_t=0.013).fired == "errors:rate"
    assert _run(lenient, 8, 90, n=2000, p_t=0.013).decision is Decision.CONTINUE
    worse = _run(lenient, 8, 90, n=2000, p_t=0.025)
    assert worse.fired == "errors:rate"
    sentence = explain(worse)["guards"][0]["sentence"]  # type: ignore[index]
    assert "beyond the allowed 50%" in sentence


def test_lower_is_worse_guards_fail_when_the_treatment_drops() -> None:
    conversions = RateGuard("conversions", "errors", direction=Direction.LOWER_IS_WORSE)
    speed = ContinuousGuard("throughput", "latency_ms", direction=Direction.LOWER_IS_WORSE)
    dropped = _run(JudgeConfig((conversions,)), 4, 90, p_t=0.003)
    assert dropped.fired == "conversions:rate"
    assert "rate is lower" in explain(dropped)["guards"][0]["sentence"]  # type: ignore[index]
    raised = _run(JudgeConfig((conversions,)), 4, 40, p_t=0.03)
    assert raised.decision is not Decision.FAIL
    shrunk = _run(JudgeConfig((speed,)), 5, 30, scale_t=0.6)
    assert shrunk.fired == "throughput:centre"
    estimate = explain(shrunk)["guards"][0]["estimate"]  # type: ignore[index]
    assert 0.45 < estimate < 0.75


# ---------------------------------------------------------------- pass and no data


def test_no_data_never_fails_and_says_it_waits() -> None:
    state = start(BOTH)
    for i in range(1, 400):  # past the horizon
        n_t = 1 if i % 7 == 0 else 0
        state = observe(
            state,
            Batch(
                10.0 * i,
                ArmBatch(n_t, {"errors": n_t}, {"latency_ms": Histogram.of([5000.0] * n_t)}),
                ArmBatch(0),
            ),
        )
    assert state.decision is Decision.CONTINUE
    assert "waiting for data" in state.reason
    out = explain(state)
    assert "no exposures in one arm" in out["guards"][0]["sentence"]  # type: ignore[index]
    json.dumps(out, allow_nan=False)


def test_a_healthy_canary_passes_at_the_horizon_and_the_decision_is_final() -> None:
    config = JudgeConfig((ERRORS, LATENCY), horizon_s=300, early_pass=False)
    state = _run(config, 6, 40)
    assert state.decision is Decision.PASS
    assert state.fired == "horizon"
    assert state.end_s == 300.0
    again = observe(state, Batch(310.0, ArmBatch(100, {"errors": 100}), ArmBatch(100)))
    assert again is state
    assert explain(state)["summary"].startswith("Healthy")  # type: ignore[union-attr]


def test_clearly_healthy_latency_passes_early_within_bounds_when_asked_to() -> None:
    state = _run(JudgeConfig((LATENCY,), horizon_s=None, early_pass=True), 7, 60)
    assert state.decision is Decision.PASS
    assert state.fired == "within-bounds"
    assert state.exposures_t < 12_000


def test_the_state_machine_hears_no_data_continue_pass_or_fail_with_the_explanation() -> None:
    empty = start(BOTH)
    assert verdict(empty).kind is VerdictKind.NO_DATA
    one_arm = observe(empty, Batch(10.0, ArmBatch(50), ArmBatch(0)))
    assert verdict(one_arm).kind is VerdictKind.NO_DATA
    both = observe(one_arm, Batch(20.0, ArmBatch(50), ArmBatch(50)))
    assert verdict(both).kind is VerdictKind.CONTINUE
    failed = _run(BOTH, 1, 60, p_t=0.03)
    answer = verdict(failed)
    assert answer.kind is VerdictKind.FAIL
    assert answer.explanation["fired"] == "errors:rate"
    passed = _run(JudgeConfig((ERRORS,), horizon_s=100, min_exposures=100), 2, 12)
    assert verdict(passed).kind is VerdictKind.PASS


def test_every_test_past_its_bound_says_so_not_only_the_one_that_decided() -> None:
    """Errors and latency both far worse in one batch: the decision names the first test,
    and the explanation must not call the other guard healthy (the review found it did)."""
    slow = Histogram.of([300.0] * 400)
    fast = Histogram.of([100.0] * 400)
    config = JudgeConfig((RateGuard("errors", "errors"), ContinuousGuard("latency", "ms")))
    state = start(config)
    for k in range(30):
        treatment = ArmBatch(2000, {"errors": 200}, {"ms": slow})
        control = ArmBatch(2000, {"errors": 20}, {"ms": fast})
        state = observe(state, Batch(10.0 * (k + 1), treatment, control))
    explained = explain(state)
    assert explained["fired"] == "errors:rate"
    guards = {g["guard"]: g for g in explained["guards"]}  # type: ignore[union-attr]
    latency = guards["latency"]
    assert "no regression found" not in latency["sentence"]
    centre = next(t for t in latency["tests"] if t["test"] == "latency:centre")
    assert centre["evidence"] >= centre["bound"]
    assert centre["fired"] is True
    assert centre["decided"] is False
