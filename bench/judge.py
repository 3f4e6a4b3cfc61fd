"""The judge benchmark of shared/benchmarks/judge.md: unveil's judge against Kayenta.

Ten canary scenarios and the release-safety mode, deterministic from a seed.
unveil's judge is driven through bench/judge_adapter.py (so it sees only
the aggregates the server keeps); the baseline is a fixed-horizon
Mann-Whitney judge in the manner of Kayenta, run once at the horizon
("kayenta-fixed") and every minute from minute 5 ("kayenta-interval").

    .venv/bin/python bench/judge.py                      # reduced R (30 / 10)
    .venv/bin/python bench/judge.py --runs 1000/300      # the full R
    .venv/bin/python bench/judge.py --scenarios 1,3 --jobs 2 --seed 7
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from judge_adapter import GUARDS, make
from unveil.release.judge import ContinuousGuard

TICK = 10
HORIZON = 1800
RATE = 20.0
P_ERR = 0.01
MU = math.log(100.0)
SIGMA = 0.5
LATENCY_MARGIN = next(g.margin for g in GUARDS if isinstance(g, ContinuousGuard))


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    null: bool  # True: any FAIL is a false alarm
    err: float = 1.0
    lat: float = 1.0
    tail: bool = False
    onset_s: float = 0.0
    hetero: bool = False
    drift: bool = False
    low: bool = False
    goal: str = ""


SCENARIOS = (
    Scenario("1", "A/A", True, goal="FA <= 5%"),
    Scenario("2", "A/A heterogeneity", True, hetero=True, goal="FA <= 5%"),
    Scenario("3", "errors x2", False, err=2.0, goal="det >= 95%, median <= 3000"),
    Scenario("4", "latency +20%", False, lat=1.2, goal="det >= 95%, median <= 600"),
    Scenario("5", "errors x1.25", False, err=1.25),
    Scenario("6", "latency +5%", False, lat=1.05),
    Scenario("7", "tail only", False, tail=True, goal="det >= 95%, median <= 4000"),
    Scenario("8", "late onset errors x2", False, err=2.0, onset_s=600, goal="det >= 95%"),
    Scenario("9", "shared drift", True, drift=True, goal="FA <= 5%"),
    Scenario("10", "low traffic", True, low=True, goal="never FAIL"),
)
JUDGES = ("unveil", "kayenta-fixed", "kayenta-interval")


# ----------------------------------------------------------------- the workload


@dataclass
class Arm:
    """One arm's request generator for one run."""

    treatment: bool
    scenario: Scenario
    rng: np.random.Generator
    scales: np.ndarray
    served: int = 0

    def batch(self, t_end: float, rate: float) -> tuple[int, int, np.ndarray, float, int]:
        """Requests in (t_end - TICK, t_end]: n, errors, latencies, added latency s, errors."""
        sc = self.scenario
        n = int(self.rng.poisson(rate * TICK))
        times = t_end - TICK + TICK * self.rng.random(n)
        p = np.full(n, P_ERR)
        base = np.exp(MU + SIGMA * self.rng.standard_normal(n))
        if sc.hetero:
            instance = (self.served + np.arange(n)) % 3
            base = base * self.scales[instance]
        self.served += n
        if sc.drift:
            base = base * (1.0 + 0.3 * np.sin(2.0 * math.pi * times / 1200.0))
        latency = base
        if self.treatment:
            active = times >= sc.onset_s
            p = np.where(active, P_ERR * sc.err, P_ERR)
            if sc.lat != 1.0:
                latency = latency * sc.lat
            if sc.tail:
                latency = np.where(self.rng.random(n) < 0.02, latency * 3.0, latency)
        errors = self.rng.random(n) < p
        latency.setflags(write=False)
        added = float(np.sum(latency - base)) / 1000.0
        return n, int(errors.sum()), latency, added, int(errors.sum())


def _rate(sc: Scenario, t_end: float) -> float:
    if not sc.low:
        return RATE
    # 60 s on, 60 s off at 0.5 requests/s (the batch ending at t_end lies in one half).
    return 0.5 if int((t_end - TICK) // 60) % 2 == 0 else 0.0


# ----------------------------------------------------------------- the baseline


def _classify(x: np.ndarray, y: np.ndarray, allowed: float) -> bool:
    """Kayenta's Mann-Whitney classifier: True when the metric is High."""
    x = x[np.isfinite(x)]
    y = y[np.isfinite(y)]
    n1, n2 = len(x), len(y)
    if n1 < 3 or n2 < 3:
        return False
    diffs = np.sort(np.subtract.outer(x, y).ravel())
    estimate = float(np.median(diffs))
    pooled = np.concatenate([x, y])
    _, ties = np.unique(pooled, return_counts=True)
    n = n1 + n2
    tie = float(np.sum(ties**3 - ties)) / (n * (n - 1))
    sigma = math.sqrt(n1 * n2 / 12.0 * ((n + 1) - tie))
    z = float(stats.norm.ppf(0.99))  # 98% interval
    k = math.floor(n1 * n2 / 2.0 - z * sigma - 0.5)
    k = min(max(k, 0), n1 * n2 - 1)
    lower = float(diffs[k])
    mean_y = float(np.mean(y))
    ratio = float(np.mean(x)) / mean_y if mean_y > 0 else math.inf
    return lower > 0.25 * abs(estimate) and lower > 0 and ratio >= 1.0 + allowed


def _kayenta_fails(points_t: list[list[float]], points_c: list[list[float]]) -> bool:
    """Score = share of metrics not High; pass at 95, marginal at 75, else fail."""
    allowed = (0.0, LATENCY_MARGIN)
    highs = 0
    for metric in range(2):
        x = np.array([p[metric] for p in points_t])
        y = np.array([p[metric] for p in points_c])
        highs += _classify(x, y, allowed[metric])
    score = 100.0 * (2 - highs) / 2
    return score < 75.0


# ----------------------------------------------------------------- one run


@dataclass
class Outcome:
    decision: str = "none"  # fail | pass | none
    seconds: float = math.nan
    requests: float = math.nan
    errors_served: float = math.nan
    added_latency_s: float = math.nan
    fired: str = ""


@dataclass
class RunResult:
    scenario: str
    outcomes: dict[str, Outcome] = field(default_factory=dict)


def run_canary(sc: Scenario, seed: int, run: int) -> RunResult:
    rng = np.random.default_rng([seed, int(sc.key), run])
    scales = [np.exp(0.05 * rng.standard_normal(3)) for _ in range(2)]
    control = Arm(False, sc, rng, scales[0])
    treatment = Arm(True, sc, rng, scales[1])
    judge = make(share=0.5, horizon_s=HORIZON, interval_s=TICK, seed=seed, mode="canary")
    outcomes = {name: Outcome() for name in JUDGES}
    seen = errors_served = 0
    added = 0.0
    bucket_t: list[list[float]] = []
    bucket_c: list[list[float]] = []
    acc = {"t": [0, 0, 0.0], "c": [0, 0, 0.0]}
    for tick in range(1, HORIZON // TICK + 1):
        t = tick * TICK
        rate = _rate(sc, t)
        n_c, e_c, l_c, _, _ = control.batch(t, rate)
        n_t, e_t, l_t, add_t, err_t = treatment.batch(t, rate)
        seen += n_t
        errors_served += err_t
        added += add_t
        for key, (n, e, lat) in (("c", (n_c, e_c, l_c)), ("t", (n_t, e_t, l_t))):
            acc[key][0] += n
            acc[key][1] += e
            acc[key][2] += float(lat.sum())
        if outcomes["unveil"].decision == "none":
            judge.observe("control", e_c, n_c, l_c, float(t))
            judge.observe("treatment", e_t, n_t, l_t, float(t))
            d = judge.decision()
            if d != "continue":
                fired = judge.explain().get("fired")
                outcomes["unveil"] = Outcome(
                    d, t, seen, errors_served, added, str(fired) if fired else ""
                )
        if t % 30 == 0:  # Kayenta's 30-second points: error rate and mean latency
            for key, points in (("t", bucket_t), ("c", bucket_c)):
                n, e, s = acc[key]
                points.append([e / n if n else math.nan, s / n if n else math.nan])
                acc[key] = [0, 0, 0.0]
        if t % 60 == 0 and t >= 300 and outcomes["kayenta-interval"].decision == "none":
            if _kayenta_fails(bucket_t, bucket_c):
                outcomes["kayenta-interval"] = Outcome("fail", t, seen, errors_served, added)
            elif t == HORIZON:
                outcomes["kayenta-interval"] = Outcome("pass", t, seen, errors_served, added)
        if t == HORIZON:
            fails = _kayenta_fails(bucket_t, bucket_c)
            outcomes["kayenta-fixed"] = Outcome(
                "fail" if fails else "pass", t, seen, errors_served, added
            )
    return RunResult(sc.key, outcomes)


RELEASE_PLAN = ((0.01, 1800), (0.05, 900), (0.25, 900))
RELEASE_RATE = 200.0


def run_release(healthy: bool, seed: int, run: int) -> dict[str, object]:
    """One release: 1% -> 5% -> 25% -> 100%; returns where (if anywhere) it rolled back."""
    rng = np.random.default_rng([seed, 99 if healthy else 98, run])
    sc = Scenario("r", "release", healthy, err=1.0 if healthy else 2.0)
    control = Arm(False, sc, rng, np.ones(3))
    treatment = Arm(True, sc, rng, np.ones(3))
    judge = make(share=RELEASE_PLAN[0][0], horizon_s=0, interval_s=TICK, seed=seed, mode="release")
    t = 0
    for step, (share, hold) in enumerate(RELEASE_PLAN):
        judge.set_share(share, float(t), float(hold))
        for _ in range(hold // TICK):
            t += TICK
            n_c, e_c, l_c, _, _ = control.batch(t, RELEASE_RATE * (1 - share))
            n_t, e_t, l_t, _, _ = treatment.batch(t, RELEASE_RATE * share)
            judge.observe("control", e_c, n_c, l_c, float(t))
            judge.observe("treatment", e_t, n_t, l_t, float(t))
            if judge.decision() == "fail":
                fired = str(judge.explain().get("fired"))
                return {"rolled_back": True, "step": step, "seconds": t, "fired": fired}
    return {"rolled_back": False, "step": len(RELEASE_PLAN), "seconds": t, "fired": ""}


def _task(args: tuple[str, str, int, int]) -> object:
    kind, key, seed, run = args
    if kind == "canary":
        sc = next(s for s in SCENARIOS if s.key == key)
        return run_canary(sc, seed, run)
    return (key, run_release(key == "healthy", seed, run))


# ----------------------------------------------------------------- the table


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def _fmt(x: float, digits: int = 0) -> str:
    return "-" if not math.isfinite(x) else f"{x:,.{digits}f}"


def _rollbacks(runs: list[dict[str, object]]) -> str:
    """Which rule rolled the releases back, and at which step of the plan."""
    shares = [f"{share:.0%}" for share, _ in RELEASE_PLAN]
    rules = Counter(
        f"{r['fired']} at {shares[int(str(r['step']))]}" for r in runs if r["rolled_back"]
    )
    return ", ".join(f"{rule}: {k}" for rule, k in sorted(rules.items())) or "-"


def table(results: list[RunResult], releases: list[tuple[str, dict[str, object]]]) -> str:
    lines = [
        "| scenario | judge | runs | FAIL rate [Wilson 95%] | requests to decision "
        "median / p90 | seconds median | exposure: errors / added latency req-s (median) "
        "| inconclusive | rules that failed (runs) | goal |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for sc in SCENARIOS:
        runs = [r for r in results if r.scenario == sc.key]
        if not runs:
            continue
        for name in JUDGES:
            outs = [r.outcomes[name] for r in runs]
            n = len(outs)
            fails = [o for o in outs if o.decision == "fail"]
            decided = [o for o in outs if o.decision != "none"]
            lo, hi = wilson(len(fails), n)
            kind = "false alarms" if sc.null else "detection"
            # Requests to decision: over runs that FAILed (detection) or decided at all (null).
            pool = decided if sc.null else fails
            req = np.array([o.requests for o in pool]) if pool else np.array([math.nan])
            sec = np.array([o.seconds for o in pool]) if pool else np.array([math.nan])
            err = np.array([o.errors_served for o in fails]) if fails else np.array([math.nan])
            add = np.array([o.added_latency_s for o in fails]) if fails else np.array([math.nan])
            inconclusive = sum(o.decision == "none" for o in outs) / n
            rules = Counter(o.fired for o in fails if o.fired)
            fired = ", ".join(f"{rule} {k}" for rule, k in sorted(rules.items())) or "-"
            lines.append(
                f"| {sc.key}. {sc.title} | {name} | {n} | {kind} {len(fails) / n:.1%} "
                f"[{lo:.1%}, {hi:.1%}] | {_fmt(float(np.median(req)))} / "
                f"{_fmt(float(np.percentile(req, 90)))} | {_fmt(float(np.median(sec)))} | "
                f"{_fmt(float(np.median(err)))} / {_fmt(float(np.median(add)), 1)} | "
                f"{inconclusive:.1%} | {fired} | {sc.goal if name == 'unveil' else ''} |"
            )
    if releases:
        lines += [
            "",
            "| release mode (unveil) | runs | outcome [Wilson 95%] | rollbacks by rule (step) "
            "| goal |",
            "|---|---|---|---|---|",
        ]
        bad = [r for k, r in releases if k == "errors"]
        good = [r for k, r in releases if k == "healthy"]
        if bad:
            k = sum(1 for r in bad if r["rolled_back"] and r["step"] == 0)
            lo, hi = wilson(k, len(bad))
            lines.append(
                f"| errors x2: rolled back while at 1% | {len(bad)} | {k / len(bad):.1%} "
                f"[{lo:.1%}, {hi:.1%}] | {_rollbacks(bad)} | >= 98% |"
            )
        if good:
            k = sum(1 for r in good if not r["rolled_back"])
            lo, hi = wilson(k, len(good))
            lines.append(
                f"| healthy: completed without a rollback | {len(good)} | {k / len(good):.1%} "
                f"[{lo:.1%}, {hi:.1%}] | {_rollbacks(good)} | >= 97% |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="30/10", help="R for null / other scenarios (a/b)")
    parser.add_argument("--scenarios", default="all", help="e.g. 1,3,7 or all")
    parser.add_argument("--release", default="yes", choices=("yes", "no"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args(argv)
    r_null, r_other = (int(x) for x in args.runs.split("/"))
    keys = [s.key for s in SCENARIOS] if args.scenarios == "all" else args.scenarios.split(",")
    unknown = [k for k in keys if k not in {s.key for s in SCENARIOS}]
    if unknown:
        parser.error(f"--scenarios: unknown {unknown}")
    tasks: list[tuple[str, str, int, int]] = []
    for sc in SCENARIOS:
        if sc.key in keys:
            runs = r_null if sc.null else r_other
            tasks += [("canary", sc.key, args.seed, i) for i in range(runs)]
    if args.release == "yes":
        tasks += [("release", "errors", args.seed, i) for i in range(r_other)]
        tasks += [("release", "healthy", args.seed, i) for i in range(r_other)]
    started = time.perf_counter()
    if args.jobs > 1:
        with multiprocessing.Pool(args.jobs) as pool:
            done = pool.map(_task, tasks, chunksize=4)
    else:
        done = [_task(t) for t in tasks]
    results = [d for d in done if isinstance(d, RunResult)]
    releases = [d for d in done if isinstance(d, tuple)]
    out = table(results, releases)
    print(out)
    print(
        f"\n{len(tasks)} runs in {time.perf_counter() - started:.0f} s "
        f"(seed {args.seed}, runs {args.runs}, jobs {args.jobs})"
    )
    return out


if __name__ == "__main__":
    main()
