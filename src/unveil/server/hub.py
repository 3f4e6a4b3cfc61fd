"""Snapshots in memory and the stream clients that follow them, per environment.

Each server process keeps every environment's current snapshot (its
validated flags, its version, its body in bytes and ETag:
``unveil.server.snapshots``) in memory, so snapshot requests never touch
the database. When an environment changes (a write on this node, a NOTIFY
from another, or the periodic check that catches anything missed) the
snapshot moves to the new version by what changed (the node's writes are
known without a read; other nodes' are caught up from the rows written
since, ``unveil.service.documents``), the patch is exactly that change,
encoded once, and the same bytes go to every stream client of that
environment.

What waits for one stream client is bounded in bytes, not in messages: a
client whose waiting messages would weigh more than its budget has fallen
behind and is cut off (its stream ends; on reconnecting it starts again
from the whole snapshot). A large flag written ten times to a thousand
clients that never read therefore costs each of them at most its budget
of references to shared messages, never copies of its own.

Streams belong to an SDK key. When a key is revoked, its streams end: at
once on the node that revoked it, and on the others at the next periodic
check, which asks in one query which of the keys with open streams still
exist.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from unveil.server.snapshots import CachedSnapshot
from unveil.service.flags import FlagService

__all__ = ["HEARTBEAT", "STREAM_BUDGET", "CachedSnapshot", "Hub", "Subscriber"]

log = logging.getLogger("unveil.server.hub")

#: The bytes of messages that may wait for one stream client before it is cut off.
STREAM_BUDGET = 2 << 20
#: What ``Subscriber.next`` gives when nothing came for a heartbeat's time.
HEARTBEAT = b": heartbeat\n\n"


class Subscriber:
    """One stream client: the messages waiting for it, bounded in bytes, and its end.

    Used on its event loop only (the hub reaches it through ``call_soon_threadsafe``).
    """

    __slots__ = (
        "_messages",
        "_wake",
        "budget",
        "ended",
        "environment_id",
        "loop",
        "pending",
        "token",
    )

    def __init__(self, environment_id: int, token: int, budget: int) -> None:
        self.environment_id = environment_id
        self.token = token  # the SDK key's id: revoking it ends this stream
        self.budget = budget
        self.loop = asyncio.get_running_loop()
        self.pending = 0  # bytes waiting, and of the message being sent
        self.ended: str | None = None  # why the stream ends: behind, revoked, gone
        self._messages: deque[bytes] = deque()
        self._wake = asyncio.Event()

    def offer(self, message: bytes) -> bool:
        """Queue a message; False if that would put the client over its budget (it is cut off).

        A client with nothing waiting takes any one message, however large.
        """
        if self.ended is not None:
            return True
        if self.pending and self.pending + len(message) > self.budget:
            self.end("behind")
            return False
        self._messages.append(message)
        self.pending += len(message)
        self._wake.set()
        return True

    def end(self, reason: str) -> None:
        """End the stream: nothing more is sent, what waits is let go."""
        if self.ended is None:
            self.ended = reason
        self._messages.clear()
        self.pending = 0
        self._wake.set()

    def sent(self, message: bytes) -> None:
        """A message from ``next`` has gone out whole."""
        self.pending = max(0, self.pending - len(message))

    async def next(self, heartbeat: float) -> bytes | None:
        """The next message to send, ``HEARTBEAT`` after a quiet while, None once ended."""
        while not self._messages:
            if self.ended is not None:
                return None
            self._wake.clear()
            try:
                async with asyncio.timeout(heartbeat):  # no task per wait, unlike wait_for
                    await self._wake.wait()
            except TimeoutError:
                return HEARTBEAT
        if self.ended is not None:
            return None
        return self._messages.popleft()


@dataclass(slots=True)
class _Environment:
    snapshot: CachedSnapshot
    subscribers: set[Subscriber] = field(default_factory=set)


class Hub:
    """Current snapshots and their subscribers, for one server process."""

    def __init__(
        self,
        flags: FlagService,
        on_publish: Callable[[int, float], None] | None = None,
        check_interval: float = 5.0,
        tokens_alive: Callable[[Collection[int]], Collection[int]] | None = None,
        stream_budget: int = STREAM_BUDGET,
    ) -> None:
        self._flags = flags
        self._on_publish = on_publish
        self._check_interval = check_interval
        self._tokens_alive = tokens_alive
        self._stream_budget = stream_budget
        #: streams ended because their client fell behind, and because their key was revoked
        self.cut_off = 0
        self.revoked_streams = 0
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
        """The environment's snapshot, loaded on first use.

        A write that commits while the first load reads finds no environment
        here to refresh (``changed_here`` skips unknown ones), so after
        installing it the version is checked once more (one small query) and
        anything newer is loaded at once, not at the next periodic check.
        """
        with self._lock:
            known = self._environments.get(environment_id)
        if known is not None:
            return known.snapshot
        loaded = CachedSnapshot.whole(self._flags.loaded(environment_id))
        with self._lock:
            known = self._environments.setdefault(environment_id, _Environment(loaded))
        if known.snapshot is loaded:  # ours was installed: catch a write that raced it
            try:
                self._refresh(environment_id)
            except Exception:  # the periodic check will catch up
                log.exception("refreshing environment %s failed", environment_id)
        with self._lock:
            return self._environments[environment_id].snapshot

    def ready(self, environment_id: int) -> CachedSnapshot:
        """``current``, with its body and ETag made (they are made once per version)."""
        return self.current(environment_id).prepare()

    def subscriber_count(self) -> int:
        with self._lock:
            return sum(len(e.subscribers) for e in self._environments.values())

    # -- following ---------------------------------------------------------------------

    def subscribe(self, environment_id: int, token: int) -> tuple[Subscriber, CachedSnapshot]:
        """A new stream client (of the SDK key with id ``token``) and the snapshot it starts from.

        Call ``current`` first (off the event loop): it may read the database.
        """
        self.current(environment_id)
        subscriber = Subscriber(environment_id, token, self._stream_budget)
        with self._lock:
            environment = self._environments[environment_id]
            environment.subscribers.add(subscriber)
            # the snapshot as of subscribing: later patches are all queued after it
            return subscriber, environment.snapshot

    def unsubscribe(self, subscriber: Subscriber) -> None:
        with self._lock:
            environment = self._environments.get(subscriber.environment_id)
            if environment is not None:
                environment.subscribers.discard(subscriber)

    # -- ending streams -------------------------------------------------------------------

    def revoked(self, token: int) -> None:
        """An SDK key was revoked: end its streams. Safe from any thread."""
        with self._lock:
            ending = [
                s for e in self._environments.values() for s in e.subscribers if s.token == token
            ]
            for environment in self._environments.values():
                environment.subscribers.difference_update(ending)
        self.revoked_streams += len(ending)
        for subscriber in ending:
            subscriber.loop.call_soon_threadsafe(subscriber.end, "revoked")
        if ending:
            log.info("ended %s stream(s) of a revoked SDK key", len(ending))

    def check_tokens(self) -> None:
        """End the streams of keys that no longer exist (revoked through another node)."""
        if self._tokens_alive is None:
            return
        with self._lock:
            tokens = {s.token for e in self._environments.values() for s in e.subscribers}
        if not tokens:
            return
        alive = set(self._tokens_alive(tokens))  # one query for all of them
        for token in tokens - alive:
            self.revoked(token)

    def _cut_off(self, subscribers: list[Subscriber]) -> None:
        """Clients that fell behind leave their environment (their streams are ending)."""
        with self._lock:
            for subscriber in subscribers:
                environment = self._environments.get(subscriber.environment_id)
                if environment is not None:
                    environment.subscribers.discard(subscriber)
        self.cut_off += len(subscribers)
        log.info("cut off %s stream client(s) that fell behind", len(subscribers))

    # -- changing ------------------------------------------------------------------------

    def changed(self, environment_id: int | None) -> None:
        """An environment changed (None: any may have). Safe from any thread."""
        self._pending.put(environment_id if environment_id is not None else -1)

    def changed_here(self, environment_id: int) -> None:
        """A write on this node committed: refresh before the write is answered.

        So a client that wrote and then reads from the same node sees its write.
        The write has left this node's model at the version it committed
        (``UnitOfWork.on_commit``), so the snapshot moves to that model without
        asking the database again; other nodes' later writes come by notice
        and by the periodic check, as ever.
        """
        with self._lock:
            known = environment_id in self._environments
        if known:
            try:
                self._refresh(environment_id, written_here=True)
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
            if -1 in todo:
                try:
                    self.check_tokens()
                except Exception:  # the database may be away: the next check tries again
                    log.exception("checking the keys of open streams failed")
            with self._lock:
                known = list(self._environments)
            targets = known if -1 in todo else [e for e in todo if e in known]
            for environment_id in targets:
                try:
                    self._refresh(environment_id)
                except Exception:  # a failed refresh is retried by the next check
                    log.exception("refreshing environment %s failed", environment_id)

    def _refresh(self, environment_id: int, written_here: bool = False) -> None:
        with self._refreshing:
            self._refresh_locked(environment_id, written_here)

    def _refresh_locked(self, environment_id: int, written_here: bool) -> None:
        started = time.monotonic()
        with self._lock:
            old = self._environments[environment_id].snapshot
        loaded = self._flags.documents.known(environment_id) if written_here else None
        if loaded is None or loaded.version <= old.version:
            loaded = self._flags.loaded(environment_id)  # one query when nothing changed
        if loaded.version <= old.version:
            return  # the periodic check, or a notice of a change already here
        changes = self._flags.documents.changes(environment_id, old.version, loaded.version)
        fresh, sections = old.moved(loaded, changes)
        with self._lock:
            environment = self._environments[environment_id]
            if fresh.version <= environment.snapshot.version:
                return
            environment.snapshot = fresh
            subscribers = list(environment.subscribers)
        patch = {"version": fresh.version, "previous": old.version, **sections}
        message = f"event: patch\nid: {fresh.version}\ndata: {json.dumps(patch)}\n\n".encode()
        by_loop: dict[asyncio.AbstractEventLoop, list[Subscriber]] = {}
        for subscriber in subscribers:
            by_loop.setdefault(subscriber.loop, []).append(subscriber)
        for loop, group in by_loop.items():  # one wake-up per event loop, not per client
            loop.call_soon_threadsafe(self._deliver_all, group, message)
        if self._on_publish is not None:
            self._on_publish(len(subscribers), time.monotonic() - started)

    def _deliver_all(self, subscribers: list[Subscriber], message: bytes) -> None:
        behind = [s for s in subscribers if not s.offer(message)]
        if behind:
            self._cut_off(behind)
