"""Snapshot requests per second, 200 and 304, from wrk in another process.

Starts a real server process (SQLite in a temporary folder) holding the demo
flags, then runs wrk against /sdk/v1/snapshot: once plainly (200, the whole
document) and once with the current ETag in If-None-Match (304).

    .venv/bin/python bench/snapshot.py [--seconds 10] [--connections 64]

Needs wrk (Debian: apt-get install wrk).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.server_process import ADMIN_TOKEN, sdk_key, start_server, stop

from unveil.core import document_to_data
from unveil.sdk.files import load_document

DEMO = Path(__file__).resolve().parent.parent / "src/unveil/cli/demo-flags.yaml"


def _wrk(url: str, headers: dict[str, str], seconds: int, connections: int) -> tuple[float, str]:
    args = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+(\S+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"wrk saw {errors.group(1)} failed responses:\n{out}")
    return rate, p99.group(1) if p99 else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/bench.db"
        server = start_server(url)
        try:
            with httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
            ) as admin:
                document = document_to_data(load_document(DEMO))
                env = "/api/v1/projects/shop/environments/production/document"
                admin.put(env, json=document).raise_for_status()
            key = sdk_key(url)
            auth = {"Authorization": f"Bearer {key}"}
            first = httpx.get(f"{server.url}/sdk/v1/snapshot", headers=auth)
            first.raise_for_status()
            etag = first.headers["etag"]
            again = httpx.get(
                f"{server.url}/sdk/v1/snapshot", headers={**auth, "If-None-Match": etag}
            )
            assert again.status_code == 304, again.status_code
            target = f"{server.url}/sdk/v1/snapshot"
            print(
                f"snapshot requests ({len(first.content)} bytes, {args.connections} connections, "
                f"{args.seconds}s, wrk in its own process)"
            )
            print(f"{'answer':>8} {'req/s':>10} {'p99':>10}")
            for label, headers in (("200", auth), ("304", {**auth, "If-None-Match": etag})):
                rate, p99 = _wrk(target, headers, args.seconds, args.connections)
                print(f"{label:>8} {rate:>10.0f} {p99:>10}")
        finally:
            stop(server)


if __name__ == "__main__":
    main()
