"""Snapshot requests per second, 200 and 304, from wrk in another process.

Starts a real server process (SQLite in a temporary folder) holding the demo
flags (or ``--flags N`` generated ones, as bench/scale.py makes them), then
runs wrk against /sdk/v1/snapshot: once plainly (200, the whole document),
once asking for gzip (200, the prepared gzip form) and once with the current
ETag in If-None-Match (304).

With ``--processes 2`` a second server process serves the same SQLite
folder (one leads, the other follows and serves) on its own port, and one
wrk runs against each at once, with half the connections; the rates add up.

    .venv/bin/python bench/snapshot.py [--seconds 10] [--connections 64]
                                       [--flags N] [--processes 1|2]

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

from bench.scale import environment
from tests.server_process import ADMIN_TOKEN, sdk_key, start_server, stop

from unveil.core import document_to_data
from unveil.sdk.files import load_document

DEMO = Path(__file__).resolve().parent.parent / "src/unveil/cli/demo-flags.yaml"


def _wrk_args(url: str, headers: dict[str, str], seconds: int, connections: int) -> list[str]:
    threads = min(2, connections)
    args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    return [*args, url]


def _wrk(
    urls: list[str], headers: dict[str, str], seconds: int, connections: int
) -> tuple[float, str]:
    """One wrk per URL at once (connections shared out); the summed rate and each p99."""
    each = max(1, connections // len(urls))
    runs = [
        subprocess.Popen(_wrk_args(url, headers, seconds, each), stdout=subprocess.PIPE, text=True)
        for url in urls
    ]
    rates, p99s = [], []
    for run in runs:
        out, _ = run.communicate()
        rate, p99 = _figures(out)
        rates.append(rate)
        p99s.append(p99)
    return sum(rates), " / ".join(p99s)


def _figures(out: str) -> tuple[float, str]:
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
    parser.add_argument("--flags", type=int, default=0, help="generated flags; 0: the demo's")
    parser.add_argument("--processes", type=int, default=1, choices=(1, 2))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/bench.db"
        server = start_server(url)
        servers = [server]
        try:
            with httpx.Client(
                base_url=server.url,
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                timeout=600,
            ) as admin:
                if args.flags:
                    document = environment(args.flags)
                else:
                    document = document_to_data(load_document(DEMO))
                env = "/api/v1/projects/shop/environments/production/document"
                admin.put(env, json=document).raise_for_status()
            if args.processes == 2:
                servers.append(start_server(url, seed=False))
            key = sdk_key(url)
            auth = {"Authorization": f"Bearer {key}"}
            etag = ""
            for each in servers:
                first = httpx.get(f"{each.url}/sdk/v1/snapshot", headers=auth, timeout=600)
                first.raise_for_status()
                assert etag in ("", first.headers["etag"]), "the nodes disagree"
                etag = first.headers["etag"]
                again = httpx.get(
                    f"{each.url}/sdk/v1/snapshot", headers={**auth, "If-None-Match": etag}
                )
                assert again.status_code == 304, again.status_code
            targets = [f"{each.url}/sdk/v1/snapshot" for each in servers]
            packed = httpx.get(targets[0], headers={**auth, "Accept-Encoding": "gzip"})
            size = packed.headers.get("content-length", "?")
            print(
                f"snapshot requests ({len(first.content)} bytes, {size} gzipped;"
                f" {args.connections} connections, {args.seconds}s,"
                f" {len(servers)} server process(es), wrk in its own process)"
            )
            print(f"{'answer':>8} {'req/s':>10} {'p99':>10}")
            cases = (
                ("200", auth),
                ("200 gzip", {**auth, "Accept-Encoding": "gzip"}),
                ("304", {**auth, "If-None-Match": etag}),
            )
            for label, headers in cases:
                rate, p99 = _wrk(targets, headers, args.seconds, args.connections)
                print(f"{label:>8} {rate:>10.0f} {p99:>10}")
        finally:
            for each in servers:
                stop(each)


if __name__ == "__main__":
    main()
