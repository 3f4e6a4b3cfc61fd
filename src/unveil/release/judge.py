"""The judge of a guarded release: treatment against control, one batch at a time.

It is consulted after every 10-second batch of aggregates (exposures per
arm, counts of counted metrics, histograms of tracked values: what the
server keeps) and answers FAIL (a guard found a regression), PASS (the
horizon came with enough data, or, only if asked for, every guard is
already clearly healthy) or CONTINUE. Its
tests are sequential and anytime-valid (release/evidence.py): reading them
after every batch does not raise the false-alarm rate above ``alpha``, which
is split across the tests and stated in every explanation.

Pure: the caller passes every batch and its time; the judge keeps no clock,
does no I/O and holds its state in immutable values (``observe`` returns a
new state).

The promise about batches: for rate guards, while the arms' exposures keep
the same proportion (a canary at a fixed share), the evidence after some
data is the same however that data was cut into batches. The continuous
guards rank inside each batch (so that drift both arms share cancels) and
take their tail thresholds from earlier batches, so for them cutting
differently gives other, equally valid, evidence; their error rate does not
depend on the cut.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from unveil.release.evidence import CentreEvidence, RateEvidence, TailEvidence
from unveil.release.histogram import EMPTY, OVERFLOW, Histogram, position_value
from unveil.release.verdict import Verdict, VerdictKind

__all__ = [
    "DEFAULT_ALPHA",
    "ArmBatch",
    "Batch",
    "ContinuousGuard",
    "Decision",
    "Direction",
    "JudgeConfig",
    "JudgeError",
    "JudgeState",
    "RateGuard",
    "explain",
    "observe",
    "start",
    "verdict",
]

DEFAULT_ALPHA = 0.05


class JudgeError(ValueError):
    """A configuration or a batch the judge cannot use (the message names the field)."""


class Direction(StrEnum):
    """Which way a guard's metric gets worse."""

    HIGHER_IS_WORSE = "higher_is_worse"
    LOWER_IS_WORSE = "lower_is_worse"


class Decision(StrEnum):
    """The judge's answer after a batch; FAIL and PASS are final."""

    CONTINUE = "continue"
    FAIL = "fail"
    PASS = "pass"  # noqa: S105 (a decision, not a password)


@dataclass(frozen=True, slots=True)
class RateGuard:
    """Events of a counted metric per exposure (errors, or any count).

    ``margin``: the relative increase still allowed (0.0: any increase beyond
    chance is a regression). ``pass_margin``: an early PASS needs evidence
    that the ratio stays below (1 + margin) * (1 + pass_margin).
    """

    name: str
    metric: str
    direction: Direction = Direction.HIGHER_IS_WORSE
    margin: float = 0.0
    pass_margin: float = 0.25
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class ContinuousGuard:
    """A tracked value's distribution (latency or any value), from the histograms.

    ``margin``: how much larger (or smaller, for LOWER_IS_WORSE) the
    treatment's typical value may be (default 5%). Together with the effects
    the centre test looks for (evidence.CENTRE_EFFECTS: none smaller than a
    request slower in 56% of pairs after the margin) it absorbs the few
    percent by which healthy server instances differ. ``tail_margin``: how
    much heavier the slowest 1% may be once the typical ratio is accounted
    for (default 0). ``tail_share``: the part of the guard's false-alarm
    budget that goes to the tail test (the rest to the centre test); the
    tail test counts rare events, so it gets the larger part by default.
    """

    name: str
    metric: str
    direction: Direction = Direction.HIGHER_IS_WORSE
    margin: float = 0.05
    tail_margin: float = 0.0
    weight: float = 1.0
    tail_share: float = 0.6


Guard = RateGuard | ContinuousGuard


@dataclass(frozen=True, slots=True)
class JudgeConfig:
    """The guards and the rules around them.

    ``alpha``: the false-alarm budget over all tests and all looks. Each
    guard gets alpha * weight / total weight; a continuous guard gives
    ``tail_share`` of its share to its tail test and the rest to its centre
    test (``budget()`` states every test's part). ``min_exposures``:
    treatment exposures before any PASS. ``horizon_s``: PASS when it is
    reached with enough data and no failure (None: never by time).
    ``early_pass``: allow PASS before the horizon when every guard has
    evidence (at level ``pass_alpha``) that it is within its bounds. Off by
    default: a judge that has passed no longer watches, so a regression
    that starts later in the observation period (a cache that fills, a job
    that runs at minute 10) would go unseen; the horizon is the time the
    release manager asked to be watched.
    """

    guards: tuple[Guard, ...]
    alpha: float = DEFAULT_ALPHA
    pass_alpha: float = DEFAULT_ALPHA
    min_exposures: int = 1000
    horizon_s: float | None = None
    early_pass: bool = False

    def __post_init__(self) -> None:
        problems = []
        if not self.guards:
            problems.append("guards: at least one guard is needed")
        if not 0.0 < self.alpha < 1.0:
            problems.append(f"alpha: {self.alpha!r} is not between 0 and 1")
        if not 0.0 < self.pass_alpha < 1.0:
            problems.append(f"pass_alpha: {self.pass_alpha!r} is not between 0 and 1")
        if self.min_exposures < 0:
            problems.append(f"min_exposures: {self.min_exposures!r} is negative")
        if self.horizon_s is not None and not self.horizon_s > 0:
            problems.append(f"horizon_s: {self.horizon_s!r} is not a positive number of seconds")
        names = [g.name for g in self.guards]
        for k, guard in enumerate(self.guards):
            where = f"guards[{k}]"
            if not guard.name:
                problems.append(f"{where}.name: empty")
            elif names.count(guard.name) > 1:
                problems.append(f"{where}.name: {guard.name!r} is used by more than one guard")
            if not guard.metric:
                problems.append(f"{where}.metric: empty")
            if not (0.0 <= guard.margin < 10.0):
                problems.append(f"{where}.margin: {guard.margin!r} is not between 0 and 10")
            if not guard.weight > 0.0 or not math.isfinite(guard.weight):
                problems.append(f"{where}.weight: {guard.weight!r} is not a positive number")
            if isinstance(guard, RateGuard) and not 0.0 < guard.pass_margin < 10.0:
                problems.append(f"{where}.pass_margin: {guard.pass_margin!r} is not in (0, 10)")
            if isinstance(guard, ContinuousGuard) and not 0.0 <= guard.tail_margin < 10.0:
                problems.append(f"{where}.tail_margin: {guard.tail_margin!r} is not in [0, 10)")
            if isinstance(guard, ContinuousGuard) and not 0.0 < guard.tail_share < 1.0:
                problems.append(f"{where}.tail_share: {guard.tail_share!r} is not in (0, 1)")
        if problems:
            raise JudgeError("; ".join(problems))

    def budget(self) -> dict[str, float]:
        """The false-alarm budget of every test, by test name ("guard:test")."""
        total = sum(g.weight for g in self.guards)
        out: dict[str, float] = {}
        for guard in self.guards:
            share = self.alpha * guard.weight / total
            if isinstance(guard, RateGuard):
                out[f"{guard.name}:rate"] = share
            else:
                out[f"{guard.name}:centre"] = share * (1.0 - guard.tail_share)
                out[f"{guard.name}:tail"] = share * guard.tail_share
        return out


@dataclass(frozen=True, slots=True)
class ArmBatch:
    """One arm's aggregates for one batch: what the server keeps per window."""

    exposures: int
    counts: Mapping[str, int] = field(default_factory=dict)
    values: Mapping[str, Histogram] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Batch:
    """Both arms' aggregates for the window ending at ``end_s`` (seconds from the start)."""

    end_s: float
    treatment: ArmBatch
    control: ArmBatch


@dataclass(frozen=True, slots=True)
class ContinuousEvidence:
    """A continuous guard's two tests and the arms' histograms so far."""

    centre: CentreEvidence
    tail: TailEvidence
    seen_t: Histogram = EMPTY
    seen_c: Histogram = EMPTY


Evidence = RateEvidence | ContinuousEvidence


@dataclass(frozen=True, slots=True)
class JudgeState:
    """Everything the judge knows after the batches it was given."""

    config: JudgeConfig
    evidence: tuple[Evidence, ...]
    decision: Decision = Decision.CONTINUE
    fired: str | None = None
    reason: str = "waiting for data"
    batches: int = 0
    end_s: float = 0.0
    exposures_t: int = 0
    exposures_c: int = 0


def start(config: JudgeConfig) -> JudgeState:
    """The judge before any data."""
    evidence: list[Evidence] = []
    for guard in config.guards:
        if isinstance(guard, RateGuard):
            evidence.append(RateEvidence.start(guard.margin, guard.pass_margin))
        else:
            evidence.append(ContinuousEvidence(CentreEvidence.start(guard.margin), TailEvidence()))
    return JudgeState(config, tuple(evidence))


def _check_arm(arm: ArmBatch, where: str) -> None:
    if isinstance(arm.exposures, bool) or not isinstance(arm.exposures, int) or arm.exposures < 0:
        raise JudgeError(f"{where}.exposures: {arm.exposures!r} is not a count (an integer >= 0)")
    for metric, n in arm.counts.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise JudgeError(f"{where}.counts[{metric!r}]: {n!r} is not a count (an integer >= 0)")


def _mirror(hist: Histogram) -> Histogram:
    """The same values, order reversed (bucket i -> 241 - i): lower-is-worse as higher."""
    return Histogram(
        hist.count, -hist.total, tuple(sorted((OVERFLOW - i, n) for i, n in hist.buckets))
    )


def observe(state: JudgeState, batch: Batch) -> JudgeState:
    """The judge after one more batch. A final decision stays; later batches are ignored."""
    if state.decision is not Decision.CONTINUE:
        return state
    _check_arm(batch.treatment, "treatment")
    _check_arm(batch.control, "control")
    if not math.isfinite(batch.end_s) or batch.end_s < state.end_s:
        raise JudgeError(f"end_s: {batch.end_s!r} is before the previous batch ({state.end_s})")
    config = state.config
    evidence: list[Evidence] = []
    for guard, ev in zip(config.guards, state.evidence, strict=True):
        if isinstance(guard, RateGuard):
            assert isinstance(ev, RateEvidence)
            x_t = batch.treatment.counts.get(guard.metric, 0)
            x_c = batch.control.counts.get(guard.metric, 0)
            n_t, n_c = batch.treatment.exposures, batch.control.exposures
            if guard.direction is Direction.HIGHER_IS_WORSE:
                evidence.append(ev.add(x_t, n_t, x_c, n_c))
            else:
                evidence.append(ev.add(x_c, n_c, x_t, n_t))
        else:
            assert isinstance(ev, ContinuousEvidence)
            evidence.append(_observe_continuous(guard, ev, batch))
    exposures_t = state.exposures_t + batch.treatment.exposures
    exposures_c = state.exposures_c + batch.control.exposures
    decision, fired, reason = _decide(config, tuple(evidence), batch.end_s, exposures_t)
    return JudgeState(
        config,
        tuple(evidence),
        decision,
        fired,
        reason,
        state.batches + 1,
        batch.end_s,
        exposures_t,
        exposures_c,
    )


def _observe_continuous(
    guard: ContinuousGuard, ev: ContinuousEvidence, batch: Batch
) -> ContinuousEvidence:
    empty = Histogram()
    h_t = batch.treatment.values.get(guard.metric, empty)
    h_c = batch.control.values.get(guard.metric, empty)
    if guard.direction is Direction.LOWER_IS_WORSE:
        h_t, h_c = _mirror(h_t), _mirror(h_c)
    # Fixed before this batch: the control's tail thresholds and the typical ratio.
    thresholds = TailEvidence.thresholds(ev.seen_c)
    typical = ev.centre.estimate()
    scale = max(1.0, typical if typical is not None else 1.0) * (1.0 + guard.tail_margin)
    return ContinuousEvidence(
        ev.centre.add(h_t, h_c),
        ev.tail.add(h_t, h_c, thresholds, scale),
        ev.seen_t.merge(h_t) if h_t.count else ev.seen_t,
        ev.seen_c.merge(h_c) if h_c.count else ev.seen_c,
    )


def _decide(
    config: JudgeConfig, evidence: tuple[Evidence, ...], end_s: float, exposures_t: int
) -> tuple[Decision, str | None, str]:
    budget = config.budget()
    for guard, ev in zip(config.guards, evidence, strict=True):
        for test, log_e in _fail_tests(guard, ev):
            name = f"{guard.name}:{test}"
            if log_e >= math.log(1.0 / budget[name]):
                return Decision.FAIL, name, f"{name} found a regression"
    enough = exposures_t >= config.min_exposures
    if not enough:
        return (
            Decision.CONTINUE,
            None,
            f"waiting for data: {exposures_t} of {config.min_exposures} treatment exposures",
        )
    if config.horizon_s is not None and end_s >= config.horizon_s:
        return (
            Decision.PASS,
            "horizon",
            "the horizon was reached with enough data and no regression",
        )
    if config.early_pass and all(
        _log_pass(guard, ev) >= math.log(len(config.guards) / config.pass_alpha)
        for guard, ev in zip(config.guards, evidence, strict=True)
    ):
        return Decision.PASS, "within-bounds", "every guard has evidence that it is within bounds"
    return Decision.CONTINUE, None, "no regression found so far"


def _fail_tests(guard: Guard, ev: Evidence) -> list[tuple[str, float]]:
    if isinstance(ev, RateEvidence):
        return [("rate", ev.log_fail())]
    return [("centre", ev.centre.log_fail()), ("tail", ev.tail.log_fail())]


def _log_pass(guard: Guard, ev: Evidence) -> float:
    if isinstance(ev, RateEvidence):
        return ev.log_pass()
    return ev.centre.log_pass()


# -------------------------------------------------------------------------- explain


def _num(x: float | None, digits: int = 4) -> float | None:
    """A JSON-safe number: None for missing or infinite values."""
    if x is None or not math.isfinite(x):
        return None
    return round(x, digits)


def _share(x: float) -> str:
    """A margin as people write it: 0%, 7.5%, 10%."""
    return f"{round(x * 100.0, 2):g}%"


def _pct(ratio: float | None) -> str:
    if ratio is None:
        return "unknown"
    return f"{(ratio - 1.0) * 100.0:+.1f}%"


def explain(state: JudgeState) -> dict[str, object]:
    """Why the judge says what it says, per guard, as JSON-ready data.

    For every guard: the estimate (treatment relative to control), its
    anytime-valid interval, the counts per arm, each test's evidence
    against the bound it must reach, whether it fired, and one sentence.
    """
    config = state.config
    budget = config.budget()
    guards: list[dict[str, object]] = []
    for guard, ev in zip(config.guards, state.evidence, strict=True):
        if isinstance(guard, RateGuard):
            assert isinstance(ev, RateEvidence)
            guards.append(_explain_rate(guard, ev, budget, state.fired))
        else:
            assert isinstance(ev, ContinuousEvidence)
            guards.append(_explain_continuous(guard, ev, budget, state.fired))
    return {
        "decision": state.decision.value,
        "fired": state.fired,
        "reason": state.reason,
        "summary": _summary(state, guards),
        "batches": state.batches,
        "seconds": _num(state.end_s, 1),
        "exposures": {"treatment": state.exposures_t, "control": state.exposures_c},
        "alpha": config.alpha,
        "budget": {k: _num(v, 6) for k, v in budget.items()},
        "guards": guards,
    }


def _crossed(log_e: float, alpha: float) -> bool:
    """Whether a test's evidence has reached its bound (the test has fired)."""
    return log_e >= math.log(1.0 / alpha)


def _test_entry(name: str, log_e: float, alpha: float, fired: str | None) -> dict[str, object]:
    # ``fired``: the test reached its bound (several may in one batch); ``decided``: it is
    # the one the decision names (the first to be looked at)
    return {
        "test": name,
        "evidence": _num(math.exp(min(log_e, 700.0)), 3),
        "log_evidence": _num(log_e, 3),
        "bound": _num(1.0 / alpha, 1),
        "alpha": _num(alpha, 6),
        "fired": fired == name or _crossed(log_e, alpha),
        "decided": fired == name,
    }


def _explain_rate(
    guard: RateGuard, ev: RateEvidence, budget: dict[str, float], fired: str | None
) -> dict[str, object]:
    name = f"{guard.name}:rate"
    alpha = budget[name]
    low, high = ev.interval(alpha)
    estimate = ev.estimate()
    # Counts are kept in test orientation (the arm whose increase is bad first).
    t_events, t_exp, c_events, c_exp = ev.events_t, ev.exposures_t, ev.events_c, ev.exposures_c
    if guard.direction is Direction.LOWER_IS_WORSE:
        t_events, t_exp, c_events, c_exp = c_events, c_exp, t_events, t_exp
    rate_t = t_events / t_exp if t_exp else None
    rate_c = c_events / c_exp if c_exp else None
    if fired == name or _crossed(ev.log_fail(), alpha):
        worse = "higher" if guard.direction is Direction.HIGHER_IS_WORSE else "lower"
        sentence = (
            f"{guard.name}: the treatment's {guard.metric} rate is {worse} than control's "
            f"beyond the allowed {_share(guard.margin)} (estimate {_pct(estimate)}, "
            f"{1 - 2 * alpha:.1%} interval {_pct(low)} to {_pct(high)}, "
            f"{t_events} of {t_exp} against {c_events} of {c_exp})."
        )
    elif not t_exp or not c_exp:
        sentence = f"{guard.name}: no exposures in one arm yet; nothing to compare."
    else:
        sentence = (
            f"{guard.name}: no regression found; {guard.metric} {t_events} of {t_exp} in "
            f"treatment against {c_events} of {c_exp} in control "
            f"(estimate {_pct(estimate)}, interval {_pct(low)} to {_pct(high)})."
        )
    return {
        "guard": guard.name,
        "kind": "rate",
        "metric": guard.metric,
        "direction": guard.direction.value,
        "margin": guard.margin,
        "estimate": _num(estimate),
        "estimate_means": "treatment rate / control rate",
        "interval": [_num(low), _num(high)],
        "interval_level": _num(1.0 - 2.0 * alpha, 6),
        "counts": {
            "treatment": {"events": t_events, "exposures": t_exp, "rate": _num(rate_t, 6)},
            "control": {"events": c_events, "exposures": c_exp, "rate": _num(rate_c, 6)},
        },
        "tests": [_test_entry(name, ev.log_fail(), alpha, fired)],
        "sentence": sentence,
    }


def _explain_continuous(
    guard: ContinuousGuard, ev: ContinuousEvidence, budget: dict[str, float], fired: str | None
) -> dict[str, object]:
    centre_name, tail_name = f"{guard.name}:centre", f"{guard.name}:tail"
    alpha_c, alpha_t = budget[centre_name], budget[tail_name]
    centre, tail = ev.centre, ev.tail
    estimate = centre.estimate()
    low, high = centre.interval(alpha_c)
    lower = guard.direction is Direction.LOWER_IS_WORSE
    if lower:  # back from the mirrored scale: treatment/control of the real values
        estimate = 1.0 / estimate if estimate else None
        low, high = (1.0 / high if high else None), (1.0 / low if low else None)

    def quantile(h: Histogram, q: float) -> float | None:
        if not h.count:
            return None
        value = h.quantile(1.0 - q if lower else q)
        return 1.0 / value if lower and value else value

    thresholds = tail.last_thresholds
    tail_value = position_value(thresholds[0]) if thresholds else None
    if lower and tail_value:
        tail_value = 1.0 / tail_value
    worse = "lower" if lower else "higher"
    if fired == centre_name or _crossed(centre.log_fail(), alpha_c):
        sentence = (
            f"{guard.name}: the treatment's typical {guard.metric} is {worse} than control's "
            f"beyond the allowed {_share(guard.margin)} (estimate {_pct(estimate)}, "
            f"{1 - 2 * alpha_c:.1%} interval {_pct(low)} to {_pct(high)})."
        )
    elif fired == tail_name or _crossed(tail.log_fail(), alpha_t):
        sentence = (
            f"{guard.name}: the treatment's slowest requests are worse than control's: "
            f"{tail.above_t:.0f} of {tail.counted_t} treatment values against "
            f"{tail.above_c:.0f} of {tail.counted_c} control values past control's p99 "
            f"(treatment's threshold scaled by {tail.last_scale:.3f})."
        )
    elif not ev.seen_t.count or not ev.seen_c.count:
        sentence = f"{guard.name}: no {guard.metric} values in one arm yet; nothing to compare."
    else:
        sentence = (
            f"{guard.name}: no regression found; typical {guard.metric} {_pct(estimate)} "
            f"(interval {_pct(low)} to {_pct(high)}, allowed {_share(guard.margin)}), "
            f"tail {tail.above_t:.0f} of {tail.counted_t} against {tail.above_c:.0f} of "
            f"{tail.counted_c} past control's p99."
        )
    return {
        "guard": guard.name,
        "kind": "continuous",
        "metric": guard.metric,
        "direction": guard.direction.value,
        "margin": guard.margin,
        "tail_margin": guard.tail_margin,
        "estimate": _num(estimate),
        "estimate_means": "typical treatment value / typical control value",
        "interval": [_num(low), _num(high)],
        "interval_level": _num(1.0 - 2.0 * alpha_c, 6),
        "counts": {
            "treatment": {
                "values": ev.seen_t.count,
                "p50": _num(quantile(ev.seen_t, 0.5)),
                "p99": _num(quantile(ev.seen_t, 0.99)),
                "past_tail_threshold": _num(tail.above_t, 2),
            },
            "control": {
                "values": ev.seen_c.count,
                "p50": _num(quantile(ev.seen_c, 0.5)),
                "p99": _num(quantile(ev.seen_c, 0.99)),
                "past_tail_threshold": _num(tail.above_c, 2),
            },
        },
        "tail_threshold": _num(tail_value),
        "tail_scale": _num(tail.last_scale),
        "tests": [
            _test_entry(centre_name, centre.log_fail(), alpha_c, fired),
            _test_entry(tail_name, tail.log_fail(), alpha_t, fired),
        ],
        "sentence": sentence,
    }


def _summary(state: JudgeState, guards: list[dict[str, object]]) -> str:
    if state.decision is Decision.FAIL:
        for g in guards:
            tests = g["tests"]
            assert isinstance(tests, list)
            if any(t["fired"] for t in tests):
                return f"Roll back: {g['sentence']}"
    if state.decision is Decision.PASS:
        if state.fired == "horizon":
            return (
                f"Healthy: after {state.exposures_t} treatment exposures no guard found a "
                "regression by the end of the observation period."
            )
        return (
            f"Healthy: after {state.exposures_t} treatment exposures every guard has evidence "
            "that the treatment is within its allowed margin."
        )
    return f"Keep going: {state.reason}."


def verdict(state: JudgeState) -> Verdict:
    """The judge's answer in the state machine's terms (release/verdict.py).

    NO_DATA while one arm has had no exposures at all: the machine then
    waits, and never fails a release for lack of data.
    """
    kinds = {Decision.FAIL: VerdictKind.FAIL, Decision.PASS: VerdictKind.PASS}
    kind = kinds.get(state.decision, VerdictKind.CONTINUE)
    if kind is VerdictKind.CONTINUE and (not state.exposures_t or not state.exposures_c):
        kind = VerdictKind.NO_DATA
    return Verdict(kind, explain(state))
