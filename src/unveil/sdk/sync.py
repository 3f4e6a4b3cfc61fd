"""Keeping a client's flags in step with the server, in the background.

One thread follows ``/sdk/v1/stream``: the snapshot on connect, then
patches, each applied only to the version it names (anything else is a gap,
and the whole snapshot is fetched again). When the stream breaks the thread
polls the snapshot (with its ETag, so an unchanged one costs a 304) and
tries the stream again after a jittered, growing pause (0.5 s doubling to
30 s). Every good snapshot is written atomically to a disk cache, from which
a client starts when the server is away. Anything the server sends that is
not a good snapshot (garbage, another format version, an error) is logged
and ignored: the flags in use stay.

A second thread sends events in batches and keeps those it could not send,
within the buffer's bound.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from unveil.core import FORMAT_VERSION, InvalidDocument
from unveil.core.patch import PatchGap, apply_patch

if TYPE_CHECKING:
    from unveil.sdk.client import Client

__all__ = ["BadAnswer", "Sync"]

log = logging.getLogger("unveil.sdk")

_FIRST_PAUSE = 0.5
_LONGEST_PAUSE = 30.0
_BATCH = 1_000


class BadAnswer(Exception):
    """The server answered something that is not a good snapshot or patch."""


class Sync:
    """The background work of one live client."""

    def __init__(
        self,
        client: Client,
        *,
        url: str,
        sdk_key: str,
        cache_dir: Path,
        poll_interval: float,
        flush_interval: float,
        timeout: float,
    ) -> None:
        self._client = client
        self._url = url.rstrip("/")
        self._key = sdk_key
        self._cache = cache_dir / (
            hashlib.sha256(f"{url}|{sdk_key}".encode()).hexdigest()[:24] + ".json"
        )
        self._poll_interval = poll_interval
        self._flush_interval = flush_interval
        self._timeout = timeout
        self._fresh_state()

    def _fresh_state(self) -> None:
        self._stop = threading.Event()
        self._document: dict[str, Any] | None = None
        self._etag: str | None = None
        self._response: httpx.Response | None = None
        headers = {"Authorization": f"Bearer {self._key}", "User-Agent": "unveil-python"}
        self._http = httpx.Client(base_url=self._url, headers=headers, timeout=self._timeout)
        self._events_http = httpx.Client(base_url=self._url, headers=headers, timeout=self._timeout)
        self._connected = False
        self._threads = [
            threading.Thread(target=self._follow, name="unveil-sync", daemon=True),
        ]
        if self._client.events is not None:
            self._threads.append(
                threading.Thread(target=self._send_events, name="unveil-events", daemon=True)
            )

    @property
    def connected(self) -> bool:
        return self._connected

    @connected.setter
    def connected(self, now: bool) -> None:
        was, self._connected = self._connected, now
        if was != now:
            self._client._status_changed(None)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            response.close()  # wakes the stream thread out of its read
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=self._timeout)
        self._flush_events(until_empty=True)
        self._http.close()
        self._events_http.close()

    def restart_after_fork(self) -> None:
        """In a forked child: the parent's threads and connections are not ours; start anew."""
        document, etag = self._document, self._etag
        self._fresh_state()  # new connections; the inherited ones belong to the parent
        self._document, self._etag = document, etag
        self.start()

    # -- the disk cache ------------------------------------------------------------------------

    def load_cache(self) -> None:
        """Start from the last good snapshot on disk, if there is one and it is good."""
        try:
            data = json.loads(self._cache.read_text(encoding="utf-8"))
            self._install(data, origin="cache")
        except FileNotFoundError:
            return
        except (OSError, ValueError, BadAnswer, InvalidDocument) as exc:
            log.warning("ignoring the disk cache %s: %s", self._cache, exc)

    def _write_cache(self, data: dict[str, Any]) -> None:
        try:
            self._cache.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=self._cache.parent, prefix=".unveil-")
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self._cache)  # readers see the old file or the new, whole
        except OSError as exc:
            log.warning("could not write the disk cache %s: %s", self._cache, exc)

    # -- installing what the server sent ---------------------------------------------------------

    def _install(self, data: object, origin: str) -> None:
        if not isinstance(data, dict):
            raise BadAnswer("a snapshot must be a JSON object")
        revision = data.get("revision")
        if revision.__class__ is not int or data.get("version") != FORMAT_VERSION:
            raise BadAnswer(f"not a format-{FORMAT_VERSION} snapshot with a revision")
        current = self._client.revision
        if origin == "server" and current is not None and revision < current and self.connected:
            return  # an older answer than what we hold (another node lagging): keep ours
        document = {k: v for k, v in data.items() if k != "revision"}
        self._client._install(document, origin=origin, revision=revision)
        self._document = document
        if origin == "server":
            self._write_cache(data)

    def _fetch_snapshot(self) -> None:
        headers = {"If-None-Match": self._etag} if self._etag else {}
        response = self._http.get("/sdk/v1/snapshot", headers=headers)
        if response.status_code == 304:
            return
        if response.status_code != 200:
            raise BadAnswer(f"the snapshot answered {response.status_code}")
        try:
            data = response.json()
        except ValueError:
            raise BadAnswer("the snapshot is not JSON") from None
        self._install(data, origin="server")
        self._etag = response.headers.get("etag")

    # -- following the stream ----------------------------------------------------------------------

    def _follow(self) -> None:
        pause = _FIRST_PAUSE
        while not self._stop.is_set():
            try:
                self._read_stream()
                pause = _FIRST_PAUSE  # it ran and ended: come back soon
            except BadAnswer as exc:  # the server said something we cannot use
                if self._stop.is_set():
                    return
                log.warning("bad answer from the server (%s); keeping the flags in use", exc)
                self._client._status_changed(str(exc))
            except Exception as exc:  # broken or refused: poll, then retry
                if self._stop.is_set():
                    return
                log.info("stream unavailable (%s); polling", exc)
            self.connected = False
            try:
                self._fetch_snapshot()
            except BadAnswer as exc:
                log.warning("bad snapshot from the server (%s); keeping the flags in use", exc)
                self._client._status_changed(str(exc))
            except Exception as exc:
                log.info("snapshot unavailable (%s)", exc)
            wait = random.uniform(pause / 2, pause)  # noqa: S311 - jitter, not secrecy
            pause = min(pause * 2, _LONGEST_PAUSE)
            self._stop.wait(min(wait, self._poll_interval))

    def _read_stream(self) -> None:
        timeout = httpx.Timeout(self._timeout, read=60.0)  # heartbeats come every 15 s
        with self._http.stream("GET", "/sdk/v1/stream", timeout=timeout) as response:
            if response.status_code != 200:
                raise BadAnswer(f"the stream answered {response.status_code}")
            self._response = response
            try:
                name, data = "message", []
                for line in response.iter_lines():
                    if self._stop.is_set():
                        return
                    if line.startswith("event:"):
                        name = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif line == "" and data:
                        self._on_event(name, "".join(data))
                        name, data = "message", []
            finally:
                self._response = None

    def _on_event(self, name: str, data: str) -> None:
        try:
            payload = json.loads(data)
        except ValueError:
            raise BadAnswer(f"a {name} event that is not JSON") from None
        if name == "snapshot":
            self.connected = True  # before installing, so that "ready" is never seen as "stale"
            self._install(payload, origin="server")
        elif name == "patch":
            self._apply(payload)

    def _apply(self, patch: object) -> None:
        current = self._client.revision
        if (
            not isinstance(patch, dict)
            or self._document is None
            or current is None
            or self._client.origin != "server"
        ):
            self._fetch_snapshot()
            return
        if patch.get("version", 0) <= current:
            return  # already have it
        try:
            document = apply_patch(self._document, current, patch)
        except PatchGap:
            self._etag = None
            self._fetch_snapshot()  # missed something: the whole snapshot, not a guess
            return
        self._install({**document, "revision": patch["version"]}, origin="server")

    # -- sending events --------------------------------------------------------------------

    def _send_events(self) -> None:
        pause = self._flush_interval
        window_started = time.monotonic()
        while not self._stop.wait(pause):
            pause = self._flush_interval if self._flush_events() else min(pause * 2, 60.0)
            buffer = self._client.events
            if buffer is not None and time.monotonic() - window_started > buffer.window:
                self._client.ruleset.forget_seen()  # a new window: each key reports again
                buffer.new_window()
                window_started = time.monotonic()

    def _flush_events(self, until_empty: bool = False) -> bool:
        """Send what is waiting; False if the server could not take it (kept for later)."""
        buffer = self._client.events
        if buffer is None:
            return True
        while True:
            batch = buffer.take(_BATCH)
            if not batch:
                return True
            try:
                response = self._events_http.post("/sdk/v1/events", json={"events": batch})
            except httpx.HTTPError:
                buffer.give_back(batch)
                return False
            if response.status_code == 429 or response.status_code >= 500:
                buffer.give_back(batch)
                return False
            if response.status_code != 202:
                log.warning("the server refused %d events: %s", len(batch), response.text[:200])
            if not until_empty and buffer.pending() < _BATCH:
                return True
