"""What a dark-launch experiment adds to the caller's path (issue 14).

    nice -n 10 .venv/bin/python bench/experiment.py

A live client of a real server process (runs are counted into a real event
buffer), a flag at 100% (every call runs the candidate), a trivial control
and candidate (both return the same small dict). Each call is timed alone
with ``perf_counter_ns``; a figure is the caller's time of
``client.experiment(...)`` against the caller's time of calling the control
alone, in blocks of BLOCK calls alternating between the two.

The pacings:

- ``warm``: calls back to back, with a pool whose capacity holds a whole
  block (no run is skipped); between blocks, outside the timing, the pool
  finishes its runs. The caller's code stays in the CPU's caches: this is
  the cost of the code itself.
- ``flat out``: calls back to back with the default pool (64 runs). A
  caller that does nothing else outruns the pool, so most runs are skipped
  (the printed share says how many): mostly the skip path.
- ``paced``: a ``time.sleep`` of PACE_US between calls, which releases the
  GIL as an application's I/O does; the pool keeps up. Each call starts
  with cold caches (the control alone is several times slower too), so on
  a busy machine this is the noisiest figure and the one an application
  sees.

In ``inline`` mode the candidate and the comparison run on the caller's
thread, so what is added includes them.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.server_process import ADMIN_TOKEN, sdk_key, start_server, stop  # noqa: E402

from unveil import Client  # noqa: E402

#: calls per block, and blocks per figure (alternating with the control alone)
BLOCK = 2_000
BLOCKS = 10
#: the paced calls' gap, in microseconds
PACE_US = 200
FLAG = "bench-exp"


def control() -> dict[str, int]:
    return {"id": 42, "price": 1999}


def candidate() -> dict[str, int]:
    return {"id": 42, "price": 1999}


def timings(call: Callable[[int], Any], paced: bool) -> list[float]:
    """Microseconds of each of BLOCK calls."""
    out: list[float] = []
    gap = PACE_US / 1e6
    clock = time.perf_counter_ns
    for i in range(BLOCK):
        started = clock()
        call(i)
        out.append((clock() - started) / 1000)
        if paced:
            time.sleep(gap)
    return out


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def drain(client: Client) -> None:
    laboratory = client._laboratory
    while laboratory is not None and laboratory.busy:
        time.sleep(0.005)


def outcomes(client: Client) -> dict[str, int]:
    """The outcomes summed so far, taken out of the client's buffer (the bench sends nothing)."""
    assert client.events is not None
    counted: dict[str, int] = {}
    for event in client.events.take(100_000):
        if event.get("kind") == "experiment":
            for outcome, count in event["outcomes"].items():
                counted[outcome] = counted.get(outcome, 0) + count
    return counted


def measure(client: Client, mode: str, paced: bool) -> dict[str, float]:
    users = [f"user-{i}" for i in range(1000)]

    def alone(i: int) -> Any:
        return control()

    def experiment(i: int) -> Any:
        return client.experiment(
            FLAG, users[i % 1000], control=control, candidate=candidate, mode=mode
        )

    base: list[float] = []
    timed: list[float] = []
    outcomes(client)
    for _ in range(BLOCKS):
        drain(client)
        base += timings(alone, paced)
        drain(client)
        timed += timings(experiment, paced)
    drain(client)
    counted = outcomes(client)
    return {
        "alone_p50": percentile(base, 0.50),
        "alone_p99": percentile(base, 0.99),
        "exp_p50": percentile(timed, 0.50),
        "exp_p99": percentile(timed, 0.99),
        "skipped": counted.get("skipped", 0) / max(sum(counted.values()), 1),
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        server = start_server(f"sqlite:///{folder}/bench.db")
        try:
            with server.client(ADMIN_TOKEN) as api:
                flags = "/api/v1/projects/shop/environments/production/flags"
                api.put(f"{flags}/{FLAG}", json={"default": "on"}).raise_for_status()
            key = sdk_key(server.database_url)
            # flush_interval: the bench takes the events itself (see outcomes)
            default = Client(server.url, key, cache_dir=folder, flush_interval=3600)
            roomy = Client(
                server.url,
                key,
                cache_dir=folder,
                flush_interval=3600,
                experiment_capacity=BLOCK + 16,
            )
            assert default.wait_until_ready(15)
            assert roomy.wait_until_ready(15)
            print(f"python {sys.version.split()[0]}, {BLOCKS} x {BLOCK} calls per figure, µs")
            print(
                f"{'mode, pacing':<22} {'control p50':>11} {'p99':>7} {'experiment p50':>15}"
                f" {'p99':>7} {'added p50':>10} {'added p99':>10} {'skipped':>8}"
            )
            for mode, pacing, client in (
                ("background", "warm", roomy),
                ("background", "flat out", default),
                ("background", "paced", default),
                ("inline", "warm", default),
                ("inline", "paced", default),
            ):
                figures = measure(client, mode, pacing == "paced")
                print(
                    f"{mode + ', ' + pacing:<22} {figures['alone_p50']:>11.2f}"
                    f" {figures['alone_p99']:>7.2f} {figures['exp_p50']:>15.2f}"
                    f" {figures['exp_p99']:>7.2f}"
                    f" {figures['exp_p50'] - figures['alone_p50']:>10.2f}"
                    f" {figures['exp_p99'] - figures['alone_p99']:>10.2f}"
                    f" {figures['skipped']:>7.1%}"
                )
            default.close()
            roomy.close()
        finally:
            stop(server)


if __name__ == "__main__":
    main()
