"""Propagation: from a write through the admin API to every connected stream client.

Starts a real server process (SQLite in a temporary folder), connects N
server-sent-events clients with one asyncio process, then makes writes one
at a time and records, for every client, the time from sending the write to
receiving its patch. Prints p50, p99 and max for each N. With ``--flags N``
the environment holds N generated flags first (as bench/scale.py makes
them; every client is sent that whole snapshot when it connects), so a
write is one flag among many.

    .venv/bin/python bench/propagation.py [--clients 100 1000] [--writes 20] [--flags N]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import re
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scale import environment
from tests.server_process import ADMIN_TOKEN, sdk_key, start_server, stop

FLAGS = "/api/v1/projects/shop/environments/production/flags"


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


_PATCH_ID = re.compile(rb"event: patch\nid: (\d+)\n")


async def _follow(
    host: str,
    port: int,
    key: str,
    connected: asyncio.Queue[None],
    arrivals: dict[int, list[float]],
    wanted: dict[int, asyncio.Event],
    clients: int,
) -> None:
    """One stream client on a bare socket: the load generator must not be the bottleneck.

    It only looks for each patch's ``id:`` line (the version) to time it.
    """
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"GET /sdk/v1/stream HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    buffer = b""
    seen_snapshot = False
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            arrived = time.perf_counter()
            buffer += chunk
            if not seen_snapshot and b"event: snapshot" in buffer:
                seen_snapshot = True
                connected.put_nowait(None)
            last = 0
            for match in _PATCH_ID.finditer(buffer):
                version = int(match.group(1))
                got = arrivals.setdefault(version, [])
                got.append(arrived)
                if len(got) == clients and version in wanted:
                    wanted[version].set()
                last = match.end()
            buffer = buffer[last:][-4096:]
    finally:
        writer.close()


async def measure(url: str, key: str, clients: int, writes: int) -> tuple[list[float], list[float]]:
    """Latencies from sending each write to each client's receipt, and each write's answer."""
    arrivals: dict[int, list[float]] = {}
    wanted: dict[int, asyncio.Event] = {}
    connected: asyncio.Queue[None] = asyncio.Queue()
    host, port = url.removeprefix("http://").split(":")
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30
    ) as admin:
        tasks = [
            asyncio.create_task(_follow(host, int(port), key, connected, arrivals, wanted, clients))
            for _ in range(clients)
        ]
        for _ in range(clients):
            await asyncio.wait_for(connected.get(), 600)
        # the load generator's own garbage collection must not stall the timing
        gc.collect()
        gc.freeze()
        gc.disable()
        version = (await admin.get("/api/v1/projects")).json()["projects"][0]["environments"]
        current = next(e["version"] for e in version if e["key"] == "production")
        latencies: list[float] = []
        acks: list[float] = []
        for i in range(writes):
            current += 1
            wanted[current] = asyncio.Event()
            sent = time.perf_counter()
            answer = await admin.put(f"{FLAGS}/bench-{i}", json={"default": "on"})
            acks.append(time.perf_counter() - sent)
            answer.raise_for_status()
            await asyncio.wait_for(wanted[current].wait(), 30)
            latencies.extend(t - sent for t in arrivals[current])
        gc.enable()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return latencies, acks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--writes", type=int, default=20)
    parser.add_argument("--flags", type=int, default=0, help="generated flags in the environment")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    print(
        "propagation: write through the API -> patch received by every stream client"
        f" ({args.flags} other flags in the environment)"
    )
    print(
        f"{'clients':>8} {'writes':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
        f"   {'write answered p50/p99 ms':>26}"
    )
    for clients in args.clients:
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite:///{folder}/bench.db"
            server = start_server(url, heartbeat=15.0)  # the production default
            try:
                if args.flags:
                    seeded = httpx.put(
                        f"{server.url}/api/v1/projects/shop/environments/production/document",
                        json=environment(args.flags),
                        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                        timeout=600,
                    )
                    seeded.raise_for_status()
                key = sdk_key(url)
                latencies, acks = asyncio.run(measure(server.url, key, clients, args.writes))
            finally:
                stop(server)
        ms = [1000 * x for x in latencies]
        ack_ms = [1000 * x for x in acks]
        answered = f"{statistics.median(ack_ms):.1f} / {_percentile(ack_ms, 0.99):.1f}"
        print(
            f"{clients:>8} {args.writes:>7} {statistics.median(ms):>8.1f} "
            f"{_percentile(ms, 0.99):>8.1f} {max(ms):>8.1f}   {answered:>26}"
        )


if __name__ == "__main__":
    main()
