"""Dark launches: a candidate runs beside the control on real traffic, and never hurts it.

``Client.experiment(name, context, control=..., candidate=...)`` returns what
the control returns, or raises what it raises, as if the experiment were not
there. For the contexts the flag ``name`` is on for (its normal, sticky
evaluation: see ``Client.experiment``) the candidate runs too, and the two
results are compared; everything the candidate does (a value, an exception,
a hang) ends up as one outcome counted for the server, never as something
the caller sees.

Two modes. ``background`` (the default): the control runs on the caller's
thread; when it is done, its result and the candidate go to a small pool of
worker threads with a bounded queue (``Laboratory``), and the caller goes on.
A full pool means the run is skipped and counted, never queued without end.
``inline``: both run on the caller's thread, in random order, for code that
must see the same state; the caller then waits for both. Coroutines have the
same two modes (``Laboratory.run_async``): in ``background`` the candidate is
a task on the caller's loop that the caller's await never waits for.

The outcome of a run is one of ``match``, ``mismatch``, ``ignored`` (an
``ignore`` predicate accepted the difference), ``error`` (the candidate
raised; counted by exception type), ``timeout`` (the candidate ran past its
timeout) or ``skipped`` (the pool was full). Outcomes and both paths'
durations are summed per experiment and 10-second window in the client's
event buffer (sdk/events.py) and sent in the ordinary event batches; a few
mismatches per window also go as examples, after the application's
``redact`` function: when one is set, no example leaves unredacted, and one
whose redaction raises is dropped. The two event kinds are described in
docs/api.md (Events); users' documentation is docs/dark-launches.md.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from unveil.core.codec import is_flag_key
from unveil.sdk.events import MAX_NAME, EventBuffer, name_problem, targeting_key
from unveil.sdk.timing import context_of

if TYPE_CHECKING:
    from unveil.sdk.client import Client

__all__ = [
    "DEFAULT_TIMEOUT",
    "MODES",
    "REPR_LIMIT",
    "VALUE_LIMIT",
    "Laboratory",
    "Trial",
    "as_context",
    "dark_launch",
    "judge",
    "shown",
]

log = logging.getLogger("unveil.sdk")
T = TypeVar("T")
P = ParamSpec("P")

#: the ways an experiment runs its candidate
MODES = ("background", "inline")
#: seconds a candidate may run before its run counts as a timeout
DEFAULT_TIMEOUT = 1.0
#: the longest text of a value that is not JSON (its ``repr``)
REPR_LIMIT = 1000
#: the largest value of an example, as JSON text
VALUE_LIMIT = 4096
#: seconds between two looks at the running candidates for one past its timeout
WATCH_TICK = 0.1
#: seconds between two looks of an active worker for new runs (no wake-up costs the caller)
POLL = 0.005
#: seconds without a run after which a worker sleeps until a caller wakes it
IDLE_AFTER = 0.5
#: the longest a sleeping worker or an idle watchdog waits before looking anyway
IDLE_WAIT = 5.0

Compare = Callable[[Any, Any], object]
Clean = Callable[[Any], Any]
Ignore = Callable[[Any, Any], object]
Redact = Callable[[Any], Any]


class Trial:
    """An experiment's settings, checked once: a bad one is a clear ``ValueError``/``TypeError``."""

    __slots__ = ("clean", "compare", "ignore", "mode", "name", "redact", "timeout")

    def __init__(
        self,
        name: str,
        compare: Compare | None = None,
        clean: Clean | None = None,
        ignore: Iterable[Ignore] = (),
        timeout: float = DEFAULT_TIMEOUT,
        mode: str = "background",
        redact: Redact | None = None,
    ) -> None:
        problem = name_problem(name)
        if problem is not None:  # the server would refuse every batch that carried it
            raise ValueError(f"name: an experiment's name is a flag key: {problem}")
        if not is_flag_key(name):  # no flag could ever turn its candidate on
            raise ValueError(
                f"name: an experiment's name is a flag key, and {name!r} cannot be one "
                "(1-200 printable characters without spaces or any of / \\ ? # %, "
                "not '.' or '..')"
            )
        if mode not in MODES:
            raise ValueError(f"mode: must be 'background' or 'inline', not {mode!r}")
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout < math.inf
        ):
            raise ValueError(f"timeout: must be a positive number of seconds, not {timeout!r}")
        for option, given in (("compare", compare), ("clean", clean), ("redact", redact)):
            if given is not None and not callable(given):
                raise TypeError(f"{option}: must be callable, not {type(given).__name__}")
        predicates = (ignore,) if callable(ignore) else tuple(ignore)
        if not all(callable(p) for p in predicates):
            raise TypeError("ignore: must be predicates (callables of control and candidate)")
        self.name = name
        self.compare = compare
        self.clean = clean
        self.ignore = predicates
        self.timeout = float(timeout)
        self.mode = mode
        self.redact = redact


def as_context(context: object) -> object:
    """A context to evaluate the experiment's flag for: a text context is a targeting key."""
    return {"key": context} if context.__class__ is str else context


def _type_name(error: BaseException) -> str:
    name = type(error).__qualname__[:200]
    return "other" if name_problem(name) is not None else name


def _same_exception(one: BaseException, other: BaseException) -> bool:
    """Two paths that raise the same type with the same message behave alike."""
    if type(one) is not type(other):
        return False
    try:
        return str(one) == str(other)
    except Exception:  # an exception whose str raises: its type is all we can compare
        return True


def _raised(error: BaseException) -> str:
    """How an exception of the control shows in an example."""
    return f"raised {_repr(error)}"


def judge(
    trial: Trial,
    control: Any,
    control_error: BaseException | None,
    candidate: Any,
    candidate_error: BaseException | None,
) -> tuple[str, str | None, Any, Any]:
    """The outcome of one finished run: (outcome, error type, control shown, candidate shown).

    The candidate raising is an ``error`` unless the control raised the
    same (type and message: a ``match``). The control raising while the
    candidate returns is a ``mismatch``. Otherwise both values go through
    ``clean``, then ``compare`` (default ``==``), then, if different, the
    ``ignore`` predicates. An exception in ``clean``, ``compare`` or an
    ``ignore`` predicate counts as an ``error`` of its type: the run told
    nothing.
    """
    if candidate_error is not None:
        if control_error is not None and _same_exception(control_error, candidate_error):
            return "match", None, None, None
        return "error", _type_name(candidate_error), None, None
    try:
        if control_error is not None:
            cleaned = trial.clean(candidate) if trial.clean is not None else candidate
            return "mismatch", None, _raised(control_error), cleaned
        clean = trial.clean
        if clean is not None:
            control, candidate = clean(control), clean(candidate)
        same = trial.compare(control, candidate) if trial.compare else control == candidate
        if same:
            return "match", None, None, None
        for accepted in trial.ignore:
            if accepted(control, candidate):
                return "ignored", None, None, None
        return "mismatch", None, control, candidate
    except Exception as exc:  # the application's comparison code failed on these values
        return "error", _type_name(exc), None, None


def _repr(value: object) -> str:
    try:
        text = repr(value)
    except Exception:  # a value that cannot even be printed
        text = f"<unprintable {type(value).__qualname__}>"
    if not isinstance(text, str):
        text = f"<unprintable {type(value).__qualname__}>"
    return text[:REPR_LIMIT]


def shown(value: object) -> Any:
    """A value as an example carries it: itself if it is JSON, its ``repr`` text if not.

    At most ``VALUE_LIMIT`` characters as JSON (longer JSON is sent as its
    text, cut), and never a lone surrogate (the server could not store it).
    """
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except Exception:  # not JSON: its repr, cut, as text
        value = _repr(value)
        text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: the JSON text, escaped, as text
        value = text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(json.dumps(value)) <= VALUE_LIMIT:
        return value
    cut = text if not isinstance(value, str) else value
    while len(json.dumps(cut + "...")) > VALUE_LIMIT:
        over = len(json.dumps(cut + "...")) - VALUE_LIMIT
        cut = cut[: len(cut) - max(over // 6, 1)]
    return cut + "..."


def example(
    name: str, key: str | None, control: Any, candidate: Any, redact: Redact | None
) -> dict[str, Any] | None:
    """A ``mismatch`` event, redacted; None if the redaction raised (nothing may leave then)."""
    if redact is not None:
        try:
            control = redact(control)
            candidate = redact(candidate)
            key = redact(key) if key is not None else None
        except Exception:  # the application's function: the example is not sent at all
            log.warning("redact raised on an example of experiment %.200r: dropped", name)
            return None
    event: dict[str, Any] = {
        "kind": "mismatch",
        "experiment": name,
        "at": time.time(),
        "control": shown(control),
        "candidate": shown(candidate),
    }
    if isinstance(key, str):
        key = key[:MAX_NAME]  # the server takes keys of at most 200 characters
        if name_problem(key) is None:  # one it refuses (a newline...) would cost the batch
            event["context"] = key
    return event


class _Run:
    """One background run: the control's result, waiting for the candidate in the pool."""

    __slots__ = (
        "candidate",
        "control",
        "control_error",
        "control_ms",
        "deadline",
        "key",
        "trial",
    )

    def __init__(
        self,
        trial: Trial,
        key: str | None,
        control: Any,
        control_error: BaseException | None,
        control_ms: float,
        candidate: Callable[[], Any],
    ) -> None:
        self.trial = trial
        self.key = key
        self.control = control
        self.control_error = control_error
        self.control_ms = control_ms
        self.candidate = candidate
        self.deadline = 0.0


class Laboratory:
    """Runs a client's experiments and reports their outcomes into its event buffer.

    ``workers`` threads run background candidates, with room for
    ``capacity`` runs waiting or running in all; beyond that runs are
    skipped. The threads start with the first background run and again in
    a forked child (the parent's threads do not exist there, and their lock
    may have been held at the fork).
    """

    def __init__(
        self,
        events: EventBuffer | None,
        redact: Redact | None = None,
        workers: int = 2,
        capacity: int = 64,
    ) -> None:
        if workers < 1 or capacity < workers:
            raise ValueError("experiment_workers must be >= 1 and experiment_capacity >= workers")
        self._events = events
        self._redact = redact
        self._workers = workers
        self._capacity = capacity
        self._closed = False
        self._fresh()
        _laboratories.add(self)

    def _fresh(self) -> None:
        self._lock = threading.Lock()
        self._pending: deque[_Run] = deque()
        #: whether the head worker sleeps until woken (only then does a caller wake it)
        self._head_asleep = False
        self._wake = threading.Event()
        self._helpers = threading.Event()
        #: background runs waiting or running; async candidates in flight
        self._busy = 0
        self._in_flight = 0
        #: id -> the runs whose candidate is running now (the watchdog looks for hangs)
        self._running: dict[int, _Run] = {}
        self._started = False
        self._stop = threading.Event()
        self._tasks: set[Any] = set()

    @property
    def busy(self) -> int:
        """Background runs waiting for or running their candidate now."""
        return self._busy

    # -- reporting ------------------------------------------------------------------------

    def report(
        self,
        trial: Trial,
        key: str | None,
        outcome: str,
        error: str | None,
        control_ms: float,
        candidate_ms: float | None,
        control: Any = None,
        candidate: Any = None,
    ) -> None:
        """Count one run; a mismatch may also send an example (redacted first)."""
        events = self._events
        if events is None:
            return
        events.experiment_run(trial.name, outcome, error, control_ms, candidate_ms)
        if outcome == "mismatch" and events.wants_example(trial.name):
            redact = trial.redact if trial.redact is not None else self._redact
            event = example(trial.name, key, control, candidate, redact)
            if event is None:
                events.count_unredacted()
            else:
                events.example(event)

    def _settle(
        self,
        run: _Run,
        candidate: Any,
        candidate_error: BaseException | None,
        candidate_ms: float,
    ) -> None:
        trial = run.trial
        if candidate_ms > trial.timeout * 1000.0:
            self.report(trial, run.key, "timeout", None, run.control_ms, None)
            return
        outcome, error, shown_control, shown_candidate = judge(
            trial, run.control, run.control_error, candidate, candidate_error
        )
        self.report(
            trial,
            run.key,
            outcome,
            error,
            run.control_ms,
            candidate_ms,
            shown_control,
            shown_candidate,
        )

    # -- synchronous -----------------------------------------------------------------------

    def run(
        self, trial: Trial, key: str | None, control: Callable[[], T], candidate: Callable[[], Any]
    ) -> T:
        """Run the control for the caller and the candidate as ``trial.mode`` says."""
        if trial.mode == "inline":
            return self._inline(trial, key, control, candidate)
        started = time.perf_counter()
        try:
            value = control()
        except Exception as exc:
            self._submit(_Run(trial, key, None, exc, _ms_since(started), candidate))
            raise
        self._submit(_Run(trial, key, value, None, _ms_since(started), candidate))
        return value

    def _submit(self, run: _Run) -> None:
        """Hand a run to the pool, or count it skipped when the pool is full (or closed)."""
        with self._lock:
            room = self._busy < self._capacity and not self._closed
            if room:
                self._busy += 1
                if not self._started:
                    self._start()
        if room:
            self._pending.append(run)
            if self._head_asleep:  # read after the append: the head saw the run, or is woken
                self._wake.set()
        else:
            self.report(run.trial, run.key, "skipped", None, run.control_ms, None)

    def _start(self) -> None:
        """The workers and the watchdog (under ``_lock``)."""
        self._started = True
        for number in range(self._workers):
            threading.Thread(
                target=self._work,
                args=(number == 0,),
                name=f"unveil-experiment-{number}",
                daemon=True,
            ).start()
        threading.Thread(target=self._watch, name="unveil-experiment-watch", daemon=True).start()

    def _next(self, head: bool) -> _Run | None:
        """The next run to work on, waiting for one; None once the laboratory is closed.

        Handing a run over costs the caller an append, not the wake-up of a
        thread (a system call, and often a switch away from the caller):
        the head worker, while active, looks every ``POLL`` seconds, and
        only after ``IDLE_AFTER`` seconds without runs does it sleep until
        a caller wakes it. The other workers sleep until the head finds
        more runs waiting than it can take.
        """
        pending = self._pending
        last = time.monotonic()
        while True:
            try:
                run = pending.popleft()
            except IndexError:
                run = None
            if run is not None:
                if head and pending and not self._helpers.is_set():
                    self._helpers.set()  # a backlog: the other workers help
                return run
            if self._closed:
                return None
            if not head:
                self._helpers.clear()
                if not pending and not self._closed:  # looked at after clearing: no run is missed
                    self._helpers.wait(IDLE_WAIT)
                continue
            if time.monotonic() - last < IDLE_AFTER:
                time.sleep(POLL)
                continue
            self._head_asleep = True
            try:
                if not pending and not self._closed:  # looked at after saying so: none is missed
                    self._wake.wait(IDLE_WAIT)
            finally:
                self._head_asleep = False
                self._wake.clear()
            last = time.monotonic()

    def _work(self, head: bool) -> None:
        running, lock = self._running, self._lock
        while True:
            run = self._next(head)
            if run is None:
                return
            try:
                run.deadline = time.monotonic() + run.trial.timeout
                running[id(run)] = run
                started = time.perf_counter()
                candidate, error = None, None
                try:
                    candidate = run.candidate()
                except BaseException as exc:  # everything the candidate does stays here
                    error = exc
                candidate_ms = _ms_since(started)
                if running.pop(id(run), None) is not None:  # else the watchdog reported it
                    self._settle(run, candidate, error, candidate_ms)
            except Exception:  # a bug of ours must not kill the worker
                log.exception("experiment %.200r: the run could not be reported", run.trial.name)
            finally:
                with lock:
                    self._busy -= 1

    def _watch(self) -> None:
        """Report a candidate that hangs as a timeout once it passes its deadline.

        Its worker stays busy until it returns (a thread cannot be stopped),
        so a pool of hung candidates fills and later runs are skipped.
        """
        running, stop, pending = self._running, self._stop, self._pending
        tick = WATCH_TICK
        while not stop.wait(tick):
            # idle (nothing running or waiting): a look a second is enough
            tick = WATCH_TICK if running or pending else 1.0
            if self._pending and not self._helpers.is_set():
                self._helpers.set()  # runs wait: the head may be held by a hung candidate
            now = time.monotonic()
            for ident, run in list(running.items()):
                if run.deadline <= now and running.pop(ident, None) is not None:
                    try:
                        self.report(run.trial, run.key, "timeout", None, run.control_ms, None)
                    except Exception:
                        log.exception("experiment %.200r: timeout not reported", run.trial.name)

    def _inline(
        self, trial: Trial, key: str | None, control: Callable[[], T], candidate: Callable[[], Any]
    ) -> T:
        candidate_first = random.getrandbits(1)
        if candidate_first:
            tried = _try(candidate)
        started = time.perf_counter()
        control_error: Exception | None = None
        value: Any = None
        try:
            value = control()
        except Exception as exc:
            control_error = exc
        control_ms = _ms_since(started)
        if not candidate_first:
            tried = _try(candidate)
        try:
            run = _Run(trial, key, value, control_error, control_ms, candidate)
            self._settle(run, *tried)
        except Exception:  # a bug of ours must not reach the caller
            log.exception("experiment %.200r: the run could not be reported", trial.name)
        if control_error is not None:
            try:
                raise control_error
            finally:
                del control_error
        return value  # type: ignore[no-any-return]

    # -- coroutines ------------------------------------------------------------------------

    async def run_async(
        self,
        trial: Trial,
        key: str | None,
        control: Callable[[], Awaitable[T]],
        candidate: Callable[[], Awaitable[Any]],
    ) -> T:
        """The coroutine form: the candidate is a task the caller's await never waits for."""
        import asyncio  # only applications with coroutines pay for it

        if trial.mode == "inline":
            return await self._inline_async(trial, key, control, candidate)
        with self._lock:
            room = self._in_flight < self._capacity and not self._closed
            if room:
                self._in_flight += 1
        if not room:
            started = time.perf_counter()
            try:
                return await control()
            finally:
                self.report(trial, key, "skipped", None, _ms_since(started), None)
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[tuple[Any, BaseException | None, float]] = loop.create_future()
        task = loop.create_task(self._candidate_task(trial, key, candidate, finished))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        started = time.perf_counter()
        try:
            value = await control()
        except Exception as exc:
            finished.set_result((None, exc, _ms_since(started)))
            raise
        except BaseException:  # cancelled: no run to report
            finished.cancel()
            raise
        finished.set_result((value, None, _ms_since(started)))
        return value

    def _task_done(self, task: Any) -> None:
        self._tasks.discard(task)
        with self._lock:
            self._in_flight -= 1

    async def _candidate_task(
        self,
        trial: Trial,
        key: str | None,
        candidate: Callable[[], Awaitable[Any]],
        finished: Any,
    ) -> None:
        import asyncio

        async def call() -> Any:
            return await candidate()

        started = time.perf_counter()
        inner = asyncio.ensure_future(call())
        try:
            await self._judge_task(trial, key, candidate, finished, inner, started)
        finally:
            # This task holds its slot (``_task_done``) until the candidate has really
            # ended: one cancelled at its timeout may go on (it caught the cancel), and
            # like a hung thread it fills the pool rather than letting candidates pile up.
            if not inner.done():
                inner.cancel()
                await asyncio.wait({inner})

    async def _judge_task(
        self,
        trial: Trial,
        key: str | None,
        candidate: Callable[[], Awaitable[Any]],
        finished: Any,
        inner: Any,
        started: float,
    ) -> None:
        """Wait for the candidate up to its timeout and for the control, then report."""
        import asyncio

        done, _ = await asyncio.wait({inner}, timeout=trial.timeout)
        candidate_ms = _ms_since(started)
        value: Any = None
        error: BaseException | None = None
        if not done:
            inner.cancel()
        elif inner.cancelled():
            error = asyncio.CancelledError()
        else:
            error = inner.exception()
            value = None if error is not None else inner.result()
        try:
            control, control_error, control_ms = await finished
        except asyncio.CancelledError:
            return  # the caller was cancelled: there is no run
        try:
            if not done:
                self.report(trial, key, "timeout", None, control_ms, None)
            else:
                run = _Run(trial, key, control, control_error, control_ms, candidate)
                self._settle(run, value, error, candidate_ms)
        except Exception:
            log.exception("experiment %.200r: the run could not be reported", trial.name)

    async def _inline_async(
        self,
        trial: Trial,
        key: str | None,
        control: Callable[[], Awaitable[T]],
        candidate: Callable[[], Awaitable[Any]],
    ) -> T:
        candidate_first = random.getrandbits(1)
        if candidate_first:
            tried = await _try_async(candidate)
        started = time.perf_counter()
        control_error: Exception | None = None
        value: Any = None
        try:
            value = await control()
        except Exception as exc:
            control_error = exc
        control_ms = _ms_since(started)
        if not candidate_first:
            tried = await _try_async(candidate)
        try:
            self._settle(_Run(trial, key, value, control_error, control_ms, candidate), *tried)
        except Exception:
            log.exception("experiment %.200r: the run could not be reported", trial.name)
        if control_error is not None:
            try:
                raise control_error
            finally:
                del control_error
        return value  # type: ignore[no-any-return]

    # -- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the workers once they finish what they hold; later runs are skipped."""
        with self._lock:
            self._closed = True
            started = self._started
        if started:
            self._stop.set()
            self._wake.set()
            self._helpers.set()

    def after_fork_in_child(self) -> None:
        """New lock, queue and counts; threads start again with the child's first run."""
        self._fresh()


def dark_launch(
    client: Client, trial: Trial, candidate: Callable[..., Any], context: object = None
) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """The decorator of ``Client.dark_launch``: the function it decorates is the control."""

    def decorate(function: Callable[P, T]) -> Callable[P, T]:
        import functools
        import inspect

        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def launched_coroutine(*args: Any, **kwargs: Any) -> Any:
                given = context_of(context, args, kwargs)
                if not client.ruleset.enabled(trial.name, as_context(given)):
                    return await function(*args, **kwargs)
                return await client._lab().run_async(
                    trial,
                    targeting_key(given),
                    lambda: function(*args, **kwargs),
                    lambda: candidate(*args, **kwargs),
                )

            return launched_coroutine  # type: ignore[return-value]

        @functools.wraps(function)
        def launched(*args: P.args, **kwargs: P.kwargs) -> T:
            given = context_of(context, args, kwargs)
            if not client.ruleset.enabled(trial.name, as_context(given)):
                return function(*args, **kwargs)
            return client._lab().run(
                trial,
                targeting_key(given),
                lambda: function(*args, **kwargs),
                lambda: candidate(*args, **kwargs),
            )

        return launched

    return decorate


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _try(candidate: Callable[[], Any]) -> tuple[Any, Exception | None, float]:
    """Call the candidate on this thread: its value or exception, and its milliseconds."""
    started = time.perf_counter()
    try:
        return candidate(), None, _ms_since(started)
    except Exception as exc:
        return None, exc, _ms_since(started)


async def _try_async(
    candidate: Callable[[], Awaitable[Any]],
) -> tuple[Any, Exception | None, float]:
    started = time.perf_counter()
    try:
        return await candidate(), None, _ms_since(started)
    except Exception as exc:
        return None, exc, _ms_since(started)


# Every laboratory, so that a forked child gets fresh locks and queues in each.
_laboratories: weakref.WeakSet[Laboratory] = weakref.WeakSet()


def _fresh_in_child() -> None:
    for laboratory in list(_laboratories):
        laboratory.after_fork_in_child()


os.register_at_fork(after_in_child=_fresh_in_child)
