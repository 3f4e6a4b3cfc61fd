"""Evaluations per second through unveil's Client, single-threaded.

    make bench            (or: .venv/bin/python bench/eval.py)

Prints one line per workload (see bench/workloads.py). bench/peers.py runs
the same workloads through other flag systems and a hand-written floor.
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from unveil import Client
from workloads import format_rate, make_users, measure, unveil_document


def main() -> None:
    users = make_users()
    client = Client.from_file(unveil_document())
    print(
        f"unveil Client, {platform.python_implementation()} {platform.python_version()}, "
        f"{len(users):,} users round-robin, best of 3"
    )
    for workload in "ABCD":
        evaluate = client.enabled if workload in "AB" else client.value
        result = measure(workload, evaluate, users, users)
        status = "; ".join(result.problems) or "answers checked"
        print(f"  {workload}: {format_rate(result.evals_per_second):>10}   ({status})")


if __name__ == "__main__":
    main()
