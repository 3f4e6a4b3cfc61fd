"""The application's handle on its flags.

``Client(url, sdk_key)`` keeps a live copy of an environment's flags: it
fetches the snapshot, follows the server's stream of patches, and evaluates
locally, in microseconds, without ever waiting on the network or raising.
``Client.from_file(path)`` does the same from a flags file, offline.

Resilience, in order of preference: the server's current flags; the last
good snapshot, kept in memory and written to a disk cache; a bootstrap file
the application ships. Nothing the server says replaces good flags unless it
is itself a good snapshot.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from unveil.core import Evaluation, Ruleset, parse_document
from unveil.sdk.events import EventBuffer

__all__ = ["Client"]

ChangeCallback = Callable[[set[str]], None]
StatusCallback = Callable[[str, str | None], None]


class Client:
    """Evaluates flags for contexts; ``key`` in a context is its targeting key.

    With a ``url`` and ``sdk_key`` it syncs with a server in the background
    (see ``unveil.sdk.sync``); without, it holds the flags it was given.
    Thread-safe, and fork-safe: a client created before a fork restarts its
    background work in the child.
    """

    def __init__(
        self,
        url: str | None = None,
        sdk_key: str | None = None,
        *,
        cache_dir: str | Path | None = None,
        bootstrap: str | Path | Mapping[str, Any] | None = None,
        events: bool = True,
        poll_interval: float = 30.0,
        flush_interval: float = 2.0,
        event_capacity: int = 10_000,
        timeout: float = 10.0,
    ) -> None:
        self._ruleset = Ruleset(parse_document({}))
        self._source: str | Path | None = None
        self._origin = "none"
        self._revision: int | None = None
        self._listeners: list[ChangeCallback] = []
        self._status_listeners: list[StatusCallback] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.events = EventBuffer(event_capacity) if events and url else None
        self._sync: Any = None
        if bootstrap is not None:
            self._install(_document_from(bootstrap), origin="bootstrap")
        if url is not None:
            if not sdk_key:
                raise ValueError("a client of a server needs an sdk_key")
            from unveil.sdk.sync import Sync  # the network code, only for live clients

            self._sync = Sync(
                self,
                url=url,
                sdk_key=sdk_key,
                cache_dir=Path(cache_dir) if cache_dir is not None else _default_cache(),
                poll_interval=poll_interval,
                flush_interval=flush_interval,
                timeout=timeout,
            )
            self._sync.load_cache()
            self._sync.start()
            _live_clients.add(self)

    # -- offline ------------------------------------------------------------------------

    @classmethod
    def from_file(cls, source: str | Path | Mapping[str, Any]) -> Client:
        """A client over a flags file (YAML or JSON) or the same data as a dict.

        Raises ``InvalidDocument`` with every problem if the flags are bad.
        """
        client = cls(events=False)
        client._install(_document_from(source), origin="file")
        if not isinstance(source, Mapping):
            client._source = source
        return client

    def reload(self) -> None:
        """Read the file again. A bad file raises and the old flags stay in use."""
        if self._source is not None:
            self._install(_document_from(self._source), origin="file")

    # -- state ----------------------------------------------------------------------------

    @property
    def ruleset(self) -> Ruleset:
        """The flags this client evaluates now."""
        return self._ruleset

    @property
    def origin(self) -> str:
        """Where the flags in use came from: server, cache, bootstrap, file or none."""
        return self._origin

    @property
    def revision(self) -> int | None:
        """The server's version of the flags in use, when they came from a server."""
        return self._revision

    @property
    def is_ready(self) -> bool:
        """Whether the flags in use came from the server (or a file, offline)."""
        return self._ready.is_set()

    @property
    def status(self) -> str:
        """ready (live), stale (serving cached or last known flags), or not_ready."""
        if self._sync is None:
            return "ready" if self._ready.is_set() else "not_ready"
        if self._sync.connected and self._origin == "server":
            return "ready"
        return "stale" if self._origin != "none" else "not_ready"

    def wait_until_ready(self, timeout: float | None = None) -> bool:
        """Block until flags came from the server (True), or the timeout passed (False)."""
        return self._ready.wait(timeout)

    def on_change(self, callback: ChangeCallback) -> None:
        """Call ``callback(changed_flag_keys)`` from the sync thread when flags change."""
        self._listeners.append(callback)

    def on_status(self, callback: StatusCallback) -> None:
        """Call ``callback(status, problem)`` when the status changes, or the server
        answers something unusable (``problem`` then says what)."""
        self._status_listeners.append(callback)

    def _status_changed(self, problem: str | None) -> None:
        for listener in list(self._status_listeners):
            try:
                listener(self.status, problem)
            except Exception:  # a listener's bug must not stop the sync
                logging.getLogger("unveil.sdk").exception("on_status callback failed")

    # -- evaluation ------------------------------------------------------------------------

    def value(self, key: str, context: object = None, default: Any = None) -> Any:
        """The flag's value for this context, or ``default`` if it cannot be had."""
        return self._ruleset.value(key, context, default)

    def enabled(self, key: str, context: object = None, default: bool = False) -> bool:
        """Whether the flag is on for this context."""
        return self._ruleset.enabled(key, context, default)

    def evaluate(self, key: str, context: object = None, default: Any = None) -> Evaluation:
        """Value, variant, reason and error code for this context."""
        return self._ruleset.evaluate(key, context, default)

    def track(
        self, metric: str, context: Mapping[str, Any] | None = None, value: float = 1.0
    ) -> None:
        """Record a metric (an error, a latency, a conversion) for a context."""
        if self.events is not None:
            self.events.track(metric, context, value)

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop syncing and send the events still waiting."""
        if self._sync is not None:
            self._sync.stop()
            _live_clients.discard(self)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- used by the sync --------------------------------------------------------------------

    def _install(
        self, document_data: Mapping[str, Any], origin: str, revision: int | None = None
    ) -> set[str]:
        """Make these flags the ones in use; returns the keys that changed.

        Raises ``InvalidDocument`` (and changes nothing) if they are bad.
        """
        document = parse_document(document_data)
        observer = self.events.exposure if self.events is not None else None
        ruleset = Ruleset(document, observer)
        with self._lock:
            old = self._ruleset.document
            self._ruleset = ruleset  # one reference swap: readers see old or new, whole
            self._origin = origin
            self._revision = revision
        changed = {
            key
            for key in set(old.flags) | set(document.flags)
            if old.flags.get(key) != document.flags.get(key)
        }
        if origin in ("server", "file"):
            self._ready.set()
        if changed and old.flags:
            for listener in list(self._listeners):
                try:
                    listener(changed)
                except Exception:  # a listener's bug must not stop the sync
                    logging.getLogger("unveil.sdk").exception("on_change callback failed")
        return changed

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        if self.events is not None:
            self.events.forget()
        if self._sync is not None:
            self._sync.restart_after_fork()


def _document_from(source: str | Path | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(source, Mapping):
        return source
    # the YAML reader is imported only by applications that read files
    from unveil.core import document_to_data
    from unveil.sdk.files import load_document

    return document_to_data(load_document(source))


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "unveil"


# Every live client, so that a forked child can restart their background work.
_live_clients: weakref.WeakSet[Client] = weakref.WeakSet()


def _restart_in_child() -> None:
    for client in list(_live_clients):
        client._after_fork_in_child()


os.register_at_fork(after_in_child=_restart_in_child)
