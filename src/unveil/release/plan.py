"""A release plan: how one flag goes from its control to its treatment variant.

A plan names the flag, the environment and the two variants, the steps
(the treatment's share in percent, with up to three decimals, and how long
to hold each), the guards the judge watches, and the options: when the
release may advance, how much data a step needs, what happens when there
is too little, how long it is still watched at 100%, and what a regression
does. See docs/release-plans.md for every field.

``parse_plan`` reads plain data (a mapping from YAML or JSON, the flags-file
style) and refuses a bad plan whole with ``InvalidPlan``, naming every
problem and its path. ``plan_to_data`` writes it back, so that
``parse_plan(plan_to_data(p)) == p``: the server stores plans that way.
Whether the flag has the variants is known only with the flag, so
``check_against`` (or ``parse_plan(data, variants=...)``) checks that.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any

from unveil.core.errors import Problem
from unveil.release.errors import InvalidPlan, InvalidWindow
from unveil.release.reading import Reader, duration_text, join, type_name
from unveil.release.window import Window, parse_window

__all__ = [
    "CONTINUOUS_MARGIN",
    "FULL_SHARE",
    "VARIANT_PLACEHOLDER",
    "DEFAULT_MIN_RUNS",
    "Direction",
    "ExperimentGuard",
    "Guard",
    "GuardKind",
    "OnInsufficientData",
    "OnRegression",
    "Options",
    "Plan",
    "Source",
    "Step",
    "check_against",
    "parse_plan",
    "percent",
    "plan_to_data",
]

#: a share is counted in thousandths of a percent, as the core counts rollout weights
FULL_SHARE = 100_000
#: the text a Prometheus guard's query holds where the variant's name goes
VARIANT_PLACEHOLDER = "{variant}"
#: a continuous guard's margin when the plan gives none, the judge's recommended one:
#: healthy instances of one service differ by a few percent in latency, which must not
#: count as a regression (docs/releases.md; the benchmark measured it, performance.md)
CONTINUOUS_MARGIN = 0.05
#: the compared runs an experiment guard needs before it may stop a release, by default
DEFAULT_MIN_RUNS = 100
MAX_RUNS = 10**12
MAX_STEPS = 100
MAX_GUARDS = 50
MAX_EXPOSURES = 10**12
_MAX_QUERY = 4000


class GuardKind(StrEnum):
    """What a guard compares between the arms."""

    RATE = "rate"  # a count per exposure: errors per request
    CONTINUOUS = "continuous"  # a distribution of values: latency


class Source(StrEnum):
    """Where a guard's numbers come from."""

    SDK = "sdk"  # the metrics the SDK reports, aggregated by the server
    PROMETHEUS = "prometheus"  # a Prometheus query per variant


class Direction(StrEnum):
    """Which way a guard's metric goes when the treatment hurts."""

    HIGHER_IS_WORSE = "higher_is_worse"
    LOWER_IS_WORSE = "lower_is_worse"


class OnRegression(StrEnum):
    """What the release does when the judge finds a regression."""

    ROLLBACK = "rollback"  # serve control to everyone at once
    HOLD = "hold"  # stay at the current share, pause and alert (changes that cannot be undone)


class OnInsufficientData(StrEnum):
    """What a step whose hold is over does while it has too little data. Never fail."""

    WAIT = "wait"  # keep holding until there is enough
    ADVANCE = "advance"  # go on by time alone (for flags with little traffic)


def percent(share: int) -> int | float:
    """A share in thousandths of a percent as the percent people write (1, 2.5)."""
    whole, part = divmod(share, 1000)
    return whole if part == 0 else share / 1000


@dataclass(frozen=True, slots=True)
class Step:
    """Serve the treatment to ``share`` thousandths of a percent, then hold."""

    share: int
    hold: timedelta = timedelta(0)

    @property
    def percent(self) -> int | float:
        return percent(self.share)


@dataclass(frozen=True, slots=True)
class Guard:
    """One health metric the judge compares between treatment and control.

    ``margin`` is the relative worsening allowed before it counts as a
    regression: 0.05 lets the treatment be up to 5% worse than control.
    """

    name: str
    kind: GuardKind
    metric: str
    direction: Direction = Direction.HIGHER_IS_WORSE
    margin: float = 0.0
    source: Source = Source.SDK
    query: str | None = None

    def query_for(self, variant: str) -> str:
        """The Prometheus query for one variant (its other braces are PromQL's)."""
        if self.query is None:
            raise ValueError(f"guard {self.name!r} reads the SDK's metrics, it has no query")
        return self.query.replace(VARIANT_PLACEHOLDER, variant)


@dataclass(frozen=True, slots=True)
class ExperimentGuard:
    """A dark-launch experiment whose mismatch rate must stay at most ``max_mismatch_rate``.

    Judged on the experiment's runs since the release started (the experiment
    is named by its own flag; it need not be the released one): a regression
    once the rate is shown to be above the maximum at every look at once
    (release/experiment.py ``exceeds``), and never before ``min_runs``
    compared runs (matches + mismatches).
    """

    name: str
    experiment: str
    max_mismatch_rate: float
    min_runs: int = DEFAULT_MIN_RUNS


@dataclass(frozen=True, slots=True)
class Options:
    """How the release moves between steps; every field has a safe default."""

    window: Window | None = None
    min_exposures: int = 0
    insufficient_data: OnInsufficientData = OnInsufficientData.WAIT
    verification: timedelta = timedelta(hours=1)
    on_regression: OnRegression = OnRegression.ROLLBACK
    require_approval: bool = False
    #: a service whose latest deploy here must have passed verification before the first step
    requires_verified_deploy: str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """A whole release plan; the last step is always 100%."""

    flag: str
    environment: str
    control: str
    treatment: str
    steps: tuple[Step, ...]
    guards: tuple[Guard, ...] = ()
    options: Options = field(default_factory=Options)
    experiments: tuple[ExperimentGuard, ...] = ()


# -- reading -------------------------------------------------------------------

_PLAN_FIELDS = frozenset(
    {"flag", "environment", "control", "treatment", "steps", "guards", "options"}
)
_STEP_FIELDS = frozenset({"percent", "hold"})
_GUARD_FIELDS = frozenset({"name", "kind", "metric", "source", "query", "direction", "margin"})
_EXPERIMENT_FIELDS = frozenset({"name", "experiment", "max_mismatch_rate", "min_runs"})
_OPTION_FIELDS = frozenset(
    {
        "window",
        "min_exposures",
        "insufficient_data",
        "verification",
        "on_regression",
        "require_approval",
        "requires_verified_deploy",
    }
)


def _values(enum: type[StrEnum]) -> tuple[str, ...]:
    return tuple(member.value for member in enum)


def _read_steps(r: Reader, raw: object, path: str) -> tuple[Step, ...]:
    items = r.sequence(raw, path)
    if isinstance(raw, list | tuple) and not items:
        r.fail(path, "a plan needs at least one step (the last one is 100)")
    if len(items) > MAX_STEPS:
        r.fail(path, f"at most {MAX_STEPS} steps, not {len(items)}")
        return ()
    steps: list[Step | None] = []
    last = len(items) - 1
    for i, item in enumerate(items):
        here = f"{path}[{i}]"
        body = r.mapping(item, here, _STEP_FIELDS)
        if not body:
            if isinstance(item, Mapping):
                r.require(body, "percent", here)
            steps.append(None)
            continue
        share = None
        if r.require(body, "percent", here):
            share = r.share(body["percent"], join(here, "percent"), zero=False)
        hold: timedelta | None = timedelta(0)
        if i == last:
            if "hold" in body:
                hold = r.duration(body["hold"], join(here, "hold"))
                if hold:
                    r.fail(
                        join(here, "hold"),
                        "the last step (100%) holds no time: "
                        "options.verification says how long it is still watched",
                    )
            if share is not None and share != FULL_SHARE:
                r.fail(join(here, "percent"), f"the last step must be 100, not {percent(share)}")
        elif r.require(body, "hold", here):
            hold = r.duration(body["hold"], join(here, "hold"))
        steps.append(Step(share, hold or timedelta(0)) if share is not None else None)
    highest: Step | None = None
    for i, step in enumerate(steps):
        if step is None:
            continue
        if highest is not None and step.share <= highest.share:
            r.fail(
                f"{path}[{i}].percent",
                f"{step.percent} is not more than {highest.percent}, an earlier step: "
                "steps must increase",
            )
        else:
            highest = step
    return tuple(s for s in steps if s is not None)


def _read_margin(r: Reader, raw: object, path: str) -> float | None:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 <= raw < 1:
        r.fail(
            path,
            f"a margin is a fraction from 0 up to (not including) 1, like 0.05 for 5%, not {raw!r}",
        )
        return None
    return float(raw)


def _read_guard(
    r: Reader, raw: object, path: str, sources: Collection[Source] | None = None
) -> Guard | None:
    body = r.mapping(raw, path, _GUARD_FIELDS)
    if not isinstance(raw, Mapping):
        return None
    before = len(r.problems)
    name = kind = metric = None
    if r.require(body, "name", path):
        name = r.key(body["name"], join(path, "name"), "a guard's name")
    if r.require(body, "kind", path):
        kind = r.choice(body["kind"], join(path, "kind"), "guard kind", _values(GuardKind))
    if r.require(body, "metric", path):
        metric = r.key(body["metric"], join(path, "metric"), "a metric's name")
    source = r.choice(
        body.get("source", Source.SDK.value), join(path, "source"), "metric source", _values(Source)
    )
    direction = r.choice(
        body.get("direction", Direction.HIGHER_IS_WORSE.value),
        join(path, "direction"),
        "direction",
        _values(Direction),
    )
    default_margin = CONTINUOUS_MARGIN if kind == GuardKind.CONTINUOUS.value else 0.0
    margin = _read_margin(r, body.get("margin", default_margin), join(path, "margin"))
    if source is not None and sources is not None and source not in sources:
        r.fail(join(path, "source"), f"this server has no {source} metrics source")
    query: str | None = None
    if source == Source.PROMETHEUS:
        if r.require(body, "query", path):
            query = r.text(body["query"], join(path, "query"), _MAX_QUERY)
            if query is not None and VARIANT_PLACEHOLDER not in query:
                r.fail(
                    join(path, "query"),
                    f"must hold {VARIANT_PLACEHOLDER} where the variant's name goes",
                )
    elif "query" in body and source is not None:
        r.fail(join(path, "query"), "only a guard whose source is prometheus has a query")
    if len(r.problems) > before or None in (name, kind, metric, source, direction, margin):
        return None
    assert name is not None and kind is not None and metric is not None  # noqa: PT018
    assert source is not None and direction is not None and margin is not None  # noqa: PT018
    return Guard(name, GuardKind(kind), metric, Direction(direction), margin, Source(source), query)


def _read_experiment_guard(r: Reader, body: Mapping[str, Any], path: str) -> ExperimentGuard | None:
    """A guard on an experiment's mismatch rate: ``{experiment, max_mismatch_rate}``."""
    r.mapping(body, path, _EXPERIMENT_FIELDS)
    before = len(r.problems)
    experiment = r.key(body["experiment"], join(path, "experiment"), "an experiment's name")
    name = (
        r.key(body["name"], join(path, "name"), "a guard's name") if "name" in body else experiment
    )
    rate: float | None = None
    if r.require(body, "max_mismatch_rate", path):
        raw = body["max_mismatch_rate"]
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 < raw < 1:
            r.fail(
                join(path, "max_mismatch_rate"),
                f"a mismatch rate is a fraction above 0 and below 1, like 0.01 for 1%, not {raw!r}",
            )
        else:
            rate = float(raw)
    min_runs = r.whole(body.get("min_runs", DEFAULT_MIN_RUNS), join(path, "min_runs"), 1, MAX_RUNS)
    if len(r.problems) > before or None in (name, experiment, rate, min_runs):
        return None
    assert name is not None and experiment is not None  # noqa: PT018
    assert rate is not None and min_runs is not None  # noqa: PT018
    return ExperimentGuard(name, experiment, rate, min_runs)


def _read_guards(
    r: Reader, raw: object, path: str, sources: Collection[Source] | None = None
) -> tuple[tuple[Guard, ...], tuple[ExperimentGuard, ...]]:
    """The metric guards and the experiment guards (those naming an ``experiment``)."""
    items = r.sequence(raw, path)
    if len(items) > MAX_GUARDS:
        r.fail(path, f"at most {MAX_GUARDS} guards, not {len(items)}")
        return (), ()
    guards: list[Guard] = []
    experiments: list[ExperimentGuard] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        here = f"{path}[{i}]"
        guard: Guard | ExperimentGuard | None
        if isinstance(item, Mapping) and "experiment" in item:
            guard = _read_experiment_guard(r, item, here)
        else:
            guard = _read_guard(r, item, here, sources)
        if guard is None:
            continue
        if guard.name in seen:
            r.fail(
                join(here, "name"), f"{guard.name!r} is the name of {path}[{seen[guard.name]}] too"
            )
            continue
        seen[guard.name] = i
        if isinstance(guard, ExperimentGuard):
            experiments.append(guard)
        else:
            guards.append(guard)
    return tuple(guards), tuple(experiments)


def _read_options(r: Reader, raw: object, path: str) -> Options:
    body = r.mapping(raw, path, _OPTION_FIELDS)
    defaults = Options()
    window: Window | None = None
    if body.get("window") is not None:
        text = body["window"]
        if not isinstance(text, str):
            r.fail(join(path, "window"), f"must be text, not {type_name(text)}")
        else:
            try:
                window = parse_window(text)
            except InvalidWindow as e:
                r.fail(join(path, "window"), e.reason)
    min_exposures = r.whole(
        body.get("min_exposures", 0), join(path, "min_exposures"), 0, MAX_EXPOSURES
    )
    low_data = r.choice(
        body.get("insufficient_data", defaults.insufficient_data.value),
        join(path, "insufficient_data"),
        "choice",
        _values(OnInsufficientData),
    )
    verification = (
        r.duration(body["verification"], join(path, "verification"))
        if "verification" in body
        else defaults.verification
    )
    on_regression = r.choice(
        body.get("on_regression", defaults.on_regression.value),
        join(path, "on_regression"),
        "choice",
        _values(OnRegression),
    )
    approval = r.boolean(body.get("require_approval", False), join(path, "require_approval"))
    service = None
    if body.get("requires_verified_deploy") is not None:
        service = r.key(
            body["requires_verified_deploy"],
            join(path, "requires_verified_deploy"),
            "the service's name",
        )
    return Options(
        window,
        min_exposures or 0,
        OnInsufficientData(low_data or defaults.insufficient_data),
        verification if verification is not None else defaults.verification,
        OnRegression(on_regression or defaults.on_regression),
        bool(approval),
        service,
    )


def _variant_problems(
    control: str | None, treatment: str | None, variants: Collection[str]
) -> list[Problem]:
    known = ", ".join(sorted(variants)) or "none"
    return [
        Problem(where, f"the flag has no variant {name!r} (it has: {known})")
        for where, name in (("control", control), ("treatment", treatment))
        if name is not None and name not in variants
    ]


def parse_plan(
    data: object,
    variants: Collection[str] | None = None,
    sources: Collection[Source] | None = None,
) -> Plan:
    """Read a plan from plain data; refuse it whole, naming every problem.

    With ``variants`` (the flag's variant names) it also checks that the
    flag has the control and the treatment, and with ``sources`` (the metric
    sources the server has) that every guard's source is one of them, so
    that all the problems of a plan are named in one answer.
    """
    r = Reader()
    if not isinstance(data, Mapping):
        raise InvalidPlan([Problem("", f"a plan must be a mapping, not {type_name(data)}")])
    body = r.mapping(data, "", _PLAN_FIELDS)
    names: dict[str, str | None] = {}
    for key in ("flag", "environment", "control", "treatment"):
        what = "a variant's name" if key in {"control", "treatment"} else f"the {key}'s key"
        names[key] = r.key(body[key], key, what) if r.require(body, key, "") else None
    if names["control"] is not None and names["control"] == names["treatment"]:
        r.fail("treatment", f"must differ from control (both are {names['control']!r})")
    steps = _read_steps(r, body["steps"], "steps") if r.require(body, "steps", "") else ()
    guards, experiments = _read_guards(r, body.get("guards", []), "guards", sources)
    options = _read_options(r, body.get("options", {}), "options")
    if variants is not None:
        r.problems.extend(_variant_problems(names["control"], names["treatment"], variants))
    if r.problems:
        raise InvalidPlan(r.problems)
    # no problems: every name was read
    flag, environment, control, treatment = (str(names[k]) for k in names)
    return Plan(flag, environment, control, treatment, steps, guards, options, experiments)


def check_against(plan: Plan, variants: Collection[str]) -> None:
    """Refuse the plan (``InvalidPlan``) if the flag lacks its control or treatment."""
    problems = _variant_problems(plan.control, plan.treatment, variants)
    if problems:
        raise InvalidPlan(problems)


# -- writing -------------------------------------------------------------------


def _guard_to_data(guard: Guard) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": guard.name,
        "kind": guard.kind.value,
        "metric": guard.metric,
        "source": guard.source.value,
    }
    if guard.query is not None:
        data["query"] = guard.query
    data["direction"] = guard.direction.value
    data["margin"] = guard.margin
    return data


def plan_to_data(plan: Plan) -> dict[str, Any]:
    """The plan as plain data, every field written out; ``parse_plan`` reads it back."""
    steps: list[dict[str, Any]] = []
    for i, step in enumerate(plan.steps):
        item: dict[str, Any] = {"percent": step.percent}
        if i < len(plan.steps) - 1:
            item["hold"] = duration_text(step.hold)
        steps.append(item)
    options = plan.options
    written: dict[str, Any] = {}
    if options.window is not None:
        written["window"] = str(options.window)
    written |= {
        "min_exposures": options.min_exposures,
        "insufficient_data": options.insufficient_data.value,
        "verification": duration_text(options.verification),
        "on_regression": options.on_regression.value,
        "require_approval": options.require_approval,
    }
    if options.requires_verified_deploy is not None:
        written["requires_verified_deploy"] = options.requires_verified_deploy
    return {
        "flag": plan.flag,
        "environment": plan.environment,
        "control": plan.control,
        "treatment": plan.treatment,
        "steps": steps,
        "guards": [
            *(_guard_to_data(g) for g in plan.guards),
            *(
                {
                    "name": g.name,
                    "experiment": g.experiment,
                    "max_mismatch_rate": g.max_mismatch_rate,
                    "min_runs": g.min_runs,
                }
                for g in plan.experiments
            ),
        ],
        "options": written,
    }
