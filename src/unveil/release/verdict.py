"""What the state machine needs to hear from the judge, and no more.

The judge (``unveil.release.judge``) compares treatment with control over
all of a plan's guards; the machine only needs its one answer for the
current step and how many treatment exposures the step has had. Keeping
this value small lets the two be built and tested apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["Observation", "Verdict", "VerdictKind"]


class VerdictKind(StrEnum):
    """The judge's answer over all the guards of a plan."""

    CONTINUE = "continue"  # no regression found yet, and no clear health either: keep watching
    PASS = "pass"  # noqa: S105 (not a password) the treatment is shown to be no worse than the margins allow
    FAIL = "fail"  # a regression: at least one guard is worse beyond its margin
    NO_DATA = "no_data"  # too little data to judge at all (never a reason to fail)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The judge's answer, with its explanation (plain, JSON-friendly data).

    The explanation is recorded with the decision it led to, as it is: the
    machine reads nothing in it but its ``summary`` (the judge's one
    sentence), which a regression's decision text ends with.
    """

    kind: VerdictKind
    explanation: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Observation:
    """One look at the current step: the verdict and the step's treatment exposures."""

    verdict: Verdict
    treatment_exposures: int = 0
