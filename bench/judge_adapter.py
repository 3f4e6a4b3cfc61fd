"""unveil's release judge behind the harness-neutral interface of judge.md.

Any harness can measure the judge that production runs: ``make(...)`` gives
an object with ``observe``, ``decision``, ``set_share`` and ``explain``.
The adapter feeds the judge exactly what the server keeps per 10-second
window: exposures, the count of errors and the latency histogram (the
format of src/unveil/release/histogram.py), never the raw samples.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from unveil.release.histogram import OVERFLOW, Histogram, HistogramError, bucket_lower
from unveil.release.judge import (
    ArmBatch,
    Batch,
    ContinuousGuard,
    Decision,
    JudgeConfig,
    RateGuard,
    explain,
    observe,
    start,
)

GUARDS = (RateGuard("errors", "errors"), ContinuousGuard("latency", "latency_ms"))
# The format's bucket edges: a value v is in bucket searchsorted(_EDGES, v, "right"),
# the same comparisons as histogram.bucket_of (bisect_right on the same table).
_EDGES = np.array([bucket_lower(i) for i in range(1, OVERFLOW + 1)])


def histogram_of(values: np.ndarray) -> Histogram:
    """Histogram.of for a numpy array, in one pass of numpy (same buckets, same count)."""
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise HistogramError("value: not every value is a finite number")
    counts = np.bincount(np.searchsorted(_EDGES, values, side="right"), minlength=OVERFLOW + 1)
    (present,) = np.nonzero(counts)
    buckets = tuple((int(i), int(counts[i])) for i in present)
    return Histogram(len(values), float(values.sum()), buckets)


class UnveilJudge:
    """One judged comparison; batches arrive control first, then treatment, per tick."""

    def __init__(self, config: JudgeConfig) -> None:
        self._state = start(config)
        self._control: tuple[float, ArmBatch] | None = None

    @staticmethod
    def _aggregate(errors: int, requests: int, latencies_ms: Any) -> ArmBatch:
        # What the server keeps for the window: counts and the fixed histogram.
        histogram = histogram_of(latencies_ms)
        return ArmBatch(int(requests), {"errors": int(errors)}, {"latency_ms": histogram})

    def observe(
        self, arm: str, errors: int, requests: int, latencies_ms: Any, t_seconds: float
    ) -> None:
        """One arm's 10-second batch; the tick is judged once both arms are in."""
        batch = self._aggregate(errors, requests, latencies_ms)
        if arm == "control":
            self._control = (t_seconds, batch)
            return
        if arm != "treatment":
            raise ValueError(f"arm: {arm!r} is neither 'treatment' nor 'control'")
        control = self._control[1] if self._control else ArmBatch(0)
        self._control = None
        self._state = observe(self._state, Batch(float(t_seconds), batch, control))

    def decision(self) -> str:
        """ "continue", "fail" or "pass" (the last two final)."""
        return self._state.decision.value

    def set_share(self, share: float, t_seconds: float, hold_s: float) -> None:
        """A new step of the plan. The judge needs no reset: its tests condition on
        each batch's exposures, so a change of share changes nothing in their validity."""

    def explain(self) -> dict[str, object]:
        """The judge's explanation (JSON-ready); "fired" names the rule that failed."""
        return explain(self._state)

    @property
    def failed(self) -> bool:
        return self._state.decision is Decision.FAIL


def make(
    share: float = 0.5,
    horizon_s: float = 1800,
    interval_s: float = 10,
    seed: int = 0,
    mode: str = "canary",
) -> UnveilJudge:
    """The judge with the recommended default configuration.

    canary: PASS at the horizon (no early PASS: the default, so that a
    regression that starts late is still seen); release: the plan's holds
    decide when to advance, so the judge only ever answers "continue" or
    "fail".
    """
    if mode not in ("canary", "release"):
        raise ValueError(f"mode: {mode!r} is neither 'canary' nor 'release'")
    if mode == "release":
        config = JudgeConfig(GUARDS, horizon_s=None, early_pass=False)
    else:
        config = JudgeConfig(GUARDS, horizon_s=horizon_s)
    return UnveilJudge(config)
