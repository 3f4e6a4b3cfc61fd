"""Snapshots in memory and the stream clients that follow them, per environment.

Each server process keeps every environment's current snapshot (the
canonical flags document, its version, its serialised body and ETag) in
memory, so snapshot requests never touch the database. When an environment
changes (a write on this node, a NOTIFY from another, or the periodic check
that catches anything missed) one refresher thread loads the new snapshot,
works out the patch from the old one and hands it to every stream client of
that environment.

Stream clients each have a bounded queue. A client too slow to keep up is
not allowed to grow memory: its queue is emptied and it is told to resync,
which sends it the whole snapshot again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from unveil.core import Ruleset
from unveil.core.patch import diff_documents
from unveil.service.flags import FlagService, Snapshot

__all__ = ["RESYNC", "CachedSnapshot", "Hub"]

log = logging.getLogger("unveil.server.hub")

#: Put in a client's queue when it fell behind: send it everything again.
RESYNC = "resync"
_QUEUE_SIZE = 256


@dataclass(frozen=True, slots=True)
class CachedSnapshot:
    """A snapshot ready to send, and its flags compiled for evaluation here (OFREP)."""

    version: int
    document: dict[str, Any]
    body: bytes
    etag: str
    ruleset: Ruleset

    @classmethod
    def of(cls, snapshot: Snapshot) -> CachedSnapshot:
        body = json.dumps(
            {**snapshot.document, "revision": snapshot.version}, separators=(",", ":")
        ).encode()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        ruleset = Ruleset.from_data(snapshot.document)
        return cls(snapshot.version, snapshot.document, body, etag, ruleset)


@dataclass(eq=False, slots=True)  # each subscriber is itself: hashed by identity
class _Subscriber:
    queue: asyncio.Queue[str]
    loop: asyncio.AbstractEventLoop


@dataclass(slots=True)
class _Environment:
    snapshot: CachedSnapshot
    subscribers: set[_Subscriber] = field(default_factory=set)


class Hub:
    """Current snapshots and their subscribers, for one server process."""

    def __init__(
        self,
        flags: FlagService,
        on_publish: Callable[[int, float], None] | None = None,
        check_interval: float = 5.0,
    ) -> None:
        self._flags = flags
        self._on_publish = on_publish
        self._check_interval = check_interval
        self._lock = threading.Lock()
        self._refreshing = threading.Lock()  # one refresh at a time keeps patches in order
        self._environments: dict[int, _Environment] = {}
        self._pending: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="unveil-hub", daemon=True)

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._pending.put(None)
        self._thread.join(timeout=5)

    # -- reading ------------------------------------------------------------------------

    def cached(self, environment_id: int) -> CachedSnapshot | None:
        """The environment's snapshot if it is in memory (no database, no waiting)."""
        with self._lock:
            known = self._environments.get(environment_id)
        return None if known is None else known.snapshot

    def current(self, environment_id: int) -> CachedSnapshot:
        """The environment's snapshot, loaded on first use."""
        with self._lock:
            known = self._environments.get(environment_id)
        if known is not None:
            return known.snapshot
        loaded = CachedSnapshot.of(self._flags.snapshot_of(environment_id))
        with self._lock:
            known = self._environments.setdefault(environment_id, _Environment(loaded))
        return known.snapshot

    def subscriber_count(self) -> int:
        with self._lock:
            return sum(len(e.subscribers) for e in self._environments.values())

    # -- following ---------------------------------------------------------------------

    def subscribe(self, environment_id: int) -> tuple[_Subscriber, CachedSnapshot]:
        """A new stream client's queue and the snapshot it starts from.

        Call ``current`` first (off the event loop): it may read the database.
        """
        self.current(environment_id)
        subscriber = _Subscriber(asyncio.Queue(_QUEUE_SIZE), asyncio.get_running_loop())
        with self._lock:
            environment = self._environments[environment_id]
            environment.subscribers.add(subscriber)
            # the snapshot as of subscribing: later patches are all queued after it
            return subscriber, environment.snapshot

    def unsubscribe(self, environment_id: int, subscriber: _Subscriber) -> None:
        with self._lock:
            environment = self._environments.get(environment_id)
            if environment is not None:
                environment.subscribers.discard(subscriber)

    # -- changing ------------------------------------------------------------------------

    def changed(self, environment_id: int | None) -> None:
        """An environment changed (None: any may have). Safe from any thread."""
        self._pending.put(environment_id if environment_id is not None else -1)

    def changed_here(self, environment_id: int) -> None:
        """A write on this node committed: refresh before the write is answered.

        So a client that wrote and then reads from the same node sees its write.
        """
        with self._lock:
            known = environment_id in self._environments
        if known:
            try:
                self._refresh(environment_id)
            except Exception:  # the refresher thread's periodic check will catch up
                log.exception("refreshing environment %s failed", environment_id)

    def _run(self) -> None:
        next_check = time.monotonic() + self._check_interval
        while not self._stop.is_set():
            timeout = max(0.0, next_check - time.monotonic())
            try:
                first = self._pending.get(timeout=timeout)
            except queue.Empty:
                first = -1  # the periodic check: anything missed is caught here
                next_check = time.monotonic() + self._check_interval
            if first is None:
                return
            todo = {first}
            while True:  # take everything already waiting: one refresh each
                try:
                    more = self._pending.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    return
                todo.add(more)
            with self._lock:
                known = list(self._environments)
            targets = known if -1 in todo else [e for e in todo if e in known]
            for environment_id in targets:
                try:
                    self._refresh(environment_id)
                except Exception:  # a failed refresh is retried by the next check
                    log.exception("refreshing environment %s failed", environment_id)

    def _refresh(self, environment_id: int) -> None:
        with self._refreshing:
            self._refresh_locked(environment_id)

    def _refresh_locked(self, environment_id: int) -> None:
        started = time.monotonic()
        with self._lock:
            held = self._environments[environment_id].snapshot.version
        if self._flags.version_of(environment_id) <= held:
            return  # the periodic check, or a notice of a change already here
        fresh = CachedSnapshot.of(self._flags.snapshot_of(environment_id))
        with self._lock:
            environment = self._environments[environment_id]
            old = environment.snapshot
            if fresh.version <= old.version:
                return
            environment.snapshot = fresh
            subscribers = list(environment.subscribers)
        patch = diff_documents(old.document, fresh.document, old.version, fresh.version)
        message = f"event: patch\nid: {fresh.version}\ndata: {json.dumps(patch)}\n\n"
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Queue[str]]] = {}
        for subscriber in subscribers:
            by_loop.setdefault(subscriber.loop, []).append(subscriber.queue)
        for loop, queues in by_loop.items():  # one wake-up per event loop, not per client
            loop.call_soon_threadsafe(_deliver_all, queues, message)
        if self._on_publish is not None:
            self._on_publish(len(subscribers), time.monotonic() - started)


def _deliver_all(queues: list[asyncio.Queue[str]], message: str) -> None:
    for target in queues:
        try:
            target.put_nowait(message)
        except asyncio.QueueFull:
            while not target.empty():
                target.get_nowait()
            target.put_nowait(RESYNC)
