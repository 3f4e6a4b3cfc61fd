"""A flag write's latency while the deliverer looks through a large backlog.

A receiver that is down for hours leaves a backlog of deliveries waiting
behind the oldest of each subscription; the leader looks for due ones after
every commit. This fills a SQLite (or PostgreSQL) database with N waiting
deliveries for ten subscriptions, then makes flag writes one at a time while
a thread claims due deliveries as the deliverer does, and prints the time
one claim takes and p50, p99 and max of the writes.

    .venv/bin/python bench/webhook_backlog.py [--waiting 100000] [--writes 200] [--postgresql]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.server_process import access_service, migrated_engine

from unveil.service.flags import Change, FlagService
from unveil.service.webhooks import WebhookService
from unveil.store.unit import Store


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--waiting", type=int, default=100_000)
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--postgresql", action="store_true")
    options = parser.parse_args()
    kind = "postgresql" if options.postgresql else "sqlite"
    with migrated_engine(kind, Path(tempfile.mkdtemp())) as engine:
        access_service(engine).ensure_environment("shop", "production")
        store = Store(engine)
        webhooks = WebhookService(store)
        hooks = [
            webhooks.subscribe(
                "shop", f"http://127.0.0.1:9/{i}", ["flag.changed"], None, "json", "b"
            )
            for i in range(10)
        ]
        now = datetime.now(UTC)
        with store.unit_of_work() as work:
            for i in range(options.waiting):
                work.webhooks.add_delivery(
                    webhook_id=hooks[i % 10]["id"],
                    outbox_id=i + 1,
                    audit_id=1,
                    event="flag.changed",
                    payload={"n": i},
                    now=now,
                    give_up_at=now + timedelta(days=1),
                )
            epoch = work.leadership.take("bench", now)
        webhooks.claim(epoch, 10)  # the heads are being sent: what is left waits behind them
        stop = threading.Event()
        claims: list[float] = []

        def deliverer() -> None:
            while not stop.is_set():
                started = time.perf_counter()
                webhooks.claim(epoch, 8)
                claims.append(time.perf_counter() - started)

        thread = threading.Thread(target=deliverer)
        thread.start()
        flags = FlagService(store)
        writes = []
        try:
            for i in range(options.writes):
                started = time.perf_counter()
                flags.put_item(
                    "flags", "shop", "production", f"f{i}",
                    {"default": "off", "description": str(i)}, Change("bench"), None,
                )  # fmt: skip
                writes.append((time.perf_counter() - started) * 1000)
        finally:
            stop.set()
            thread.join()
        claim_ms = statistics.median(claims) * 1000
        print(
            f"{kind}, {options.waiting} waiting: a claim p50 {claim_ms:.1f} ms;"
            f" {options.writes} writes p50 {statistics.median(writes):.1f} ms, "
            f"p99 {_percentile(writes, 0.99):.1f} ms, max {max(writes):.1f} ms"
        )


if __name__ == "__main__":
    main()
