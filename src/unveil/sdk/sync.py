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

Revisions only go forward: once this process holds revision N from the
server, a snapshot or patch of an older revision (a lagging node, a replayed
answer) is ignored, from the stream as from a poll. A disk cache is only a
stand-in from an earlier run: the server's first good snapshot replaces it
even when the cache names a newer revision (the server's database was
restored from a backup), with a warning, so the client becomes ready.

A server that refuses the SDK key (401 or 403) is not polled: the client's
status becomes ``refused``, the log says so, and it asks again after a pause
that starts at 5 s and doubles to 5 minutes.

A second thread sends events in batches and keeps those it could not send,
within the buffer's bound. Nothing in one event or one answer stops either
thread.

The sync talks to its client through ``Receiver`` (install flags, hear of a
status change) and to the network through an httpx transport, which the
application may pass in (``httpx.MockTransport`` drives a client without
sockets).
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import httpx

from unveil.core import FORMAT_VERSION, InvalidDocument
from unveil.core.patch import PatchGap
from unveil.sdk.events import EventBuffer, encode_events

__all__ = ["BadAnswer", "Receiver", "Refused", "Sync", "Transport"]

log = logging.getLogger("unveil.sdk")

_FIRST_PAUSE = 0.5
_LONGEST_PAUSE = 30.0
_FIRST_REFUSED_PAUSE = 5.0
_LONGEST_REFUSED_PAUSE = 300.0
_BATCH = 1_000
#: after a patch the disk cache is written within this many seconds, once for
#: all the patches in between: writing ten thousand flags on every patch would
#: cost the application more than applying the patch
_CACHE_PAUSE = 5.0

#: An httpx transport, or a function that makes one (called again in a forked child).
Transport = httpx.BaseTransport | Callable[[], httpx.BaseTransport]


class BadAnswer(Exception):
    """The server answered something that is not a good snapshot or patch."""


class Refused(Exception):
    """The server refused the SDK key (401 or 403)."""

    def __init__(self, status: int) -> None:
        super().__init__(
            f"the server refused the SDK key ({status}"
            f" {'Unauthorized' if status == 401 else 'Forbidden'}): check sdk_key"
        )
        self.status = status


class Receiver(Protocol):
    """What the sync needs of the client it feeds."""

    def install(self, document: Mapping[str, Any], origin: str, revision: int) -> None:
        """Make these flags the ones in use; raises ``InvalidDocument`` if they are bad."""

    def patch(self, patch: Mapping[str, Any], origin: str, revision: int) -> None:
        """Apply ``patch`` to the flags in use; raises ``PatchGap`` if it follows
        another revision, ``InvalidDocument`` (changing nothing) if it makes them bad."""

    def snapshot(self) -> dict[str, Any] | None:
        """The flags in use with their revision, as the disk cache holds them."""

    def status_changed(self, problem: str | None) -> None:
        """The sync's state changed, or the server said something unusable (``problem``)."""


def _json(text: str | bytes, what: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise BadAnswer(f"{what} is not JSON that can be read") from None


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a snapshot is read and installed.

    Reading ten thousand flags makes hundreds of thousands of objects, none
    of them garbage, and the collector would walk them (with the rest of the
    application's heap) several times on the way: about a third of the time
    of a load. Reference counting still frees whatever is dropped, and the
    collector comes back on after; an application that turned it off keeps it
    off.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class Sync:
    """The background work of one live client."""

    def __init__(
        self,
        receiver: Receiver,
        events: EventBuffer | None,
        *,
        url: str,
        sdk_key: str,
        cache_dir: Path,
        poll_interval: float,
        flush_interval: float,
        timeout: float,
        transport: Transport | None = None,
    ) -> None:
        self._receiver = receiver
        self._events = events
        self._url = url.rstrip("/")
        self._key = sdk_key
        self._cache = cache_dir / (
            hashlib.sha256(f"{url}|{sdk_key}".encode()).hexdigest()[:24] + ".json"
        )
        self._poll_interval = poll_interval
        self._flush_interval = flush_interval
        self._timeout = timeout
        self._transport = transport
        #: the revision installed last, and whether it came from the server (the
        #: flags themselves the client holds, parsed: the raw document is not kept)
        self._revision: int | None = None
        self._from_server = False
        self._etag: str | None = None
        self._cache_pending = False
        self._fresh_state()

    def _fresh_state(self) -> None:
        self._stop = threading.Event()
        self._cache_lock = threading.Lock()
        self._cache_timer: threading.Timer | None = None
        self._response: httpx.Response | None = None
        headers = {"Authorization": f"Bearer {self._key}", "User-Agent": "unveil-python"}
        transport = self._transport
        if transport is not None and not isinstance(transport, httpx.BaseTransport):
            transport = transport()
        if transport is None:  # httpx's own, one for both clients: each loads the TLS roots
            # (a tenth of a second of every start). A plain-HTTP server never negotiates
            # TLS (every request is relative to it, and no redirect is followed), so for
            # one the roots are not loaded at all.
            plain = self._url.lower().startswith("http://")
            transport = httpx.HTTPTransport(verify=not plain)
        self._http = httpx.Client(
            base_url=self._url, headers=headers, timeout=self._timeout, transport=transport
        )
        self._events_http = httpx.Client(
            base_url=self._url, headers=headers, timeout=self._timeout, transport=transport
        )
        self._connected = False
        self._refused: str | None = None
        self._threads = [
            threading.Thread(target=self._follow, name="unveil-sync", daemon=True),
        ]
        if self._events is not None:
            self._threads.append(
                threading.Thread(target=self._send_events, name="unveil-events", daemon=True)
            )

    @property
    def connected(self) -> bool:
        """Whether the stream is open and its snapshot was read."""
        return self._connected

    @property
    def refused(self) -> str | None:
        """Why the server refuses this client's SDK key, while it does."""
        return self._refused

    def _set_connected(self, now: bool) -> None:
        was, self._connected = self._connected, now
        if now:
            self._set_refused(None)
        if was != now:
            self._receiver.status_changed(None)

    def _set_refused(self, problem: str | None) -> None:
        was, self._refused = self._refused, problem
        if problem is not None:
            self._connected = False
        if was != problem:
            self._receiver.status_changed(problem)

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
        timer = self._cache_timer
        if timer is not None:
            timer.cancel()
        self._write_pending_cache()
        try:
            self._flush_events(until_empty=True)
        except Exception:  # closing must not raise over what could not be sent
            log.exception("could not send the last events")
        self._http.close()
        self._events_http.close()

    def restart_after_fork(self) -> None:
        """In a forked child: the parent's threads, locks and connections are not ours.

        Everything with a lock or a socket is made anew (a parent thread may
        have held any of them at the fork); the flags held stay.
        """
        self._fresh_state()
        self.start()

    # -- the disk cache ------------------------------------------------------------------------

    def load_cache(self) -> None:
        """Start from the last good snapshot on disk, if there is one and it is good.

        Whatever is wrong with the file (unreadable, not JSON, nested past
        what the reader takes, not a snapshot) it is ignored with a warning.
        """
        try:
            self._install(self._cache.read_bytes(), origin="cache", what="the disk cache")
        except FileNotFoundError:
            return
        except Exception as exc:
            log.warning("ignoring the disk cache %s: %s", self._cache, exc)

    def _write_cache_soon(self) -> None:
        """Write the flags in use to the cache within ``_CACHE_PAUSE`` seconds (or at stop)."""
        with self._cache_lock:
            self._cache_pending = True
            if self._cache_timer is None:
                timer = threading.Timer(_CACHE_PAUSE, self._write_pending_cache)
                timer.daemon = True
                timer.name = "unveil-cache"
                self._cache_timer = timer
                timer.start()

    def _write_pending_cache(self) -> None:
        with self._cache_lock:
            pending, self._cache_pending, self._cache_timer = self._cache_pending, False, None
            data = self._receiver.snapshot() if pending else None
            if data is not None:
                self._write_file(json.dumps(data).encode())  # dumps: C; dump writes in Python

    def _write_cache(self, text: str | bytes) -> None:
        """Write a snapshot the server sent, as it sent it (it is what a reading of the cache
        gives); a patch's write still waiting is dropped (this one is newer)."""
        with self._cache_lock:
            self._cache_pending = False
            self._write_file(text.encode() if isinstance(text, str) else text)

    def _write_file(self, content: bytes) -> None:
        try:
            self._cache.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=self._cache.parent, prefix=".unveil-")
            with os.fdopen(fd, "wb") as out:
                out.write(content)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self._cache)  # readers see the old file or the new, whole
        except OSError as exc:
            log.warning("could not write the disk cache %s: %s", self._cache, exc)

    # -- installing what the server sent ---------------------------------------------------------

    def _install(self, text: str | bytes, origin: str, what: str = "the snapshot") -> None:
        """Read a snapshot's JSON text and install it; a server's goes to the disk cache too."""
        with _collector_paused():
            installed = self._install_data(_json(text, what), origin)
        if installed and origin == "server":
            self._write_cache(text)

    def _install_data(self, data: object, origin: str) -> bool:
        """Install a snapshot's data; False when it is older than what is in use (ignored)."""
        if not isinstance(data, dict):
            raise BadAnswer("a snapshot must be a JSON object")
        revision = data.get("revision")
        if revision.__class__ is not int or data.get("version") != FORMAT_VERSION:
            raise BadAnswer(f"not a format-{FORMAT_VERSION} snapshot with a revision")
        held = self._revision
        if origin == "server" and held is not None:
            if self._from_server and revision < held:
                log.info(
                    "ignoring revision %d from the server: revision %d is in use", revision, held
                )
                return False
            if not self._from_server and revision < held:
                log.warning(
                    "the server is at revision %d, older than the disk cache's %d "
                    "(was its database restored?); following the server",
                    revision,
                    held,
                )
        document = {k: v for k, v in data.items() if k != "revision"}
        try:
            self._receiver.install(document, origin=origin, revision=revision)
        except InvalidDocument as exc:
            raise BadAnswer(f"the flags are not valid: {exc}") from None
        self._revision = revision
        if origin == "server":
            self._from_server = True
        return True

    def _check(self, response: httpx.Response, what: str) -> None:
        if response.status_code in (401, 403):
            raise Refused(response.status_code)
        if response.status_code != 200:
            raise BadAnswer(f"{what} answered {response.status_code}")

    def _fetch_snapshot(self) -> None:
        headers = {"If-None-Match": self._etag} if self._etag else {}
        response = self._http.get("/sdk/v1/snapshot", headers=headers)
        if response.status_code == 304:
            self._set_refused(None)
            return
        self._check(response, "the snapshot")
        self._set_refused(None)
        self._install(response.content, origin="server")
        self._etag = response.headers.get("etag")

    # -- following the stream ----------------------------------------------------------------------

    def _follow(self) -> None:
        pause = _FIRST_PAUSE
        refused_pause = _FIRST_REFUSED_PAUSE
        while not self._stop.is_set():
            try:
                self._read_stream()
                pause = _FIRST_PAUSE  # it ran and ended: come back soon
            except Refused as exc:
                if self._stop.is_set():
                    return
                wait = random.uniform(refused_pause / 2, refused_pause)  # noqa: S311
                log.warning("%s; asking again in %.0f s", exc, wait)
                self._set_refused(str(exc))
                refused_pause = min(refused_pause * 2, _LONGEST_REFUSED_PAUSE)
                self._stop.wait(wait)
                continue  # no poll: it would be refused as well
            except BadAnswer as exc:  # the server said something we cannot use
                if self._stop.is_set():
                    return
                log.warning("bad answer from the server (%s); keeping the flags in use", exc)
                self._receiver.status_changed(str(exc))
            except Exception as exc:  # broken: poll, then retry
                if self._stop.is_set():
                    return
                log.info("stream unavailable (%s); polling", exc)
            refused_pause = _FIRST_REFUSED_PAUSE
            self._set_connected(False)
            try:
                self._fetch_snapshot()
            except Refused as exc:
                log.warning("%s", exc)
                self._set_refused(str(exc))
            except BadAnswer as exc:
                log.warning("bad snapshot from the server (%s); keeping the flags in use", exc)
                self._receiver.status_changed(str(exc))
            except Exception as exc:
                log.info("snapshot unavailable (%s)", exc)
            wait = random.uniform(pause / 2, pause)  # noqa: S311 - jitter, not secrecy
            pause = min(pause * 2, _LONGEST_PAUSE)
            self._stop.wait(min(wait, self._poll_interval))

    def _read_stream(self) -> None:
        timeout = httpx.Timeout(self._timeout, read=60.0)  # heartbeats come every 15 s
        with self._http.stream("GET", "/sdk/v1/stream", timeout=timeout) as response:
            self._check(response, "the stream")
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
        if name == "snapshot":
            self._set_connected(True)  # before installing: "ready" is never seen as "stale"
            self._install(data, origin="server", what="a snapshot event")
            return
        payload = _json(data, f"a {name} event")
        if name == "patch":
            self._apply(payload)

    def _apply(self, patch: object) -> None:
        held = self._revision
        if not isinstance(patch, dict) or held is None:
            self._fetch_snapshot()
            return
        version = patch.get("version")
        if version.__class__ is not int:
            raise BadAnswer("a patch without a whole-number version")
        if version <= held and self._from_server:
            return  # already have it, or older than what we hold
        if not self._from_server:
            self._fetch_snapshot()  # a patch does not follow a cached document
            return
        try:
            self._receiver.patch(patch, origin="server", revision=version)
        except PatchGap:
            self._etag = None
            self._fetch_snapshot()  # missed something: the whole snapshot, not a guess
            return
        except InvalidDocument as exc:
            raise BadAnswer(f"the flags are not valid: {exc}") from None
        self._revision = version
        self._write_cache_soon()

    # -- sending events --------------------------------------------------------------------

    def _send_events(self) -> None:
        buffer = self._events
        if buffer is None:
            return
        pause = self._flush_interval
        window_started = time.monotonic()
        while not self._stop.wait(pause):
            try:
                sent = self._flush_events()
            except Exception:  # nothing in one batch may stop the sender
                log.exception("sending events failed")
                sent = False
            pause = self._flush_interval if sent else min(pause * 2, 60.0)
            if time.monotonic() - window_started > buffer.window:
                buffer.new_window()  # each key reports again
                window_started = time.monotonic()

    def _flush_events(self, until_empty: bool = False) -> bool:
        """Send what is waiting; False if the server could not take it (kept for later)."""
        buffer = self._events
        if buffer is None:
            return True
        while True:
            batch = buffer.take(_BATCH)
            if not batch:
                return True
            body, kept = encode_events(batch)
            if len(kept) < len(batch):
                buffer.count_dropped(len(batch) - len(kept))
                log.warning("dropped %d events that could not be encoded", len(batch) - len(kept))
                batch = kept
            try:
                response = self._events_http.post(
                    "/sdk/v1/events", content=body, headers={"Content-Type": "application/json"}
                )
            except httpx.HTTPError:
                buffer.give_back(batch)
                return False
            if response.status_code == 429 or response.status_code >= 500:
                buffer.give_back(batch)
                return False
            if response.status_code in (401, 403):
                log.warning("%s; %d events dropped", Refused(response.status_code), len(batch))
            elif response.status_code != 202:
                log.warning("the server refused %d events: %s", len(batch), response.text[:200])
            if not until_empty and buffer.pending() < _BATCH:
                return True
