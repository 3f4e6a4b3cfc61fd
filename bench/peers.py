"""The four workloads through unveil, four peer SDKs and a hand-written floor, in one run.

    make bench            (installs the peers into .venv-bench, never into unveil)

Every system evaluates offline from flags defined in its own format, with
the same 10,000 users converted beforehand into its own context type, and
with its event sending off where it has a switch. Answers are checked
before timing (rule outcomes exactly, rollout shares approximately): a
system that answers wrongly is reported, not ranked.
"""

from __future__ import annotations

import logging
import platform
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from workloads import (
    C_VALUES,
    COUNTRIES,
    DOMAIN,
    Measured,
    d_keys,
    format_rate,
    hand_written,
    make_users,
    measure,
    unveil_document,
)

Users = list[dict[str, str]]
Setup = Callable[[Users], dict[str, tuple[Callable[[str, Any], Any], list[Any]]]]


def _by_kind(
    boolean: Callable[[str, Any], Any], value: Callable[[str, Any], Any], contexts: list[Any]
) -> dict[str, tuple[Callable[[str, Any], Any], list[Any]]]:
    """Workloads A and B ask a boolean flag, C and D a string flag."""
    return {
        "A": (boolean, contexts),
        "B": (boolean, contexts),
        "C": (value, contexts),
        "D": (value, contexts),
    }


def setup_unveil(users: Users) -> dict[str, tuple[Callable[[str, Any], Any], list[Any]]]:
    from unveil import Client

    client = Client.from_file(unveil_document())
    return _by_kind(client.enabled, client.value, users)


def setup_floor(users: Users) -> dict[str, tuple[Callable[[str, Any], Any], list[Any]]]:
    functions = hand_written()

    def evaluate(key: str, ctx: dict[str, str]) -> Any:
        return functions[key](ctx)

    return dict.fromkeys("ABCD", (evaluate, users))


# -- LaunchDarkly: launchdarkly-server-sdk with its TestData source ----------------------


def setup_launchdarkly(users: Users) -> dict[str, tuple[Callable[[str, Any], Any], list[Any]]]:
    from ldclient import Context, LDClient
    from ldclient.config import Config
    from ldclient.integrations.test_data import FlagBuilder, TestData

    class FullFlag(FlagBuilder):
        """TestData's builder knows only 'in' clauses; this one carries a whole flag."""

        def __init__(self, key: str, body: dict[str, Any]) -> None:
            super().__init__(key)
            self._body = body

        def _build(self, version: int) -> dict[str, Any]:
            return {**self._body, "key": self._key, "version": version}

    def clause(attr: str, op: str, values: list[Any]) -> dict[str, Any]:
        return {
            "contextKind": "user",
            "attribute": attr,
            "op": op,
            "values": values,
            "negate": False,
        }

    def flag(
        variations: list[Any], rules: list[dict[str, Any]], fallthrough: dict[str, Any], salt: str
    ) -> dict[str, Any]:
        return {
            "on": True,
            "variations": variations,
            "offVariation": len(variations) - 1,
            "salt": salt,
            "prerequisites": [],
            "targets": [],
            "contextTargets": [],
            "rules": rules,
            "fallthrough": fallthrough,
            "trackEvents": False,
            "trackEventsFallthrough": False,
            "clientSide": False,
            "deleted": False,
        }

    def rollout(weights: list[int]) -> dict[str, Any]:
        return {
            "rollout": {
                "variations": [{"variation": i, "weight": w} for i, w in enumerate(weights)]
            }
        }

    c_variations = [
        "control",
        "treatment",
        C_VALUES["country"],
        C_VALUES["email"],
        C_VALUES["plan"],
    ]
    c_rules = [
        {"id": "r0", "clauses": [clause("country", "in", COUNTRIES)], "variation": 2},
        {"id": "r1", "clauses": [clause("email", "endsWith", [DOMAIN])], "variation": 3},
        {"id": "r2", "clauses": [clause("plan", "in", ["enterprise"])], "variation": 4},
    ]
    td = TestData.data_source()
    td.update(FullFlag("a", flag([True, False], [], {"variation": 0}, "a")))
    td.update(FullFlag("b", flag([True, False], [], rollout([25_000, 75_000]), "b")))
    for key in ["c", *d_keys()]:
        td.update(
            FullFlag(key, flag(c_variations, c_rules, rollout([50_000, 50_000, 0, 0, 0]), key))
        )
    client = LDClient(
        Config(
            "bench-sdk-key", update_processor_class=td, send_events=False, diagnostic_opt_out=True
        )
    )
    contexts = [
        Context.builder(u["key"])
        .set("country", u["country"])
        .set("email", u["email"])
        .set("plan", u["plan"])
        .build()
        for u in users
    ]

    def boolean(key: str, ctx: Any) -> Any:
        return client.variation(key, ctx, False)

    def string(key: str, ctx: Any) -> Any:
        return client.variation(key, ctx, "fallback")

    return _by_kind(boolean, string, contexts)


# -- Unleash: UnleashClient bootstrapped from a file, never fetching ----------------------


def setup_unleash(users: Users) -> dict[str, tuple[Callable[[str, Any], Any], list[Any]]]:
    import json

    from UnleashClient import UnleashClient
    from UnleashClient.cache import FileCache

    def variant(name: str, value: str, weight: int) -> dict[str, Any]:
        return {
            "name": name,
            "weight": weight,
            "stickiness": "default",
            "weightType": "variable",
            "payload": {"type": "string", "value": value},
        }

    def constrained(context_name: str, operator: str, values: list[str], name: str) -> dict:
        return {
            "name": "default",
            "parameters": {},
            "constraints": [{"contextName": context_name, "operator": operator, "values": values}],
            "variants": [variant(name, name, 1000)],
        }

    def c_feature(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "enabled": True,
            "strategies": [
                constrained("country", "IN", COUNTRIES, C_VALUES["country"]),
                constrained("email", "STR_ENDS_WITH", [DOMAIN], C_VALUES["email"]),
                constrained("plan", "IN", ["enterprise"], C_VALUES["plan"]),
                {
                    "name": "flexibleRollout",
                    "parameters": {"rollout": "100", "stickiness": "userId", "groupId": name},
                    "variants": [
                        variant("control", "control", 500),
                        variant("treatment", "treatment", 500),
                    ],
                },
            ],
        }

    features = {
        "version": 2,
        "features": [
            {"name": "a", "enabled": True, "strategies": [{"name": "default", "parameters": {}}]},
            {
                "name": "b",
                "enabled": True,
                "strategies": [
                    {
                        "name": "flexibleRollout",
                        "parameters": {"rollout": "25", "stickiness": "userId", "groupId": "b"},
                    }
                ],
            },
            c_feature("c"),
            *[c_feature(k) for k in d_keys()],
        ],
    }
    folder = tempfile.mkdtemp(prefix="unveil-bench-unleash-")
    path = Path(folder) / "features.json"
    path.write_text(json.dumps(features))
    cache = FileCache("unveil-bench", directory=folder)
    cache.bootstrap_from_file(path)
    client = UnleashClient(
        url="http://127.0.0.1:9/api",
        app_name="unveil-bench",
        disable_metrics=True,
        disable_registration=True,
        cache=cache,
    )
    client.initialize_client(fetch_toggles=False)
    contexts = [
        {
            "userId": u["key"],
            "properties": {"country": u["country"], "email": u["email"], "plan": u["plan"]},
        }
        for u in users
    ]

    def enabled(key: str, ctx: Any) -> Any:
        return client.is_enabled(key, ctx)

    def value(key: str, ctx: Any) -> Any:
        return client.get_variant(key, ctx)["name"]

    return _by_kind(enabled, value, contexts)


# -- GrowthBook: the growthbook SDK with features given inline ---------------------------


def setup_growthbook(users: Users) -> dict[str, tuple[Callable[[str, Any], Any], list[Any]]]:
    from growthbook import GrowthBook

    def c_feature(key: str) -> dict[str, Any]:
        return {
            "defaultValue": "control",
            "rules": [
                {"condition": {"country": {"$in": COUNTRIES}}, "force": C_VALUES["country"]},
                {"condition": {"email": {"$regex": "@example\\.com$"}}, "force": C_VALUES["email"]},
                {"condition": {"plan": "enterprise"}, "force": C_VALUES["plan"]},
                {
                    "key": key,
                    "variations": ["control", "treatment"],
                    "weights": [0.5, 0.5],
                    "hashAttribute": "id",
                    "coverage": 1,
                },
            ],
        }

    features: dict[str, Any] = {
        "a": {"defaultValue": True},
        "b": {
            "defaultValue": False,
            "rules": [{"force": True, "coverage": 0.25, "hashAttribute": "id"}],
        },
        "c": c_feature("c"),
    }
    for key in d_keys():
        features[key] = c_feature(key)
    gb = GrowthBook(features=features)
    contexts = [
        {"id": u["key"], "country": u["country"], "email": u["email"], "plan": u["plan"]}
        for u in users
    ]

    def boolean(key: str, ctx: Any) -> Any:
        gb.set_attributes(ctx)
        return gb.get_feature_value(key, False)

    def string(key: str, ctx: Any) -> Any:
        gb.set_attributes(ctx)
        return gb.get_feature_value(key, "fallback")

    return _by_kind(boolean, string, contexts)


# -- Flagsmith: flagsmith-flag-engine, one feature per evaluation context ----------------


def setup_flagsmith(users: Users) -> dict[str, tuple[Callable[[str, Any], Any], list[Any]]]:
    from flag_engine.engine import get_evaluation_result

    environment = {"key": "bench-env", "name": "bench"}

    def feature(
        key: str,
        value: Any,
        enabled: bool = True,
        variants: list | None = None,
        priority: float | None = None,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"key": key, "name": key, "enabled": enabled, "value": value}
        if variants:
            out["variants"] = variants
        if priority is not None:
            out["priority"] = priority
        return out

    def segment(key: str, conditions: list[dict[str, Any]], override: dict[str, Any]) -> dict:
        return {
            "key": key,
            "name": key,
            "rules": [{"type": "ALL", "conditions": conditions}],
            "overrides": [override],
        }

    def c_context(key: str) -> dict[str, Any]:
        split = [
            {"value": "control", "weight": 50, "priority": 0},
            {"value": "treatment", "weight": 50, "priority": 1},
        ]
        return {
            "environment": environment,
            "features": {key: feature(key, "control", variants=split)},
            "segments": {
                f"{key}-country": segment(
                    f"{key}-country",
                    [{"property": "country", "operator": "IN", "value": COUNTRIES}],
                    feature(key, C_VALUES["country"], priority=0),
                ),
                f"{key}-email": segment(
                    f"{key}-email",
                    [{"property": "email", "operator": "REGEX", "value": ".*@example\\.com$"}],
                    feature(key, C_VALUES["email"], priority=1),
                ),
                f"{key}-plan": segment(
                    f"{key}-plan",
                    [{"property": "plan", "operator": "EQUAL", "value": "enterprise"}],
                    feature(key, C_VALUES["plan"], priority=2),
                ),
            },
        }

    flag_contexts: dict[str, dict[str, Any]] = {
        "a": {"environment": environment, "features": {"a": feature("a", None)}},
        "b": {
            "environment": environment,
            "features": {"b": feature("b", None, enabled=False)},
            "segments": {
                "b-25": segment(
                    "b-25",
                    [{"property": "", "operator": "PERCENTAGE_SPLIT", "value": "25"}],
                    feature("b", None, enabled=True, priority=0),
                )
            },
        },
        "c": c_context("c"),
    }
    for key in d_keys():
        flag_contexts[key] = c_context(key)
    identities = [
        {
            "identifier": u["key"],
            "key": u["key"],
            "traits": {"country": u["country"], "email": u["email"], "plan": u["plan"]},
        }
        for u in users
    ]

    def enabled(key: str, identity: Any) -> Any:
        result = get_evaluation_result({**flag_contexts[key], "identity": identity})
        return result["flags"][key]["enabled"]

    def value(key: str, identity: Any) -> Any:
        result = get_evaluation_result({**flag_contexts[key], "identity": identity})
        return result["flags"][key]["value"]

    return _by_kind(enabled, value, identities)


SYSTEMS: list[tuple[str, Setup]] = [
    ("unveil", setup_unveil),
    ("LaunchDarkly", setup_launchdarkly),
    ("Unleash", setup_unleash),
    ("GrowthBook", setup_growthbook),
    ("Flagsmith", setup_flagsmith),
    ("hand-written", setup_floor),
]
PEERS = {"LaunchDarkly", "Unleash", "GrowthBook", "Flagsmith"}


def main() -> None:
    logging.disable(logging.WARNING)  # peers warn that they are offline: we know
    users = make_users()
    results: dict[str, dict[str, Measured]] = {}
    print(
        f"{platform.python_implementation()} {platform.python_version()}, one thread, "
        f"{len(users):,} users round-robin, evals/s best of 3"
    )
    for name, setup in SYSTEMS:
        try:
            prepared = setup(users)
        except ImportError as exc:
            print(f"  {name}: not installed ({exc.name}); run `make bench`")
            continue
        results[name] = {}
        for workload in "ABCD":
            evaluate, contexts = prepared[workload]
            results[name][workload] = measure(workload, evaluate, contexts, users)
        row = "  ".join(
            f"{w} {format_rate(m.evals_per_second):>10}" for w, m in results[name].items()
        )
        print(f"  {name:<13} {row}", flush=True)
        for m in results[name].values():
            for problem in m.problems:
                print(f"    wrong answers, not ranked: {problem}")

    print()
    print("| workload | " + " | ".join(results) + " | unveil / fastest peer | unveil / floor |")
    print("|---" * (len(results) + 3) + "|")
    for workload in "ABCD":
        cells = []
        for name in results:
            m = results[name][workload]
            cells.append(format_rate(m.evals_per_second) + ("" if not m.problems else " (wrong)"))
        peer_rates = [
            results[n][workload].evals_per_second
            for n in results
            if n in PEERS and not results[n][workload].problems
        ]
        ours = results.get("unveil", {}).get(workload)
        floor = results.get("hand-written", {}).get(workload)
        ratio = f"{ours.evals_per_second / max(peer_rates):.1f}x" if ours and peer_rates else "-"
        to_floor = (
            f"{ours.evals_per_second / floor.evals_per_second:.2f}" if ours and floor else "-"
        )
        print(f"| {workload} | " + " | ".join(cells) + f" | {ratio} | {to_floor} |")


if __name__ == "__main__":
    main()
