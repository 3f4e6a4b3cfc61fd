"""Release templates: a plan's how (steps, holds, guards, window) without its what (the flag).

A team saves how carefully things go out once, under a name, and every
release or launch that names the template gets those steps and guards. A
template is read exactly as a plan is (``parse_plan``), with the flag and
the environment left to the moment it is used; ``control`` and
``treatment`` may be given (they default to ``off`` and ``on``, a boolean
flag's variants) or left to the use too. Pure: data in, data out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from unveil.core.errors import Problem
from unveil.release.errors import InvalidPlan
from unveil.release.plan import parse_plan, plan_to_data

__all__ = ["DEFAULT_CONTROL", "DEFAULT_TREATMENT", "check_template", "plan_from_template"]

DEFAULT_CONTROL = "off"
DEFAULT_TREATMENT = "on"
#: what a template leaves out: the use names them
_CHOSEN_AT_USE = ("flag", "environment")
#: stand-ins while a template is read as a plan (names no real flag can clash with)
_STAND_IN = "template"


def check_template(data: object) -> dict[str, Any]:
    """The template written out in full, or ``InvalidPlan`` naming every problem."""
    if not isinstance(data, Mapping):
        kind = type(data).__name__
        raise InvalidPlan([Problem("", f"a template must be a mapping of plan fields, not {kind}")])
    problems = [
        Problem(name, f"is chosen when the template is used (leave {name} out of a template)")
        for name in _CHOSEN_AT_USE
        if name in data
    ]
    body = {k: v for k, v in data.items() if k not in _CHOSEN_AT_USE}
    as_plan = {
        "control": DEFAULT_CONTROL,
        "treatment": DEFAULT_TREATMENT,
        **body,
        "flag": _STAND_IN,
        "environment": _STAND_IN,
    }
    try:
        plan = parse_plan(as_plan)
    except InvalidPlan as exc:
        problems += list(exc.problems)
    if problems:
        raise InvalidPlan(problems)
    written = plan_to_data(plan)
    for name in _CHOSEN_AT_USE:
        del written[name]
    for name in ("control", "treatment"):
        if name not in data:
            del written[name]
    return written


def plan_from_template(
    template: Mapping[str, Any],
    flag: str,
    environment: str,
    control: str | None = None,
    treatment: str | None = None,
) -> dict[str, Any]:
    """The plan a template makes for one flag in one environment (checked when started)."""
    return {
        **template,
        "flag": flag,
        "environment": environment,
        "control": control or template.get("control", DEFAULT_CONTROL),
        "treatment": treatment or template.get("treatment", DEFAULT_TREATMENT),
    }
