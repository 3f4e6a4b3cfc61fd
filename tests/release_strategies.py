"""Hypothesis strategies for release plans, shared by the plan and machine tests."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import strategies as st

from unveil.release.plan import (
    FULL_SHARE,
    Direction,
    Guard,
    GuardKind,
    OnInsufficientData,
    OnRegression,
    Options,
    Plan,
    Source,
    Step,
)
from unveil.release.window import parse_window

WINDOW_TEXTS = [
    "Mon-Fri 09:00-16:00 Europe/Amsterdam",
    "Mon-Thu 09:00-16:00; Fri 09:00-12:00 America/New_York",
    "daily 00:00-12:00 UTC",
]

HOLDS = st.integers(0, 6 * 3600).map(lambda s: timedelta(seconds=s))


@st.composite
def steps(draw: st.DrawFn) -> tuple[Step, ...]:
    shares = draw(st.sets(st.integers(1, FULL_SHARE - 1), max_size=5))
    holds = draw(st.lists(HOLDS, min_size=len(shares), max_size=len(shares)))
    ramp = [Step(s, h) for s, h in zip(sorted(shares), holds, strict=True)]
    return (*ramp, Step(FULL_SHARE))


GUARDS = st.builds(
    Guard,
    name=st.sampled_from(["errors", "latency", "checkout-rate"]),
    kind=st.sampled_from(GuardKind),
    metric=st.sampled_from(["errors", "latency_ms", "orders"]),
    direction=st.sampled_from(Direction),
    margin=st.sampled_from([0.0, 0.05, 0.1, 0.5]),
    source=st.just(Source.SDK),
    query=st.none(),
) | st.builds(
    Guard,
    name=st.just("p99"),
    kind=st.just(GuardKind.CONTINUOUS),
    metric=st.just("latency"),
    direction=st.just(Direction.HIGHER_IS_WORSE),
    margin=st.just(0.2),
    source=st.just(Source.PROMETHEUS),
    query=st.just('histogram_quantile(0.99, rate(req_seconds_bucket{variant="{variant}"}[1m]))'),
)

OPTIONS = st.builds(
    Options,
    window=st.none() | st.sampled_from(WINDOW_TEXTS).map(parse_window),
    min_exposures=st.sampled_from([0, 1, 100, 1000]),
    insufficient_data=st.sampled_from(OnInsufficientData),
    verification=st.sampled_from([timedelta(0), timedelta(minutes=30), timedelta(hours=1)]),
    on_regression=st.sampled_from(OnRegression),
    require_approval=st.booleans(),
)

PLANS = st.builds(
    Plan,
    flag=st.sampled_from(["new-checkout", "search-v2"]),
    environment=st.sampled_from(["production", "staging"]),
    control=st.just("off"),
    treatment=st.just("on"),
    steps=steps(),
    guards=st.lists(GUARDS, max_size=3, unique_by=lambda g: g.name).map(tuple),
    options=OPTIONS,
)
