"""Deliveries in the store and the service: what becomes an event, claims, retries, giving up."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.server_process import access_service
from unveil.service.flags import Change, FlagService
from unveil.service.webhooks import RetryPolicy, WebhookService, events_of
from unveil.store.unit import Store

FLAG = {"default": "off"}


def _closed_port() -> int:
    """A loopback port nobody listens on (connections to it are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _setup(engine: Any, retry: RetryPolicy | None = None) -> tuple[Store, WebhookService, int]:
    access_service(engine).ensure_environment("shop", "production")
    store = Store(engine)
    webhooks = WebhookService(store, retry)
    webhooks.subscribe(
        "shop", f"http://127.0.0.1:{_closed_port()}/", ["flag.changed"], None, "json", "me"
    )
    with store.unit_of_work() as work:
        epoch = work.leadership.take("node-a", datetime.now(UTC))
    return store, webhooks, epoch


def test_what_each_audited_change_announces() -> None:
    on, off = {"default": "off"}, {"default": "off", "enabled": False}
    assert events_of("flag.update", on, off) == ("flag.switched_off", "flag.changed")
    assert events_of("flag.update", off, off | {"description": "x"}) == ("flag.changed",)
    assert events_of("flag.update", off, on) == ("flag.changed",)
    assert events_of("flag.create", None, off) == ("flag.changed",)
    assert events_of("flag.delete", on, None) == ("flag.changed",)
    applied = events_of("document.apply", {"flags": {"a": on}}, {"flags": {"a": off}})
    assert applied == ("flag.switched_off", "flag.changed")
    assert events_of("document.apply", {"flags": {}}, {"flags": {"a": off}}) == ("flag.changed",)
    assert events_of("release.aborted", None, {}) == ("release.rolled_back",)
    assert events_of("release.started", None, {}) == ("release.started",)
    assert events_of("release.held", None, {}) == ()
    assert events_of("schedule.failed", None, None) == ("schedule.failed",)
    assert events_of("segment.update", None, None) == ()
    assert events_of("webhook.create", None, None) == ()


def test_the_backoff_is_full_jitter_under_a_growing_cap() -> None:
    policy = RetryPolicy(base=10, cap=3600)
    highest = [policy.delay(n, lambda _low, high: high) for n in (1, 2, 3, 10, 60)]
    assert highest == [10, 20, 40, 3600, 3600]
    assert policy.delay(5, lambda low, _high: low) == 0


def test_an_attempt_is_claimed_once_and_a_dead_leaders_claim_is_taken_over(engine: Any) -> None:
    store, webhooks, epoch = _setup(engine)
    FlagService(store).put_item("flags", "shop", "production", "f", FLAG, Change("me"), None)
    FlagService(store).put_item("flags", "shop", "production", "g", FLAG, Change("me"), None)
    assert webhooks.fan_out() == 5  # project, environment, webhook, two flags
    assert webhooks.fan_out() == 0  # every outbox row is looked at once
    assert len(webhooks.deliveries("shop", 1)) == 2  # the flag changes are the events
    (first,) = webhooks.claim(epoch, 10)  # only the oldest of a subscription is due
    assert first.delivery.payload["target"] == "f"
    assert webhooks.claim(epoch, 10) == []  # sending: nobody else takes it
    with store.unit_of_work() as work:
        newer = work.leadership.take("node-b", datetime.now(UTC))
    (again,) = webhooks.claim(newer, 10)  # its leader is gone: sent again (at least once)
    assert again.delivery.id == first.delivery.id
    assert again.delivery.attempts == 2


def test_a_delivery_that_keeps_failing_is_given_up_when_its_time_is_over(engine: Any) -> None:
    import httpx

    retry = RetryPolicy(base=0.01, cap=0.01, give_up_after=timedelta(seconds=0.3))
    store, webhooks, epoch = _setup(engine, retry)
    FlagService(store).put_item("flags", "shop", "production", "f", FLAG, Change("me"), None)
    webhooks.fan_out()
    attempts = 0
    deadline = time.monotonic() + 30
    with httpx.Client(timeout=2) as http:
        while time.monotonic() < deadline:
            claimed = webhooks.claim(epoch, 10)
            if not claimed:
                (shown,) = webhooks.deliveries("shop", 1)
                if shown["state"] == "failed":
                    break
                continue  # waiting out a backoff of at most 10 ms
            assert not webhooks.send(claimed[0], http, "node-a")
            attempts += 1
    assert shown["state"] == "failed"
    assert attempts >= 2
    assert len(shown["attempts"]) == attempts
    assert all(a["status"] is None and "Connect" in a["error"] for a in shown["attempts"])
    assert shown["next_attempt_at"] is None


def test_looking_for_due_deliveries_takes_no_write_lock(tmp_path: Any) -> None:
    """The review: the leader searched for due deliveries inside a write transaction;
    with a backlog of 100 000 behind a dead receiver that held SQLite's one write lock
    for a tenth of a second after every commit, and flag writes waited on it
    (bench/webhook_backlog.py: p50 293 ms, max 1.8 s; now 20 ms and 80 ms). Searching
    now only reads, so a held write lock does not stop it."""
    import sqlite3
    import threading

    from tests.server_process import migrated_engine

    with migrated_engine("sqlite", tmp_path) as engine:
        store, webhooks, epoch = _setup(engine)
        FlagService(store).put_item("flags", "shop", "production", "f", FLAG, Change("me"), None)
        webhooks.fan_out()
        (first,) = webhooks.claim(epoch, 10)  # being sent: nothing else of it is due
        writer = sqlite3.connect(str(tmp_path / "unveil.db"), timeout=30)
        writer.execute("BEGIN IMMEDIATE")  # someone else's write, holding the lock
        done = threading.Event()
        found: list[Any] = []

        def look() -> None:
            found.append(webhooks.claim(epoch, 10))
            done.set()

        threading.Thread(target=look, daemon=True).start()
        try:
            assert done.wait(5), "the search waited for the write lock"
            assert found == [[]]
        finally:
            writer.rollback()
            writer.close()
        assert first.delivery.payload["target"] == "f"
