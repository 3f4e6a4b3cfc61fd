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
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from unveil.core import Evaluation, Ruleset, document_to_data, parse_document
from unveil.core.incremental import whole_patched
from unveil.core.patch import PatchGap
from unveil.sdk.events import EventBuffer, targeting_key
from unveil.sdk.experiment import Laboratory, Trial, as_context, dark_launch
from unveil.sdk.timing import Timer, timed

if TYPE_CHECKING:
    from collections.abc import Awaitable, Iterable

    from unveil.sdk.experiment import Compare, Ignore, Redact
    from unveil.sdk.sync import Sync, Transport

__all__ = ["Client"]

log = logging.getLogger("unveil.sdk")
#: how many experiments' plain settings a client keeps checked
_KEPT_TRIALS = 1024
P = ParamSpec("P")
R = TypeVar("R")

ChangeCallback = Callable[[set[str]], None]
StatusCallback = Callable[[str, str | None], None]


class Client:
    """Evaluates flags for contexts; ``key`` in a context is its targeting key.

    With a ``url`` and ``sdk_key`` it syncs with a server in the background
    (see ``unveil.sdk.sync``); without, it holds the flags it was given.
    ``transport`` is the httpx transport it talks through (default: httpx's
    own, over sockets); an ``httpx.MockTransport`` drives it without a
    network, and a function that returns a transport is called again in a
    forked child, so that the child has connections of its own.

    Thread-safe, and fork-safe: a client created before a fork restarts its
    background work in the child, with new locks.
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
        transport: Transport | None = None,
        redact: Redact | None = None,
        experiment_workers: int = 2,
        experiment_capacity: int = 64,
    ) -> None:
        if experiment_workers < 1 or experiment_capacity < experiment_workers:
            raise ValueError(
                "experiment_workers must be at least 1 and experiment_capacity at least as many"
            )
        if redact is not None and not callable(redact):
            raise TypeError(f"redact: must be callable, not {type(redact).__name__}")
        self._redact = redact
        self._experiment_pool = (experiment_workers, experiment_capacity)
        self._laboratory: Laboratory | None = None
        self._trials: dict[tuple[str, float, str], Trial] = {}
        self._ruleset = Ruleset(parse_document({}))
        self._source: str | Path | None = None
        self._origin = "none"
        self._revision: int | None = None
        self._listeners: list[ChangeCallback] = []
        self._status_listeners: list[StatusCallback] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        #: exposures and metrics waiting to be sent (None when events are off)
        self.events = EventBuffer(event_capacity) if events and url else None
        self._seen = self.events.seen if self.events is not None else None
        self._sync: Sync | None = None
        if bootstrap is not None:
            self._install(_document_from(bootstrap), origin="bootstrap")
        if url is not None:
            if not sdk_key:
                raise ValueError("a client of a server needs an sdk_key")
            from unveil.sdk.sync import Sync  # the network code, only for live clients

            self._sync = Sync(
                _Receiver(self),
                self.events,
                url=url,
                sdk_key=sdk_key,
                cache_dir=Path(cache_dir) if cache_dir is not None else _default_cache(),
                poll_interval=poll_interval,
                flush_interval=flush_interval,
                timeout=timeout,
                transport=transport,
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
        """ready (live), stale (serving cached or last known flags), not_ready, or
        refused (the server refuses the SDK key: 401 or 403; see ``problem``)."""
        sync = self._sync
        if sync is None:
            return "ready" if self._ready.is_set() else "not_ready"
        if sync.refused is not None:
            return "refused"
        if sync.connected and self._origin == "server":
            return "ready"
        return "stale" if self._origin != "none" else "not_ready"

    @property
    def problem(self) -> str | None:
        """Why the server refuses this client, while it does (the status is then refused)."""
        return self._sync.refused if self._sync is not None else None

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
                log.exception("on_status callback failed")

    # -- evaluation ------------------------------------------------------------------------

    # With events on, each answer is checked against what was already reported
    # (events.seen: flag -> variant -> keys) inline, in one expression: only a
    # first sighting calls into the buffer. A missing flag or variant there
    # (KeyError) or a key that cannot be in a set (TypeError) is a first
    # sighting too; the buffer sorts it out under its lock.

    def value(self, key: str, context: object = None, default: Any = None) -> Any:
        """The flag's value for this context, or ``default`` if it cannot be had."""
        seen = self._seen
        if seen is None:
            return self._ruleset.value(key, context, default)
        result = self._ruleset.answer(key, context, default)
        if result is None:
            return default
        try:
            who = context.get("key") if context.__class__ is dict else targeting_key(context)
            if who not in seen[key][result.variant]:
                self.events.exposure(key, result.variant, who)  # type: ignore[union-attr]
        except (KeyError, TypeError):
            self.events.exposure(key, result.variant, targeting_key(context))  # type: ignore[union-attr]
        return result.value

    def enabled(self, key: str, context: object = None, default: bool = False) -> bool:
        """Whether the flag is on for this context (see ``Ruleset.enabled``)."""
        seen = self._seen
        ruleset = self._ruleset
        if seen is None:
            return ruleset.enabled(key, context, default)
        result = ruleset.answer(key, context)
        if result is None:
            return default
        try:
            who = context.get("key") if context.__class__ is dict else targeting_key(context)
            if who not in seen[key][result.variant]:
                self.events.exposure(key, result.variant, who)  # type: ignore[union-attr]
        except (KeyError, TypeError):
            self.events.exposure(key, result.variant, targeting_key(context))  # type: ignore[union-attr]
        return ruleset.is_on(result)

    def evaluate(self, key: str, context: object = None, default: Any = None) -> Evaluation:
        """Value, variant, reason and error code for this context."""
        result = self._ruleset.evaluate(key, context, default)
        if self.events is not None and result.error_code is None:
            self.events.exposure(key, result.variant, targeting_key(context))
        return result

    def track(self, metric: str, context: object = None, value: float = 1.0) -> None:
        """Record a metric (an error, a latency, a conversion) for a context.

        ``context`` is a context mapping or simply its targeting key
        (``track("checkout_error", user.id)``). Never raises: a metric that
        cannot be sent (a name that is not 1 to 200 printable characters, a
        value that is not a finite number) is refused with a logged warning
        and counted in ``events.refused``.
        """
        if self.events is not None:
            self.events.track(metric, context, value)

    def timer(self, metric: str, context: object = None, errors: str | None = "errors") -> Timer:
        """``with client.timer("latency_ms", user): ...`` tracks the block's milliseconds.

        An exception in the block also counts one error under ``errors``
        (see ``unveil.sdk.timing``).
        """
        return Timer(self.track, metric, context, errors)

    def timed(
        self, metric: str, context: object = None, errors: str | None = "errors"
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """A decorator that times every call; ``context`` may be a function of its arguments."""
        return timed(self.track, metric, context, errors)

    def count_error(self, context: object = None, metric: str = "errors") -> None:
        """Count one error for a context (what a rate guard compares per exposure)."""
        self.track(metric, context, 1.0)

    # -- dark launches (see unveil.sdk.experiment) -------------------------------------------

    def experiment(
        self,
        name: str,
        context: object,
        *,
        control: Callable[[], R],
        candidate: Callable[[], Any],
        compare: Compare | None = None,
        clean: Callable[[Any], Any] | None = None,
        ignore: Iterable[Ignore] = (),
        timeout: float = 1.0,
        mode: str = "background",
        redact: Redact | None = None,
    ) -> R:
        """Run ``control`` for the caller and, dark, ``candidate`` beside it; compare; report.

        Returns what ``control()`` returns, or raises what it raises, as if
        the experiment were not there. The candidate runs when the flag
        ``name`` is on for ``context`` (what ``enabled(name, context)``
        says: a boolean flag's value, any other kind's variant not being its
        off variant; a text context is its targeting key), so the share of
        contexts is the flag's rollout, sticky per context; a missing flag
        or 0% never calls the candidate. The flag's answer here is not
        reported as an exposure: the user sees the control either way.
        Whatever the candidate does (raise, hang past ``timeout`` seconds,
        return anything) is counted, never raised.

        ``mode="background"`` (default) runs the candidate after the control
        on a small pool of worker threads (skipped and counted when full);
        ``"inline"`` runs both on this thread in random order. ``clean`` is
        applied to both values before ``compare`` (default ``==``); each
        ``ignore`` predicate ``(control, candidate) -> bool`` may accept a
        difference (counted as ignored). ``redact`` (default: the client's)
        is applied to every mismatch example before it is queued.
        Bad options raise ``ValueError``/``TypeError`` before anything runs.
        """
        trial = self._trial(name, compare, clean, ignore, timeout, mode, redact)
        if not self._ruleset.enabled(name, as_context(context)):
            return control()
        return self._lab().run(trial, targeting_key(context), control, candidate)

    async def experiment_async(
        self,
        name: str,
        context: object,
        *,
        control: Callable[[], Awaitable[R]],
        candidate: Callable[[], Awaitable[Any]],
        compare: Compare | None = None,
        clean: Callable[[Any], Any] | None = None,
        ignore: Iterable[Ignore] = (),
        timeout: float = 1.0,
        mode: str = "background",
        redact: Redact | None = None,
    ) -> R:
        """``experiment`` for coroutines: ``control`` and ``candidate`` return awaitables.

        In background mode the candidate is a task on the running loop: the
        caller's await returns as soon as the control's does, and a
        candidate past its ``timeout`` is cancelled.
        """
        trial = self._trial(name, compare, clean, ignore, timeout, mode, redact)
        if not self._ruleset.enabled(name, as_context(context)):
            return await control()
        return await self._lab().run_async(trial, targeting_key(context), control, candidate)

    def dark_launch(
        self,
        name: str,
        candidate: Callable[..., Any],
        context: object = None,
        *,
        compare: Compare | None = None,
        clean: Callable[[Any], Any] | None = None,
        ignore: Iterable[Ignore] = (),
        timeout: float = 1.0,
        mode: str = "background",
        redact: Redact | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """A decorator: the function is the control; ``candidate`` gets the same arguments.

        ``context`` is the context, or a function of the call's arguments
        that returns it. Coroutine functions get ``experiment_async``. The
        options are checked here, once, at decoration.
        """
        trial = Trial(name, compare, clean, ignore, timeout, mode, redact)
        return dark_launch(self, trial, candidate, context)

    def _trial(
        self,
        name: str,
        compare: Compare | None,
        clean: Callable[[Any], Any] | None,
        ignore: Iterable[Ignore],
        timeout: float,
        mode: str,
        redact: Redact | None,
    ) -> Trial:
        """The experiment's checked settings; those with only a name, timeout and mode are kept.

        Checking them is most of what an experiment costs the caller, and
        most calls pass the same few: those are checked once per client.
        """
        plain = compare is None and clean is None and redact is None and ignore == ()
        if not plain:
            return Trial(name, compare, clean, ignore, timeout, mode, redact)
        trials = self._trials
        try:
            trial = trials.get((name, timeout, mode))
        except TypeError:  # something unhashable: Trial says what is wrong with it
            trial = None
        if trial is None:
            trial = Trial(name, compare, clean, ignore, timeout, mode, redact)
            if len(trials) < _KEPT_TRIALS:
                trials[(name, timeout, mode)] = trial
        return trial

    def _lab(self) -> Laboratory:
        laboratory = self._laboratory
        if laboratory is None:
            with self._lock:
                if self._laboratory is None:
                    workers, capacity = self._experiment_pool
                    self._laboratory = Laboratory(self.events, self._redact, workers, capacity)
                laboratory = self._laboratory
        return laboratory

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop syncing and send the events still waiting."""
        if self._laboratory is not None:
            self._laboratory.close()
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
        return self._swap(Ruleset(document), origin, revision, None)

    def _patch(self, patch: Mapping[str, Any], origin: str, revision: int) -> set[str]:
        """Apply a patch to the flags in use; returns the keys that changed.

        Only what the patch touches is validated and compiled again (see
        ``Ruleset.patched``). Where that check finds anything, the whole
        patched document is checked (``whole_patched``), and refused whole if it is bad
        (``InvalidDocument``, nothing changes). Raises ``PatchGap`` if the
        patch follows another revision than the one in use.
        """
        held = self._revision
        if held is None or patch.get("previous") != held:
            raise PatchGap(f"the patch follows {patch.get('previous')}, not {held}")
        ruleset = self._ruleset.patched(patch)
        if ruleset is None:  # reading only the patch's entries, as a whole reading would
            whole = Ruleset(whole_patched(self._ruleset.document, patch))
            return self._swap(whole, origin, revision, None)
        touched = patch.get("flags")
        return self._swap(
            ruleset, origin, revision, touched if isinstance(touched, Mapping) else {}
        )

    def _snapshot(self) -> dict[str, Any] | None:
        """The flags in use and their revision, in the form the server sends them."""
        with self._lock:
            ruleset, revision = self._ruleset, self._revision
        if revision is None:
            return None
        return {**document_to_data(ruleset.document), "revision": revision}

    def _swap(
        self, ruleset: Ruleset, origin: str, revision: int | None, touched: Mapping[str, Any] | None
    ) -> set[str]:
        """Put ``ruleset`` in use; ``touched`` (a patch's flags) narrows what may have changed."""
        document = ruleset.document
        with self._lock:
            old = self._ruleset.document
            self._ruleset = ruleset  # one reference swap: readers see old or new, whole
            self._origin = origin
            self._revision = revision
        keys = set(old.flags) | set(document.flags) if touched is None else set(touched)
        changed = {key for key in keys if old.flags.get(key) != document.flags.get(key)}
        if changed and self.events is not None:
            self.events.flags_changed(changed)  # their exposures report again; others keep
        if origin in ("server", "file"):
            self._ready.set()
        if changed and old.flags:
            for listener in list(self._listeners):
                try:
                    listener(changed)
                except Exception:  # a listener's bug must not stop the sync
                    log.exception("on_change callback failed")
        return changed

    def _after_fork_in_child(self) -> None:
        """Every lock the child will use is new: a parent thread may have held any at the fork."""
        self._lock = threading.Lock()
        ready = threading.Event()
        if self._ready.is_set():
            ready.set()
        self._ready = ready
        if self.events is not None:
            self.events.after_fork_in_child()
        if self._sync is not None:
            self._sync.restart_after_fork()


class _Receiver:
    """The client as the sync sees it: the narrow interface of ``unveil.sdk.sync.Receiver``."""

    __slots__ = ("_client",)

    def __init__(self, client: Client) -> None:
        self._client = client

    def install(self, document: Mapping[str, Any], origin: str, revision: int) -> None:
        self._client._install(document, origin=origin, revision=revision)

    def patch(self, patch: Mapping[str, Any], origin: str, revision: int) -> None:
        self._client._patch(patch, origin=origin, revision=revision)

    def snapshot(self) -> dict[str, Any] | None:
        return self._client._snapshot()

    def status_changed(self, problem: str | None) -> None:
        self._client._status_changed(problem)


def _document_from(source: str | Path | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(source, Mapping):
        return source
    # the YAML reader is imported only by applications that read files
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
