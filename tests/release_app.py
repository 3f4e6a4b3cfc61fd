"""An application under release: it serves made-up users through two flags and reports health.

Run by tests/test_release_e2e.py as its own process, with the real SDK over
HTTP: ``python -m tests.release_app URL SDK_KEY RATE``. Each request is a
new user. ``checkout``'s treatment fails three times as often as its
control (15% against 5%); ``search``'s treatment is as healthy as its
control. Both report a latency. SIGTERM ends it, sending what is left.
"""

from __future__ import annotations

import random
import signal
import sys
import time

from unveil import Client

BASE_ERROR_RATE = 0.05


def main() -> None:
    url, key, rate = sys.argv[1], sys.argv[2], float(sys.argv[3])
    stopping = False

    def stop(*_args: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    client = Client(url, key, flush_interval=0.5, poll_interval=1.0)
    if not client.wait_until_ready(30):
        raise SystemExit("the client did not become ready")
    rng = random.Random(20261201)
    began, served = time.monotonic(), 0
    while not stopping:
        user = {"key": f"user-{served}"}
        worse = 3.0 if client.value("checkout", user, False) else 1.0
        if rng.random() < BASE_ERROR_RATE * worse:
            client.track("checkout_errors", user)
        client.value("search", user, False)
        if rng.random() < BASE_ERROR_RATE:
            client.track("search_errors", user)
        client.track("latency_ms", user, rng.lognormvariate(3.0, 0.3))
        served += 1
        ahead = began + served / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)  # pacing the load, not waiting for anything
    client.close()


if __name__ == "__main__":
    main()
