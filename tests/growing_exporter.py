"""A real exporter whose counters grow with the clock: requests at one rate, errors at a
rate that changes at a given moment (the deploy a verification judges).

Run as ``python -m tests.growing_exporter PORT SWITCH_AT``: ``app_requests_total`` grows
100 a second, ``app_errors_total`` 2 a second before SWITCH_AT (epoch seconds) and 4 after.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

REQUESTS_PER_SECOND = 100.0
ERRORS_BEFORE, ERRORS_AFTER = 2.0, 4.0


class Growing(Collector):
    def __init__(self, switch_at: float) -> None:
        self.started = time.time()
        self.switch_at = switch_at

    def collect(self) -> Iterator[CounterMetricFamily]:
        now = time.time()
        before = max(0.0, min(now, self.switch_at) - self.started)
        after = max(0.0, now - max(self.started, self.switch_at))
        yield CounterMetricFamily(
            "app_requests", "Requests served", value=(now - self.started) * REQUESTS_PER_SECOND
        )
        yield CounterMetricFamily(
            "app_errors", "Errors served", value=before * ERRORS_BEFORE + after * ERRORS_AFTER
        )


def main(port: int, switch_at: float) -> None:
    registry = CollectorRegistry()
    registry.register(Growing(switch_at))
    start_http_server(port, addr="127.0.0.1", registry=registry)
    print("ready", flush=True)
    threading.Event().wait()  # serve until stopped


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]))
