"""The SDK side of an unveil server, in memory, behind ``httpx.MockTransport``.

It speaks the protocol of /sdk/v1 as docs/api.md describes it (a snapshot
with ETag and 304, a stream of a snapshot, patches and heartbeats, an events
intake answering 202), and lets a test decide what it answers: a refused
key, an older revision, a broken stream. The real server is tested against
the SDK in test_live_client.py; this one drives the SDK into the corners a
real server does not reach on demand.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from unveil.core.patch import diff_documents

HEARTBEAT = 0.05  # seconds between heartbeats: what lets a stopping client leave its read


class MemoryServer:
    """One environment's flags, served to SDK clients through ``transport()``."""

    def __init__(self, flags: dict[str, Any] | None = None, revision: int = 1) -> None:
        self._lock = threading.Condition()
        self.document: dict[str, Any] = {"version": 1, "flags": flags or {}, "segments": {}}
        self.revision = revision
        #: when set, every request is answered with this status (401: a refused key)
        self.refuse: int | None = None
        #: when set, GET /sdk/v1/snapshot answers this snapshot instead of the current one
        self.polled: dict[str, Any] | None = None
        #: when set, the stream opens with this snapshot instead of the current one
        self.streamed: dict[str, Any] | None = None
        self.requests: list[str] = []
        self.events: list[dict[str, Any]] = []
        self._streams: list[queue.Queue[bytes | None]] = []
        self.closed = False

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    # -- what the test does -------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {**self.document, "revision": self.revision}

    def publish(self, flags: dict[str, Any]) -> int:
        """Change some flags (None removes one) and send the patch down every stream."""
        with self._lock:
            old = self.document
            merged = {**old["flags"], **flags}
            new = {**old, "flags": {k: v for k, v in merged.items() if v is not None}}
            patch = diff_documents(old, new, self.revision, self.revision + 1)
            self.document, self.revision = new, self.revision + 1
            message = f"event: patch\ndata: {json.dumps(patch)}\n\n".encode()
            for stream in self._streams:
                stream.put(message)
            return self.revision

    def break_streams(self) -> None:
        """End every open stream, as a restarted node or a cut connection would."""
        with self._lock:
            for stream in self._streams:
                stream.put(None)
            self._streams.clear()

    def wait_for(self, condition: Callable[[], bool], timeout: float = 10) -> bool:
        """Wait until ``condition()`` holds, re-checked on every request the server hears."""
        with self._lock:
            return self._lock.wait_for(condition, timeout)

    def count(self, request: str) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r == request)

    def close(self) -> None:
        with self._lock:
            self.closed = True
        self.break_streams()

    # -- the protocol -----------------------------------------------------------------------

    def _handle(self, request: httpx.Request) -> httpx.Response:
        line = f"{request.method} {request.url.path}"
        with self._lock:
            self.requests.append(line)
            self._lock.notify_all()
            if self.closed:
                return httpx.Response(503)
            if self.refuse is not None:
                return httpx.Response(self.refuse, json={"error": "unauthorized"})
            if request.headers.get("authorization", "").startswith("Bearer ") is False:
                return httpx.Response(401)
            if line == "GET /sdk/v1/snapshot":
                body = self.polled or {**self.document, "revision": self.revision}
                etag = f'"{body["revision"]}"'
                if request.headers.get("if-none-match") == etag:
                    return httpx.Response(304, headers={"ETag": etag})
                return httpx.Response(200, json=body, headers={"ETag": etag})
            if line == "GET /sdk/v1/stream":
                first = self.streamed or {**self.document, "revision": self.revision}
                stream: queue.Queue[bytes | None] = queue.Queue()
                self._streams.append(stream)
                return httpx.Response(
                    200,
                    headers={"Content-Type": "text/event-stream"},
                    content=self._stream(first, stream),
                )
            if line == "POST /sdk/v1/events":
                batch = json.loads(request.content)
                self.events.extend(batch["events"])
                self._lock.notify_all()
                return httpx.Response(202, json={"accepted": len(batch["events"])})
        return httpx.Response(404)

    def _stream(
        self, first: dict[str, Any], messages: queue.Queue[bytes | None]
    ) -> Iterator[bytes]:
        yield f"event: snapshot\ndata: {json.dumps(first)}\n\n".encode()
        while True:
            try:
                message = messages.get(timeout=HEARTBEAT)
            except queue.Empty:
                yield b": heartbeat\n\n"
                continue
            if message is None:
                return
            yield message
