"""How fast the dashboard's main pages are drawn, and how much each one weighs.

Starts a real ``unveil serve`` on SQLite, fills a project with 2,000 flags in
three environments and gives one flag 200 audit entries, signs in as a user,
then asks for the flags list (first page) and that flag's page many times
over loopback HTTP. Prints p50/p95/p99 of the time to the last byte (server
time plus loopback), and the bytes each page transfers with its stylesheet
and script (the goal of the issue: p95 under 150 ms, under 150 KB a page).

    .venv/bin/python bench/dashboard.py [--flags 2000] [--requests 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.server_process import ADMIN_TOKEN, start_server, stop

PROJECT = "/api/v1/projects/shop/environments"
ENVS = ("production", "staging", "development")


def _document(flags: int, env: str) -> dict[str, object]:
    return {
        "flags": {
            f"feature-{n:04d}": {
                "description": f"Feature number {n}",
                "variants": {"on": True, "off": False},
                "default": {"rollout": {"on": n % 100, "off": 100 - n % 100}}
                if n % 3 == 0
                else "on",
                "enabled": n % 7 != 0,
                "rules": [
                    {
                        "when": [{"attr": "country", "op": "in", "values": ["NL", env]}],
                        "serve": "on",
                    }
                ],
            }
            for n in range(flags)
        }
    }


def _timed(web: httpx.Client, path: str, requests: int) -> tuple[list[float], int]:
    times = []
    size = 0
    for _ in range(requests):
        began = time.perf_counter()
        answer = web.get(path)
        times.append((time.perf_counter() - began) * 1000)
        assert answer.status_code == 200, (path, answer.status_code)
        size = len(answer.content)
    return times, size


def _quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flags", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        server = start_server(f"sqlite:///{folder}/unveil.db", None, False)
        try:
            api = httpx.Client(
                base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=120
            )
            assert api.post("/api/v1/projects", json={"key": "shop"}).status_code == 201
            for env in ENVS:
                made = api.post("/api/v1/projects/shop/environments", json={"key": env})
                assert made.status_code in (201, 409), made.text
                put = api.put(f"{PROJECT}/{env}/document", json=_document(args.flags, env))
                assert put.status_code == 200, put.text[:300]
            key = "feature-0001"
            for n in range(200):  # 200 audit entries on one flag
                got = api.get(f"{PROJECT}/production/flags/{key}")
                data = {**got.json()["data"], "description": f"edit {n}"}
                edited = api.put(
                    f"{PROJECT}/production/flags/{key}",
                    json=data,
                    headers={"If-Match": got.headers["etag"]},
                    params={"reason": f"edit {n}"},
                )
                assert edited.status_code == 200, edited.text
            user = {"name": "bench", "password": "bench-password-1", "role": "editor"}
            assert api.post("/api/v1/users", json=user).status_code == 201
            web = httpx.Client(base_url=server.url, timeout=60)
            signed = web.post("/login", data={"name": "bench", "password": "bench-password-1"})
            assert signed.status_code == 303, signed.status_code
            assets = sum(
                len(web.get(p).content) for p in ("/static/dashboard.css", "/static/dashboard.js")
            )
            print(f"{args.flags} flags x {len(ENVS)} environments; {args.requests} requests a page")
            print(f"stylesheet and script: {assets:,} bytes (cached after the first page)")
            for name, path in (
                ("flags list (first page)", "/p/shop/production/flags"),
                ("flag page (200 audit entries)", f"/p/shop/production/flags/{key}"),
            ):
                _timed(web, path, 5)  # warm
                times, size = _timed(web, path, args.requests)
                p50, p95 = statistics.median(times), _quantile(times, 0.95)
                print(
                    f"{name}: p50 {p50:.1f} ms, p95 {p95:.1f} ms,"
                    f" p99 {_quantile(times, 0.99):.1f} ms; {size:,} bytes"
                    f" (+{assets:,} first time = {size + assets:,})"
                )
        finally:
            stop(server)


if __name__ == "__main__":
    main()
