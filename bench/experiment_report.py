"""What reading dark-launch experiments costs the server, on SQLite, among other metrics.

    nice -n 10 .venv/bin/python bench/experiment_report.py [FLAGS]

Fills an events file with a day of 10-second windows: FLAGS ordinary flags
(default 20) with exposures and a latency metric per variant, and one
experiment reporting every window (outcomes, two error types, both paths'
durations). Then times the list of experiments (``GET .../experiments``)
and a one-hour and a one-day report (``GET .../experiments/{name}``), best
of five, and prints one line each.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

from unveil.core.logbuckets import bucket_of
from unveil.service.experiments import ExperimentReports
from unveil.store.database import make_engine, upgrade
from unveil.store.events import FINE, EventCounts, Example

DAY = 86400
WINDOWS = DAY // FINE


def fill(counts: EventCounts, flags: int, end: int) -> int:
    """A day of windows ending at ``end``; how many window rows were written."""
    rng = random.Random(1)
    rows = 0
    for w in range(WINDOWS):
        start = end - (WINDOWS - w) * FINE
        cells = []
        buckets = {}
        for f in range(flags):
            for variant in ("on", "off"):
                cells.append(((1, start, f"flag-{f}", variant, "$exposure"), 40, 40.0))
                latency = (1, start, f"flag-{f}", variant, "latency_ms")
                cells.append((latency, 40, 800.0))
                buckets[latency] = {bucket_of(20.0): 30, bucket_of(25.0): 10}
        mismatches = rng.randrange(0, 8)
        name = "search-v2"
        for metric, n in (("match", 200 - mismatches), ("mismatch", mismatches), ("error", 2)):
            cells.append(((1, start, name, "candidate", f"$experiment.{metric}"), n, float(n)))
        cells.append(((1, start, name, "KeyError", "$experiment.error_type"), 2, 2.0))
        for variant, ms in (("control", 20.0), ("candidate", 26.0)):
            cell = (1, start, name, variant, "$experiment.ms")
            cells.append((cell, 202, 202 * ms))
            buckets[cell] = {bucket_of(ms): 150, bucket_of(ms * 1.2): 52}
        counts.add(cells, buckets)
        rows += len(cells)
        if w % 30 == 0:
            counts.add_examples([Example(1, name, float(start), "user-1", "[1]", "[2]")])
    return rows


def best(seconds: list[float]) -> str:
    return f"{min(seconds) * 1000:.1f} ms"


def main() -> None:
    flags = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    folder = Path(tempfile.mkdtemp(prefix="unveil-bench-"))
    url = f"sqlite:///{folder / 'unveil.db'}"
    upgrade(url)
    engine = make_engine(url)
    counts = EventCounts(engine)
    end = int(time.time()) // FINE * FINE
    began = time.perf_counter()
    rows = fill(counts, flags, end)
    print(
        f"filled {rows} window rows ({flags} flags, 1 experiment, a day) in "
        f"{time.perf_counter() - began:.0f} s"
    )
    reports = ExperimentReports(counts, clock=lambda: float(end))
    for label, call in (
        ("list of experiments", lambda: reports.list(1)),
        ("report, last hour", lambda: reports.report(1, "search-v2")),
        ("report, last day", lambda: reports.report(1, "search-v2", str(end - DAY), str(end))),
    ):
        times = []
        for _ in range(5):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        print(f"{label}: {best(times)} (best of 5)")
    counts.close()
    engine.dispose()


if __name__ == "__main__":
    main()
