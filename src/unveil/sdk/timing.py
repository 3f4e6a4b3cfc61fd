"""Timing a block of code into a metric, and counting its errors, for a context.

What a guarded release compares is what the application reports: how long
the code behind a flag took and how often it failed, per variant. These
helpers make that one line::

    with client.timer("latency_ms", user):
        handle(request)

    @client.timed("latency_ms", lambda request: request.user)
    def handle(request): ...

The time is wall-clock milliseconds (``time.perf_counter``), tracked with
``Client.track`` (so attributed to the variants the context was exposed to,
and summed into the server's histogram buckets). When the block raises, the
time is tracked all the same and one error is counted under ``errors``
(default ``"errors"``; None counts none); the exception goes on, untouched.
Like ``track``, timing never raises an exception of its own.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

__all__ = ["ERRORS", "Timer", "context_of", "timed"]

#: the metric an error is counted under unless the caller names another
ERRORS = "errors"

Track = Callable[[str, object, float], None]
P = ParamSpec("P")
R = TypeVar("R")


class Timer:
    """A context manager that tracks how long its block took, in milliseconds."""

    __slots__ = ("_context", "_errors", "_metric", "_started", "_track", "elapsed_ms")

    def __init__(
        self, track: Track, metric: str, context: object = None, errors: str | None = ERRORS
    ) -> None:
        self._track = track
        self._metric = metric
        self._context = context
        self._errors = errors
        self._started = 0.0
        #: how long the block took (set when it ends)
        self.elapsed_ms: float | None = None

    def __enter__(self) -> Timer:
        self._started = time.perf_counter()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.elapsed_ms = (time.perf_counter() - self._started) * 1000.0
        self._track(self._metric, self._context, self.elapsed_ms)
        if isinstance(error, Exception) and self._errors is not None:
            self._track(self._errors, self._context, 1.0)


def context_of(context: object, args: tuple[Any, ...], kwargs: dict[str, Any]) -> object:
    """The context of one call: ``context`` itself, or what it answers for the call's arguments."""
    if not callable(context):
        return context
    try:
        return context(*args, **kwargs)
    except Exception:  # a caller's function: timing never breaks the timed call
        return None


def timed(
    track: Track, metric: str, context: object = None, errors: str | None = ERRORS
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A decorator: every call of the function is timed (coroutine functions too).

    ``context`` is the context (a mapping or a targeting key), or a function
    given the call's arguments that returns it.
    """

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        import inspect  # only where a function is decorated: importing the SDK stays light

        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def timed_coroutine(*args: Any, **kwargs: Any) -> Any:
                with Timer(track, metric, context_of(context, args, kwargs), errors):
                    return await function(*args, **kwargs)

            return timed_coroutine  # type: ignore[return-value]

        @functools.wraps(function)
        def timed_call(*args: P.args, **kwargs: P.kwargs) -> R:
            with Timer(track, metric, context_of(context, args, kwargs), errors):
                return function(*args, **kwargs)

        return timed_call

    return decorate
