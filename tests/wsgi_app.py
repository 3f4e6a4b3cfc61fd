"""A tiny WSGI application with a live unveil Client, served by gunicorn --preload.

tests/test_fork.py starts gunicorn on it. The client is made at import, in
gunicorn's master, and a master thread holds the client's event buffer lock
for good, so that it is held at the moment every worker is forked: a worker
that used the parent's lock would hang on its first evaluation.

    GET /            {"pid": ..., "checkout": true|false}; also tracks a metric
    GET /?until=off  the same, once this worker sees checkout off (at most 20 s)
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from unveil import Client

client = Client(
    os.environ["UNVEIL_URL"],
    os.environ["UNVEIL_SDK_KEY"],
    cache_dir=os.environ["UNVEIL_CACHE_DIR"],
    flush_interval=0.2,
)
client.wait_until_ready(15)

_changed = threading.Condition()
client.on_change(lambda keys: _notify())


def _notify() -> None:
    with _changed:
        _changed.notify_all()


def _hold_the_event_lock(held: threading.Event) -> None:
    assert client.events is not None
    with client.events._lock:
        held.set()
        threading.Event().wait()  # for the life of the master


_held = threading.Event()
threading.Thread(target=_hold_the_event_lock, args=(_held,), daemon=True).start()
_held.wait(10)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Evaluate a flag and track a metric for one user; say which process answered."""
    user = {"key": "gunicorn-user"}
    if "until=off" in environ.get("QUERY_STRING", ""):
        with _changed:
            _changed.wait_for(lambda: client.enabled("checkout", user) is False, 20)
    on = client.enabled("checkout", user)
    client.track("served", user)
    body = json.dumps({"pid": os.getpid(), "checkout": on}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
