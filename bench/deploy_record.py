"""What recording a large deploy costs: the most references a deploy may carry, end to end.

    nice -n 10 .venv/bin/python bench/deploy_record.py [--flags 10000] [--per-flag 10]

Starts a real server on SQLite, records deploys of a service whose scan found
FLAGS flags at PER_FLAG places each (10,000 x 10 = the 100,000 locations a deploy
may carry), then reads the status and the timeline. Prints the body size and
the wall time of each request (median of the runs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.server_process import start_server, stop

ENV = "/api/v1/projects/shop/environments/production"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flags", type=int, default=10_000)
    parser.add_argument("--per-flag", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    refs = {
        f"flag-{i:05d}": [
            f"src/module_{i % 300}/file_{i}.py:{line}" for line in range(args.per_flag)
        ]
        for i in range(args.flags)
    }
    folder = Path(tempfile.mkdtemp())
    server = start_server(f"sqlite:///{folder / 'unveil.db'}")
    timings: dict[str, list[float]] = {"record": [], "status": [], "timeline": []}
    try:
        with server.client() as api:
            api.put("/api/v1/projects/shop/services/api", json={})
            body = json.dumps({"service": "api", "version": "0", "references": refs})
            for run in range(args.runs):
                version = f"1.0.{run}"
                started = time.perf_counter()
                made = api.post(
                    f"{ENV}/deploys",
                    content=body.replace('"version": "0"', f'"version": "{version}"'),
                    headers={"Content-Type": "application/json"},
                )
                timings["record"].append(time.perf_counter() - started)
                assert made.status_code == 201, made.text[:300]
                for name, path in (("status", "/status"), ("timeline", "/timeline")):
                    started = time.perf_counter()
                    assert api.get(f"{ENV}{path}").status_code == 200
                    timings[name].append(time.perf_counter() - started)
    finally:
        stop(server)
    locations = args.flags * args.per_flag
    print(f"deploy of {args.flags} flags, {locations} locations: body {len(body) / 1e6:.1f} MB")
    for name, values in timings.items():
        print(
            f"  {name:8} median {statistics.median(values) * 1000:7.0f} ms over {len(values)} runs"
        )


if __name__ == "__main__":
    main()
