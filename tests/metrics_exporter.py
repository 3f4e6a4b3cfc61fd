"""A small real exporter for the Prometheus source's tests: per-variant counters and a histogram.

Run as ``python -m tests.metrics_exporter PORT``; it serves fixed numbers
(what the test asserts) until it is stopped.
"""

from __future__ import annotations

import sys
import threading

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

#: errors per variant (a variant name that needs escaping in PromQL among them)
ERRORS = {"off": 3, "on": 9, 'odd"va\\riant': 4}
#: latencies per variant, in milliseconds
LATENCIES = {"off": [8.0] * 50 + [15.0] * 50, "on": [15.0] * 50 + [30.0] * 50}
BUCKETS = (5.0, 10.0, 20.0, 40.0, 80.0, 160.0)


def main(port: int) -> None:
    registry = CollectorRegistry()
    errors = Counter("app_errors", "Errors served", ["variant"], registry=registry)
    latency = Histogram(
        "app_latency_ms", "Latency served", ["variant"], buckets=BUCKETS, registry=registry
    )
    for variant, n in ERRORS.items():
        errors.labels(variant).inc(n)
    for variant, values in LATENCIES.items():
        for value in values:
            latency.labels(variant).observe(value)
    start_http_server(port, addr="127.0.0.1", registry=registry)
    print("ready", flush=True)
    threading.Event().wait()  # serve until stopped


if __name__ == "__main__":
    main(int(sys.argv[1]))
