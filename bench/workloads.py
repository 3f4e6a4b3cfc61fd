"""The four evaluation workloads, shared by bench/eval.py and bench/peers.py.

A: a boolean flag that is simply on.
B: a boolean flag with a 25% rollout by key.
C: a string flag with three rules (country in a list of 10, email ends_with,
   plan eq), then a 50/50 rollout.
D: 1,000 flags shaped like C; each call asks for a random one.

Contexts: 10,000 pre-made users, reused round-robin. Every system gets the
same users, converted once, before timing, into its own context type.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

USERS = 10_000
D_FLAGS = 1_000
CALLS = 100_000  # one pass over the prepared (flag, context) pairs

COUNTRIES = ["NL", "DE", "BE", "FR", "ES", "IT", "PT", "AT", "DK", "SE"]
ALL_COUNTRIES = [*COUNTRIES, "US", "GB", "CA", "BR", "JP", "IN", "AU", "MX", "NG", "KR"]
DOMAIN = "@example.com"
DOMAINS = [DOMAIN, "@mail.test", "@corp.test", "@inbox.test", "@web.test"]
PLANS = ["free", "pro", "team", "enterprise"]
C_VALUES = {"country": "v-country", "email": "v-email", "plan": "v-plan"}
SPLIT = ("control", "treatment")


def make_users(seed: int = 7) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [
        {
            "key": f"user-{i:05d}",
            "country": rng.choice(ALL_COUNTRIES),
            "email": f"person{i}{rng.choice(DOMAINS)}",
            "plan": rng.choice(PLANS),
        }
        for i in range(USERS)
    ]


def d_keys() -> list[str]:
    return [f"d-{i:04d}" for i in range(D_FLAGS)]


def flag_keys(workload: str, seed: int = 11) -> list[str]:
    """The flag asked for on each call of a pass."""
    if workload == "D":
        rng = random.Random(seed)
        keys = d_keys()
        return [rng.choice(keys) for _ in range(CALLS)]
    return [workload.lower()] * CALLS


def expected_c(user: dict[str, str]) -> str | None:
    """What a C-shaped flag must give this user, or None where the rollout decides."""
    if user["country"] in COUNTRIES:
        return C_VALUES["country"]
    if user["email"].endswith(DOMAIN):
        return C_VALUES["email"]
    if user["plan"] == "enterprise":
        return C_VALUES["plan"]
    return None


# -- unveil's flags document for all four workloads ------------------------------------


def _unveil_c() -> dict[str, Any]:
    return {
        "kind": "string",
        "variants": {
            "country": C_VALUES["country"],
            "email": C_VALUES["email"],
            "plan": C_VALUES["plan"],
            "control": "control",
            "treatment": "treatment",
        },
        "off_variant": "control",
        "rules": [
            {"when": [{"attr": "country", "op": "in", "values": COUNTRIES}], "serve": "country"},
            {"when": [{"attr": "email", "op": "ends_with", "values": [DOMAIN]}], "serve": "email"},
            {"when": [{"attr": "plan", "op": "eq", "values": ["enterprise"]}], "serve": "plan"},
        ],
        "default": {"rollout": {"control": 50, "treatment": 50}},
    }


def unveil_document() -> dict[str, Any]:
    flags: dict[str, Any] = {
        "a": {"default": "on"},
        "b": {"default": {"rollout": {"on": 25, "off": 75}}},
        "c": _unveil_c(),
    }
    for key in d_keys():
        flags[key] = _unveil_c()
    return {"version": 1, "flags": flags}


# -- the floor: the same rules written by hand as plain functions ----------------------


def hand_written() -> dict[str, Callable[[dict[str, str]], Any]]:
    import mmh3

    countries = frozenset(COUNTRIES)
    hash32 = mmh3.hash

    def a(ctx: dict[str, str]) -> bool:
        return True

    def b(ctx: dict[str, str]) -> bool:
        return hash32("b." + ctx["key"], 0, False) % 100_000 < 25_000

    def make_c(salt: str) -> Callable[[dict[str, str]], str]:
        prefix = salt + "."

        def c(ctx: dict[str, str]) -> str:
            if ctx.get("country") in countries:
                return "v-country"
            email = ctx.get("email")
            if isinstance(email, str) and email.endswith(DOMAIN):
                return "v-email"
            if ctx.get("plan") == "enterprise":
                return "v-plan"
            if hash32(prefix + ctx["key"], 0, False) % 100_000 < 50_000:
                return "control"
            return "treatment"

        return c

    out: dict[str, Callable[[dict[str, str]], Any]] = {"a": a, "b": b, "c": make_c("c")}
    for key in d_keys():
        out[key] = make_c(key)
    return out


# -- the harness ------------------------------------------------------------------------


@dataclass
class Measured:
    evals_per_second: float
    problems: list[str]


def check_answers(
    workload: str, users: Sequence[dict[str, str]], answers: Sequence[Any]
) -> list[str]:
    """Refuse to report speed for wrong answers: rule outcomes exact, rollout shares near."""
    problems: list[str] = []
    if workload == "A":
        if not all(a is True for a in answers):
            problems.append("A: not every answer is True")
    elif workload == "B":
        share = sum(1 for a in answers if a is True) / len(answers)
        if not 0.22 < share < 0.28 or not all(isinstance(a, bool) for a in answers):
            problems.append(f"B: {share:.1%} on, expected about 25%")
    else:
        rolled = [a for u, a in zip(users, answers, strict=True) if expected_c(u) is None]
        wrong = sum(
            1
            for u, a in zip(users, answers, strict=True)
            if expected_c(u) is not None and a != expected_c(u)
        )
        if wrong:
            problems.append(f"{workload}: {wrong} rule answers wrong")
        share = sum(1 for a in rolled if a == "control") / max(1, len(rolled))
        if not 0.45 < share < 0.55 or any(a not in SPLIT for a in rolled):
            problems.append(f"{workload}: rollout gave {share:.1%} control, expected about 50%")
    return problems


def measure(
    workload: str,
    evaluate: Callable[[str, Any], Any],
    contexts: Sequence[Any],
    users: Sequence[dict[str, str]],
    min_seconds: float = 0.5,
    rounds: int = 3,
) -> Measured:
    """Evaluations per second on one thread, best of ``rounds``."""
    keys = flag_keys(workload)
    pairs = [(keys[i], contexts[i % len(contexts)]) for i in range(CALLS)]
    # the first 10,000 calls cover every user once: check them before timing
    answers = [evaluate(k, c) for k, c in pairs[:USERS]]
    problems = check_answers(workload, users, answers)
    best = 0.0
    for _ in range(rounds):
        done = 0
        start = time.perf_counter()
        elapsed = 0.0
        while elapsed < min_seconds:
            for key, context in pairs:
                evaluate(key, context)
            done += len(pairs)
            elapsed = time.perf_counter() - start
        best = max(best, done / elapsed)
    return Measured(best, problems)


def format_rate(rate: float) -> str:
    if rate >= 1e6:
        return f"{rate / 1e6:.2f} M/s"
    return f"{rate / 1e3:.1f} k/s"
