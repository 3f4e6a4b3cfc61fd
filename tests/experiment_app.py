"""An application running a dark launch: ``python -m tests.experiment_app URL SDK_KEY RUNS``.

Run by tests/test_experiment_e2e.py as its own process, with the real SDK
over HTTP. Each request asks for the "price" of a random input; the control
takes about 1 ms, the candidate about 3 ms (``SLOWER_MS`` more), and the
candidate answers differently on the inputs ending in 00, 01 or 02 (3% of
them, ``DIFFERING``). Both run inline (on the caller's thread, in random
order), so every run is compared and timed. Every example is redacted: the
values leave the process as ``"<value>"`` text. It ends after RUNS requests,
and ``close()`` sends what is left.
"""

from __future__ import annotations

import random
import sys
import time

from unveil import Client

CONTROL_MS = 1.0
SLOWER_MS = 2.0
DIFFERING = 0.03


def main() -> None:
    url, key, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = Client(url, key, flush_interval=0.5, poll_interval=1.0, redact=lambda v: f"<{v}>")
    if not client.wait_until_ready(30):
        raise SystemExit("the client did not become ready")
    rng = random.Random(14)

    def control(n: int) -> int:
        time.sleep(CONTROL_MS / 1000)
        return n * 2

    def candidate(n: int) -> int:
        time.sleep((CONTROL_MS + SLOWER_MS) / 1000)
        return n * 2 + (1 if n % 100 < DIFFERING * 100 else 0)

    for i in range(runs):
        n = rng.randrange(10**9)
        answer = client.experiment(
            "search-v2",
            {"key": f"user-{i}"},
            control=lambda n=n: control(n),
            candidate=lambda n=n: candidate(n),
            mode="inline",
        )
        if answer != n * 2:
            raise SystemExit(f"the caller got {answer!r}, not the control's {n * 2}")
    client.close()


if __name__ == "__main__":
    main()
