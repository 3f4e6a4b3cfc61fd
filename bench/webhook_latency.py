"""A flag write's latency with no webhook, a receiver that answers, and one that hangs.

Starts a real server process (SQLite in a temporary folder) and a real
receiver process (tests/webhook_receiver.py) on loopback, then makes N flag
writes one at a time through the admin API in each of three setups and
prints p50, p99 and max of the PUT's answer time. The hanging receiver
accepts every delivery and answers nothing for 60 s, the dripping one
answers a byte every half second for ever, the huge one 1 GiB: the writes
must not notice.

    .venv/bin/python bench/webhook_latency.py [--writes 100]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.server_process import _free_port, start_server, stop

FLAGS = "/api/v1/projects/shop/environments/production/flags"
HOOKS = "/api/v1/projects/shop/webhooks"
RECEIVER = Path(__file__).resolve().parent.parent / "tests" / "webhook_receiver.py"


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def _receiver(folder: Path, *options: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    log = folder / f"received-{port}.jsonl"
    process = subprocess.Popen(
        [sys.executable, str(RECEIVER), str(port), str(log), *options], stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    process.stdout.readline()
    return process, f"http://127.0.0.1:{port}/hook"


def _writes(api: httpx.Client, key: str, count: int) -> list[float]:
    seconds = []
    for i in range(count):
        path = f"{FLAGS}/{key}"
        current = api.get(path)
        headers = {"If-Match": current.headers["etag"]} if current.status_code == 200 else {}
        started = time.perf_counter()
        answer = api.put(path, json={"default": "off", "description": str(i)}, headers=headers)
        seconds.append(time.perf_counter() - started)
        assert answer.status_code < 300, answer.text
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--writes", type=int, default=100)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        server = start_server(f"sqlite:///{folder}/unveil.db")
        receivers = []
        try:
            with server.client() as api:
                setups = [
                    ("no webhook", None),
                    ("answering", ()),
                    ("hanging 60 s", ("--hang", "60")),
                    ("dripping", ("--drip", "0.5")),
                    ("huge answer", ("--huge", "1024")),
                ]
                for name, receiver_options in setups:
                    hook = None
                    if receiver_options is not None:
                        process, url = _receiver(Path(folder), *receiver_options)
                        receivers.append(process)
                        made = api.post(HOOKS, json={"url": url, "events": ["flag.changed"]})
                        hook = made.json()["id"]
                    seconds = _writes(api, name.split()[0], options.writes)
                    ms = [s * 1000 for s in seconds]
                    print(
                        f"{name:>14}: {options.writes} writes, p50 {statistics.median(ms):.1f} ms, "
                        f"p99 {_percentile(ms, 0.99):.1f} ms, max {max(ms):.1f} ms"
                    )
                    if hook is not None:
                        api.delete(f"{HOOKS}/{hook}")
        finally:
            stop(server)
            for process in receivers:
                process.kill()


if __name__ == "__main__":
    main()
