"""Hypothesis strategies: valid flags documents and contexts of any shape."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

ATTRS = ["key", "country", "plan", "email", "age", "version", "when", "tags", "org"]
KEYS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-@.", min_size=0, max_size=12)

NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-@.", min_size=1, max_size=12)

SCALARS = st.one_of(
    KEYS, st.integers(-1000, 1000), st.floats(-1e6, 1e6, allow_nan=False), st.booleans()
)

# values a context may hold: anything, including what no flag expects
ANY_VALUE = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        KEYS,
        st.sampled_from(
            [
                "NL",
                "DE",
                "1.2.3",
                "2.0.0-rc.1",
                "2026-01-01T00:00:00Z",
                "x@example.com",
                "enterprise",
                "12.5",
                "10.1.2.3",
                "2001:db8::1",
            ]
        ),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
CONTEXTS = st.dictionaries(st.sampled_from(ATTRS), ANY_VALUE, max_size=6)
ANY_CONTEXT = st.one_of(CONTEXTS, st.none(), ANY_VALUE, st.just(object()))


def _values_for(op: str) -> st.SearchStrategy[list[Any]]:
    if op == "eq":
        return st.lists(SCALARS, min_size=1, max_size=1)
    if op in ("in", "contains"):
        return st.lists(SCALARS, max_size=4)
    if op in ("starts_with", "ends_with"):
        return st.lists(KEYS, max_size=3)
    if op == "matches":
        return st.lists(st.sampled_from(["^a", "b$", r"\d+", "x|y", "(ab)+", ".*"]), max_size=2)
    if op == "in_cidr":
        return st.lists(st.sampled_from(["10.0.0.0/8", "10.1.2.3", "2001:db8::/32"]), max_size=2)
    if op in ("lt", "lte", "gt", "gte", "number_eq"):
        return st.lists(
            st.integers(-100, 100) | st.floats(-100, 100, allow_nan=False), min_size=1, max_size=1
        )
    if op.startswith("semver"):
        return st.lists(
            st.sampled_from(["1.0.0", "1.2.3", "2.0.0-rc.1", "0.9"]), min_size=1, max_size=1
        )
    if op in ("before", "after"):
        return st.lists(
            st.sampled_from(["2026-01-01T00:00:00Z", 1_700_000_000, 0]), min_size=1, max_size=1
        )
    return st.just([])


OPS = [
    "eq",
    "in",
    "starts_with",
    "ends_with",
    "contains",
    "matches",
    "lt",
    "lte",
    "gt",
    "gte",
    "number_eq",
    "semver_eq",
    "semver_lt",
    "semver_gt",
    "semver_lte",
    "semver_gte",
    "in_cidr",
    "before",
    "after",
    "exists",
]


TEXT_OPS = {"eq", "in", "starts_with", "ends_with", "contains", "matches"}


@st.composite
def clauses(draw: st.DrawFn, segments: list[str], samples: bool = False) -> dict[str, Any]:
    choice = draw(st.integers(0, 5))
    if segments and choice == 0:
        clause: dict[str, Any] = {"segment": draw(st.sampled_from(segments))}
    elif samples and choice == 1:
        clause = {"sample": draw(st.integers(0, 100_000)) / 1000}
        if draw(st.booleans()):
            clause["by"] = draw(st.sampled_from(["key", "org"]))
        if draw(st.booleans()):
            clause["salt"] = draw(KEYS)
    else:
        op = draw(st.sampled_from(OPS))
        clause = {"attr": draw(st.sampled_from(ATTRS)), "op": op}
        values = draw(_values_for(op))
        if op != "exists" or draw(st.booleans()):
            clause["values"] = values
        if op in TEXT_OPS and draw(st.booleans()):
            clause["ignore_case"] = True
    if draw(st.booleans()):
        clause["not"] = draw(st.booleans())
    return clause


@st.composite
def weights(draw: st.DrawFn, variants: list[str]) -> dict[str, float | int]:
    """Percentages with up to three decimals that add up to exactly 100."""
    chosen = draw(st.lists(st.sampled_from(variants), min_size=1, unique=True))
    cuts = sorted(
        draw(st.lists(st.integers(0, 100_000), min_size=len(chosen) - 1, max_size=len(chosen) - 1))
    )
    bounds = [0, *cuts, 100_000]
    out: dict[str, float | int] = {}
    for name, lo, hi in zip(chosen, bounds, bounds[1:], strict=False):
        w = hi - lo
        out[name] = w // 1000 if w % 1000 == 0 else w / 1000
    return out


@st.composite
def serves(draw: st.DrawFn, variants: list[str]) -> Any:
    if draw(st.booleans()):
        return draw(st.sampled_from(variants))
    serve: dict[str, Any]
    if draw(st.booleans()):
        serve = {"rollout": draw(weights(variants))}
    else:
        chosen = draw(st.lists(st.sampled_from(variants), min_size=1, unique=True))
        serve = {"weights": {v: draw(st.integers(0, 50)) for v in chosen}}
        if sum(serve["weights"].values()) == 0:
            serve["weights"][chosen[0]] = 1
    if draw(st.booleans()):
        serve["by"] = draw(st.sampled_from(["key", "org"]))
    if draw(st.booleans()):
        serve["salt"] = draw(KEYS)
    return serve


KIND_VALUES = {
    "boolean": st.booleans(),
    "string": KEYS,
    "number": st.integers(-5, 5) | st.floats(-5, 5, allow_nan=False),
    "json": st.recursive(
        st.none() | st.booleans() | st.integers(-5, 5) | KEYS,
        lambda inner: (
            st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=3), inner, max_size=2)
        ),
        max_leaves=4,
    ),
}


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    segment_names = draw(st.lists(st.sampled_from(["s1", "s2", "s3"]), unique=True, max_size=3))
    segments: dict[str, Any] = {}
    for i, name in enumerate(segment_names):
        earlier = segment_names[:i]  # segments may refer only to earlier ones: no cycles
        body: dict[str, Any] = {}
        if draw(st.booleans()):
            body["include"] = draw(st.lists(NAMES, max_size=3))
        if draw(st.booleans()):
            body["exclude"] = draw(st.lists(NAMES, max_size=2))
        if draw(st.booleans()):
            body["rules"] = [
                {"when": draw(st.lists(clauses(earlier), min_size=1, max_size=2))}
                for _ in range(draw(st.integers(1, 2)))
            ]
        segments[name] = body
    flags: dict[str, Any] = {}
    for index in range(draw(st.integers(1, 4))):
        key = f"flag-{index}"
        kind = draw(st.sampled_from(list(KIND_VALUES)))
        names = draw(
            st.lists(
                st.sampled_from(["on", "off", "a", "b", "c"]), min_size=1, max_size=4, unique=True
            )
        )
        flag: dict[str, Any] = {"kind": kind}
        flag["variants"] = {n: draw(KIND_VALUES[kind]) for n in names}
        flag["off_variant"] = draw(st.sampled_from(names))
        flag["enabled"] = draw(st.booleans())
        if draw(st.booleans()):
            targeted = draw(st.lists(NAMES, unique=True, max_size=4))
            targets: dict[str, list[str]] = {}
            for k in targeted:
                targets.setdefault(draw(st.sampled_from(names)), []).append(k)
            flag["targets"] = targets
        earlier = list(flags)
        if earlier and draw(st.booleans()):
            pre = draw(st.sampled_from(earlier))
            flag["prerequisites"] = [
                {
                    "flag": pre,
                    "variants": draw(
                        st.lists(
                            st.sampled_from(list(flags[pre]["variants"])), min_size=1, unique=True
                        )
                    ),
                }
            ]
        flag["rules"] = [
            {
                "when": draw(st.lists(clauses(segment_names, True), min_size=1, max_size=3)),
                "serve": draw(serves(names)),
            }
            for _ in range(draw(st.integers(0, 3)))
        ]
        flag["default"] = draw(serves(names))
        if draw(st.booleans()):
            flag["salt"] = draw(KEYS)
        if draw(st.booleans()):
            flag["bucketing"] = draw(st.sampled_from(["murmur3", "unleash"]))
        flags[key] = flag
    return {"version": 1, "segments": segments, "flags": flags}
