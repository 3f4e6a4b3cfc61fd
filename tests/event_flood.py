"""Floods of SDK events from several concurrent senders, for the intake's tests."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx

from tests.server_process import Server, wait_for

__all__ = ["EVENTS", "Flood", "flood", "known_batch", "rss_bytes", "unique_batch", "wait_for"]

EVENTS = "/sdk/v1/events"


def unique_batch(sender: int, number: int, size: int = 1000) -> bytes:
    """A batch whose every exposure names a flag never seen before: new series each time."""
    events = [
        {"kind": "exposure", "flag": f"s{sender}-b{number}-f{i}", "variant": "on"}
        for i in range(size)
    ]
    return json.dumps({"events": events}).encode()


def known_batch(_sender: int, number: int, size: int = 1000) -> bytes:
    """A batch over the same fifty flags every time: few series, many events."""
    events = [
        {"kind": "exposure", "flag": f"known-{(number + i) % 50}", "variant": "on"}
        for i in range(size)
    ]
    return json.dumps({"events": events}).encode()


@dataclass
class Flood:
    """What the senders saw: answers by status, and events the server acknowledged."""

    statuses: Counter[int] = field(default_factory=Counter)
    acknowledged: int = 0
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: threading.Event = field(default_factory=threading.Event)

    def record(self, status: int, events: int) -> None:
        with self.lock:
            self.statuses[status] += 1
            if status == 202:
                self.acknowledged += events
            if sum(self.statuses.values()) >= 20:
                self.sent.set()  # the flood is well under way


@contextmanager
def flood(
    server: Server,
    key: str,
    senders: int = 4,
    batch: Callable[[int, int], bytes] = unique_batch,
    size: int = 1000,
    stop_on_error: bool = False,
) -> Iterator[Flood]:
    """Senders posting batches as fast as the server answers, until the block ends."""
    seen = Flood()
    stop = threading.Event()

    def send(sender: int) -> None:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
            number = 0
            while not stop.is_set():
                body = batch(sender, number)
                number += 1
                try:
                    answer = client.post(EVENTS, content=body)
                except httpx.TransportError:
                    with seen.lock:
                        seen.errors += 1
                    if stop_on_error:
                        return
                    continue
                seen.record(answer.status_code, size)

    threads = [threading.Thread(target=send, args=(n,), daemon=True) for n in range(senders)]
    for thread in threads:
        thread.start()
    try:
        assert seen.sent.wait(60), "the flood never got going"
        yield seen
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)


def rss_bytes(pid: int) -> int:
    """A process's resident memory, from /proc."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")
