"""Dark launches in the SDK (issue 14, items 1 and 2): the caller never feels the candidate.

The tests run a live client of a real server process (the flag named after
the experiment decides the share) and reads what the client actually posts:
its event batches go to a real loopback receiver process (the server of this
clone refuses the new kinds), everything else to the server. The two event
kinds are those of docs/api.md (Events).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import select
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server_process import Server, _free_port, database, sdk_key, start_server, stop, wait_for
from tests.test_webhooks import Receiver
from unveil import Client
from unveil.sdk.events import EXAMPLES_PER_WINDOW
from unveil.sdk.experiment import REPR_LIMIT, VALUE_LIMIT, shown

FLAGS = "/api/v1/projects/shop/environments/production/flags"
ALL_ON = {"default": "on"}


class EventsElsewhere(httpx.BaseTransport):
    """Real HTTP both ways: event batches to the receiver's port, the rest to the server."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/sdk/v1/events":
            request.url = request.url.copy_with(port=self._port)
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


class Lab:
    """The server, the receiver, and what the clients of one test sent."""

    def __init__(self, server: Server, receiver: Receiver, tmp_path: Path) -> None:
        self.server = server
        self.receiver = receiver
        self.tmp_path = tmp_path
        self.key = sdk_key(server.database_url)
        self.clients: list[Client] = []

    def flag(self, name: str, body: dict[str, Any]) -> None:
        with self.server.client() as api:
            current = api.get(f"{FLAGS}/{name}")
            headers = {"If-Match": current.headers["ETag"]} if current.status_code == 200 else {}
            answer = api.put(f"{FLAGS}/{name}", json=body, headers=headers)
            assert answer.status_code in (200, 201), answer.text

    def client(self, **options: Any) -> Client:
        port = self.receiver.port
        options.setdefault("flush_interval", 0.1)
        client = Client(
            self.server.url,
            self.key,
            cache_dir=self.tmp_path / f"cache{len(self.clients)}",
            transport=lambda: EventsElsewhere(port),
            **options,
        )
        self.clients.append(client)
        assert client.wait_until_ready(15)
        return client

    def events(self, name: str, kind: str | None = None) -> list[dict[str, Any]]:
        """Every event of this experiment the receiver got, in order."""
        found = []
        for entry in self.receiver.received():
            assert entry["path"] == "/sdk/v1/events"
            found.extend(
                event
                for event in json.loads(entry["body"])["events"]
                if event.get("experiment") == name and (kind is None or event["kind"] == kind)
            )
        return found

    def outcomes(self, name: str) -> Counter[str]:
        total: Counter[str] = Counter()
        for event in self.events(name, "experiment"):
            total.update(event["outcomes"])
            assert sum(event.get("errors", {}).values()) == event["outcomes"].get("error", 0)
            assert all(v > 0 for v in event["outcomes"].values())
        return total

    def errors(self, name: str) -> Counter[str]:
        total: Counter[str] = Counter()
        for event in self.events(name, "experiment"):
            total.update(event.get("errors", {}))
        return total

    def examples(self, name: str) -> list[dict[str, Any]]:
        return self.events(name, "mismatch")

    def wait_outcomes(self, name: str, runs: int) -> Counter[str]:
        assert wait_for(lambda: sum(self.outcomes(name).values()) >= runs, 20), self.outcomes(name)
        return self.outcomes(name)


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Receiver]]:
    tmp = tmp_path_factory.mktemp("experiments")
    with database("sqlite", tmp) as url:
        server = start_server(url)
        receiver = Receiver(_free_port(), tmp / "received.jsonl")
        try:
            receiver.start("--status", "202")
            yield server, receiver
        finally:
            receiver.stop()
            stop(server)


@pytest.fixture
def lab(serving: tuple[Server, Receiver], tmp_path: Path) -> Iterator[Lab]:
    made = Lab(*serving, tmp_path)
    try:
        yield made
    finally:
        for client in made.clients:
            client.close()


def _idle(client: Client) -> bool:
    laboratory = client._laboratory
    return laboratory is None or laboratory.busy == 0


def _finish(client: Client) -> None:
    """Wait for the background runs, then send everything (close flushes)."""
    assert wait_for(lambda: _idle(client), 20)
    client.close()


class Unprintable:
    """Not JSON, and its repr raises."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


# -- the caller gets the control's answer, whatever the candidate does ------------------------


@pytest.mark.parametrize("mode", ["background", "inline"])
def test_the_control_value_comes_back_whatever_the_candidate_does(lab: Lab, mode: str) -> None:
    name = f"whatever-{mode}"
    lab.flag(name, ALL_ON)
    client = lab.client()

    def raises() -> int:
        raise ValueError("candidate broke")

    def slow() -> int:
        time.sleep(0.3)
        return 7

    def too_slow() -> int:
        time.sleep(0.3)
        return 7

    candidates: list[tuple[Callable[[], Any], float]] = [
        (raises, 1.0),
        (slow, 2.0),  # slow but within its timeout: compared
        (too_slow, 0.05),  # past its timeout: a timeout, never compared
        (Unprintable, 1.0),
        (lambda: 7, 1.0),
    ]
    for candidate, timeout in candidates:
        started = time.perf_counter()
        answer = client.experiment(
            name, {"key": "u1"}, control=lambda: 7, candidate=candidate, timeout=timeout, mode=mode
        )
        assert answer == 7
        if mode == "background":  # the caller waited for no candidate
            assert time.perf_counter() - started < 0.25
    _finish(client)
    assert lab.outcomes(name) == Counter(match=2, error=1, timeout=1, mismatch=1)
    assert lab.errors(name) == Counter(ValueError=1)
    (example,) = lab.examples(name)
    assert example["control"] == 7
    assert example["candidate"] == "<unprintable Unprintable>"
    assert example["context"] == "u1"
    windows = lab.events(name, "experiment")
    assert sum(w["control_ms"]["count"] for w in windows) == 5  # the control: every run
    # the candidate: on the runs that finished (not the timeout)
    assert sum(w.get("candidate_ms", {}).get("count", 0) for w in windows) == 4
    assert all(w["at"] % 10 == 0 for w in windows)  # the start of the client's window


def test_a_hung_candidate_is_reported_as_a_timeout_and_never_holds_the_caller(lab: Lab) -> None:
    lab.flag("hangs", ALL_ON)
    client = lab.client()
    release = threading.Event()
    started = time.perf_counter()
    answer = client.experiment(
        "hangs", "u1", control=lambda: "old", candidate=lambda: release.wait(60), timeout=0.05
    )
    assert answer == "old"
    assert time.perf_counter() - started < 0.25
    assert lab.wait_outcomes("hangs", 1) == Counter(timeout=1)  # while it still hangs
    release.set()
    _finish(client)
    assert lab.outcomes("hangs") == Counter(timeout=1)  # its late return counts nothing


@pytest.mark.parametrize("mode", ["background", "inline"])
def test_the_control_exception_is_raised_as_is(lab: Lab, mode: str) -> None:
    name = f"raising-{mode}"
    lab.flag(name, ALL_ON)
    client = lab.client()
    raised = KeyError("no such row")

    def control() -> int:
        raise raised

    def candidate_raises() -> int:
        raise TypeError("candidate")

    for candidate in (lambda: 1, candidate_raises, control):
        with pytest.raises(KeyError) as caught:
            client.experiment(name, "u", control=control, candidate=candidate, mode=mode)
        assert caught.value is raised
        assert caught.traceback[-1].name == "control"  # raised where the control raised it
    _finish(client)
    # returned where the control raised; raised another type; raised the same
    assert lab.outcomes(name) == Counter(mismatch=1, error=1, match=1)
    (example,) = lab.examples(name)
    assert example["control"] == "raised KeyError('no such row')"
    assert example["candidate"] == 1


def test_a_full_pool_skips_runs_and_never_blocks_the_caller(lab: Lab) -> None:
    lab.flag("saturated", ALL_ON)
    client = lab.client(experiment_workers=1, experiment_capacity=1)
    release, running = threading.Event(), threading.Event()
    calls: list[str] = []

    def candidate() -> str:
        calls.append("x")
        running.set()
        release.wait(30)
        return "same"

    assert client.experiment("saturated", "u0", control=lambda: "same", candidate=candidate) == (
        "same"
    )
    assert running.wait(10)
    started = time.perf_counter()
    for i in range(50):
        answer = client.experiment(
            "saturated", f"u{i}", control=lambda: "same", candidate=candidate
        )
        assert answer == "same"
    assert time.perf_counter() - started < 1.0  # fifty calls, none waited for the pool
    release.set()
    _finish(client)
    assert calls == ["x"]  # the skipped candidates never ran
    assert lab.outcomes("saturated") == Counter(skipped=50, match=1)


# -- the share follows the flag ------------------------------------------------------------


def test_zero_percent_or_a_missing_flag_never_calls_the_candidate(lab: Lab) -> None:
    lab.flag("nobody", {"default": {"rollout": {"on": 0, "off": 100}}})
    client = lab.client()
    called: list[int] = []
    for mode in ("background", "inline"):
        for i in range(200):
            for name in ("nobody", "no-such-flag"):
                value = client.experiment(
                    name,
                    f"u{i}",
                    control=lambda i=i: i,  # type: ignore[misc]
                    candidate=lambda: called.append(1),
                    mode=mode,
                )
                assert value == i
    client.track("marker", "u0")  # something is sent, so the batch arrived
    _finish(client)
    assert called == []
    assert lab.events("nobody") == []
    assert lab.events("no-such-flag") == []


def test_the_share_follows_the_flag_sticky_per_context_and_changes_live(lab: Lab) -> None:
    lab.flag("share", {"default": {"rollout": {"on": 30, "off": 70}}})
    client = lab.client()
    ran: set[str] = set()

    def run_all(keys: list[str]) -> set[str]:
        chosen: set[str] = set()
        for key in keys:
            client.experiment(
                "share",
                {"key": key},
                control=lambda: 1,
                candidate=lambda key=key: chosen.add(key),  # type: ignore[misc]
                mode="inline",
            )
        return chosen

    keys = [f"user-{i}" for i in range(2000)]
    ran = run_all(keys)
    assert 0.26 < len(ran) / len(keys) < 0.34
    assert ran == run_all(keys)  # sticky: the same contexts again
    assert ran == {k for k in keys if client.enabled("share", {"key": k})}  # the flag's rule

    changed = threading.Event()
    client.on_change(lambda flags: "share" in flags and changed.set())
    lab.flag("share", {"default": {"rollout": {"on": 70, "off": 30}}})
    assert changed.wait(15)
    wider = run_all(keys)
    assert 0.66 < len(wider) / len(keys) < 0.74
    assert ran <= wider  # raising the share keeps everyone already in it
    _finish(client)
    assert sum(lab.outcomes("share").values()) == 2 * len(ran) + len(wider)


# -- comparing ---------------------------------------------------------------------------


def test_ignored_differences_are_counted_apart_never_as_matches(lab: Lab) -> None:
    lab.flag("ignoring", ALL_ON)
    client = lab.client()

    def off_by_one(control: int, candidate: int) -> bool:
        return candidate == control + 1

    for i in range(30):
        candidate = [i, i + 1, i + 5][i % 3]  # equal, accepted difference, real difference
        client.experiment(
            "ignoring",
            f"u{i}",
            control=lambda i=i: i,  # type: ignore[misc]
            candidate=lambda c=candidate: c,  # type: ignore[misc]
            ignore=[off_by_one],
            mode="inline",
        )
    client.experiment(  # clean makes them equal before any ignore is asked
        "ignoring",
        "u",
        control=lambda: " A ",
        candidate=lambda: "a",
        clean=lambda v: v.strip().lower(),
        ignore=[lambda a, b: True],
        mode="inline",
    )
    client.experiment(  # a custom compare that says equal
        "ignoring", "u", control=lambda: 1.0, candidate=lambda: 1.04, compare=lambda a, b: True
    )
    _finish(client)
    assert lab.outcomes("ignoring") == Counter(match=12, ignored=10, mismatch=10)
    assert all(e["candidate"] == e["control"] + 5 for e in lab.examples("ignoring"))


def test_exception_type_names_are_capped_per_window(lab: Lab) -> None:
    lab.flag("many-errors", ALL_ON)
    client = lab.client(flush_interval=60)  # one window's runs stay in one summary
    kinds = [type(f"Broken{i}", (Exception,), {}) for i in range(25)]
    for kind in kinds:

        def candidate(kind: type[Exception] = kind) -> int:
            raise kind()

        client.experiment("many-errors", "u", control=lambda: 1, candidate=candidate, mode="inline")
    _finish(client)
    events = lab.events("many-errors", "experiment")
    for event in events:  # each window: at most 20 names and "other"
        assert len(event["errors"]) <= 21
        assert set(event["errors"]) - {"other"} <= {k.__qualname__ for k in kinds}
    assert sum(lab.errors("many-errors").values()) == 25 == lab.outcomes("many-errors")["error"]
    if len(events) == 1:  # (two when the runs straddled a window boundary)
        assert len(events[0]["errors"]) == 21
        assert events[0]["errors"]["other"] == 5


# -- examples and redaction -------------------------------------------------------------------


def test_every_example_sent_is_redacted_and_a_raising_redact_sends_none(lab: Lab) -> None:
    lab.flag("redacted", ALL_ON)
    lab.flag("redact-raises", ALL_ON)
    seen: list[object] = []

    def mask(value: object) -> object:
        seen.append(value)
        return "".join("#" if ch.isdigit() else ch for ch in str(value))

    client = lab.client(redact=mask)
    for i in range(40):
        client.experiment(
            "redacted",
            f"user-{i}",
            control=lambda i=i: {"card": f"4242-{i}"},  # type: ignore[misc]
            candidate=lambda i=i: {"card": f"4343-{i}"},  # type: ignore[misc]
            mode="inline",
        )

    def broken(value: object) -> object:
        raise RuntimeError("redaction broke")

    for i in range(10):
        client.experiment(
            "redact-raises",
            f"user-{i}",
            control=lambda: "secret-1",
            candidate=lambda: "secret-2",
            redact=broken,
        )
    _finish(client)
    examples = lab.examples("redacted")
    assert examples  # some were sent...
    by_window = Counter(int(e["at"] // 10) for e in examples)
    assert max(by_window.values()) <= EXAMPLES_PER_WINDOW  # ...and no more than the window's share
    for event in examples:
        for field in ("control", "candidate", "context"):
            assert isinstance(event[field], str)
            assert not any(ch.isdigit() for ch in event[field]), event
        assert event["context"].startswith("user-#")
    assert len(seen) == 3 * len(examples)  # control, candidate and key of each example
    assert lab.outcomes("redacted") == Counter(mismatch=40)
    assert lab.outcomes("redact-raises") == Counter(mismatch=10)
    assert lab.examples("redact-raises") == []  # never unredacted
    assert client.events is not None
    assert client.events.unredacted == 10


def test_example_values_are_bounded_json() -> None:
    assert shown({"a": [1, 2]}) == {"a": [1, 2]}
    big = shown(["x" * 100] * 100)
    assert isinstance(big, str)
    assert len(json.dumps(big)) <= VALUE_LIMIT
    assert len(json.dumps(shown("é" * 10_000))) <= VALUE_LIMIT
    assert shown(float("nan")) == "nan"
    odd = shown(object())
    assert isinstance(odd, str)
    assert odd.startswith("<object object")
    assert len(shown(type("Long", (), {"__repr__": lambda self: "y" * 5000})())) == REPR_LIMIT
    lone = shown("a\ud800b")
    assert isinstance(lone, str)
    lone.encode("utf-8")  # no lone surrogate left to spoil a batch


# -- coroutines and the decorator -------------------------------------------------------------


def test_coroutines_the_candidate_never_delays_the_callers_await(lab: Lab) -> None:
    lab.flag("async-exp", ALL_ON)
    client = lab.client()
    cancelled = asyncio.Event()

    async def control() -> str:
        await asyncio.sleep(0)
        return "old"

    async def slow() -> str:
        await asyncio.sleep(0.3)
        return "new"

    async def hangs() -> str:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    async def raises() -> str:
        raise LookupError("candidate")

    async def main() -> None:
        started = time.perf_counter()
        assert await client.experiment_async("async-exp", "u", control=control, candidate=slow) == (
            "old"
        )
        assert time.perf_counter() - started < 0.2  # the slow candidate runs on, unawaited
        assert await client.experiment_async(
            "async-exp", "u", control=control, candidate=hangs, timeout=0.05
        ) == ("old")
        assert await client.experiment_async(
            "async-exp", "u", control=control, candidate=raises
        ) == ("old")
        assert (
            await client.experiment_async(
                "async-exp", "u", control=control, candidate=control, mode="inline"
            )
            == "old"
        )
        await asyncio.wait_for(cancelled.wait(), 10)  # the hung candidate was cancelled
        while client._laboratory is not None and client._laboratory._tasks:
            await asyncio.sleep(0.02)  # the slow candidate's task finishes on this loop

    asyncio.run(main())
    _finish(client)
    assert lab.outcomes("async-exp") == Counter(mismatch=1, timeout=1, error=1, match=1)
    assert lab.errors("async-exp") == Counter(LookupError=1)


def test_a_candidate_that_outlives_its_cancellation_keeps_its_slot(lab: Lab) -> None:
    """A timed-out candidate task is cancelled; one that goes on (it catches the cancel)
    gave its slot back all the same, so candidates piled up past the capacity."""
    lab.flag("async-stubborn", ALL_ON)
    client = lab.client(experiment_capacity=2)
    running: list[int] = []
    peak = 0

    async def control() -> int:
        return 1

    async def stubborn() -> int:
        nonlocal peak
        running.append(1)
        peak = max(peak, len(running))
        try:
            for _ in range(40):  # about a second, whatever cancels it
                try:
                    await asyncio.sleep(0.025)
                except asyncio.CancelledError:
                    continue
            return 1
        finally:
            running.pop()

    async def main() -> None:
        for i in range(30):
            assert (
                await client.experiment_async(
                    "async-stubborn", f"u{i}", control=control, candidate=stubborn, timeout=0.01
                )
                == 1
            )
            await asyncio.sleep(0.02)
        while running:
            await asyncio.sleep(0.02)

    asyncio.run(main())
    _finish(client)
    assert peak <= 2, f"{peak} candidates ran at once with a capacity of 2"
    outcomes = lab.outcomes("async-stubborn")
    assert outcomes["timeout"] == 2
    assert outcomes["skipped"] == 28


def test_coroutines_too_skip_when_the_pool_of_candidate_tasks_is_full(lab: Lab) -> None:
    lab.flag("async-full", ALL_ON)
    client = lab.client(experiment_workers=1, experiment_capacity=1)
    calls: list[int] = []

    async def control() -> int:
        return 1

    async def main() -> None:
        release = asyncio.Event()

        async def candidate() -> int:
            calls.append(1)
            await release.wait()
            return 1

        for _ in range(20):
            assert (
                await client.experiment_async(
                    "async-full", "u", control=control, candidate=candidate, timeout=30
                )
                == 1
            )
        await asyncio.sleep(0)  # the first candidate task starts
        release.set()
        while client._laboratory is not None and client._laboratory._tasks:
            await asyncio.sleep(0.01)

    asyncio.run(main())
    _finish(client)
    assert calls == [1]
    assert lab.outcomes("async-full") == Counter(skipped=19, match=1)


def test_the_decorator_runs_the_candidate_with_the_same_arguments(lab: Lab) -> None:
    lab.flag("decorated", ALL_ON)
    client = lab.client()
    given: list[tuple[Any, ...]] = []

    def new_price(sku: str, quantity: int) -> int:
        given.append((sku, quantity))
        return quantity * 10 + (1 if sku == "b" else 0)

    @client.dark_launch("decorated", new_price, context=lambda sku, quantity: f"sku-{sku}")
    def price(sku: str, quantity: int) -> int:
        return quantity * 10

    async def new_stock(sku: str) -> int:
        return 3

    @client.dark_launch("decorated", new_stock, context=lambda sku: sku, mode="inline")
    async def stock(sku: str) -> int:
        return 3

    assert price("a", 2) == 20
    assert price("b", quantity=3) == 30
    assert asyncio.run(stock("a")) == 3
    _finish(client)
    assert sorted(given) == [("a", 2), ("b", 3)]
    assert lab.outcomes("decorated") == Counter(match=2, mismatch=1)
    (example,) = lab.examples("decorated")
    assert example == {**example, "control": 30, "candidate": 31, "context": "sku-b"}


def test_odd_values_and_keys_never_spoil_a_batch(lab: Lab) -> None:
    lab.flag("odd", ALL_ON)
    client = lab.client()
    odd = [
        ("\ud800" * 3000, Unprintable()),
        ({"k": "x" * 9000}, [1.5, float("nan")]),
        ("é" * 5000, {"a": {"b": [None] * 2000}}),
    ]
    for control, candidate in odd:
        client.experiment(
            "odd",
            {"key": "u\ud800"},  # a key the server could not take: the example goes without it
            control=lambda c=control: c,  # type: ignore[misc]
            candidate=lambda c=candidate: c,  # type: ignore[misc]
            mode="inline",
        )
    _finish(client)
    examples = lab.examples("odd")
    assert len(examples) == 3
    for event in examples:
        assert "context" not in event
        for field in ("control", "candidate"):
            assert len(json.dumps(event[field])) <= VALUE_LIMIT


def test_a_key_the_server_would_refuse_never_costs_the_batch(lab: Lab) -> None:
    """Keys of 201-1,000 characters, or with a newline, went with the example, and the
    server refused the whole batch (422): the runs' counts and every metric in it."""
    from unveil.service.events import parse_events

    lab.flag("keys", ALL_ON)
    client = lab.client()
    for key in ("k" * 300, "line\nbreak", "tab\there", "ok-key"):
        client.experiment("keys", key, control=lambda: 1, candidate=lambda: 2, mode="inline")
    _finish(client)
    for entry in lab.receiver.received():
        parse_events(json.loads(entry["body"]), time.time())  # what the server takes, or Invalid
    examples = lab.examples("keys")
    assert [e.get("context") for e in examples] == ["k" * 200, None, None, "ok-key"]
    assert lab.outcomes("keys") == Counter(mismatch=4)


def test_bad_options_are_refused_before_anything_runs(lab: Lab) -> None:
    lab.flag("options", ALL_ON)
    client = lab.client()
    ran: list[str] = []
    for options, field in (
        ({"mode": "sideways"}, "mode"),
        ({"timeout": 0}, "timeout"),
        ({"compare": "=="}, "compare"),
        ({"ignore": [1]}, "ignore"),
        ({"name": "bad\x00name"}, "name"),
        ({"name": "a\ud800"}, "name"),
        # no flag can have these keys, so no flag could ever turn the candidate on
        ({"name": "search v2"}, "name"),
        ({"name": "search/v2"}, "name"),
        ({"name": ".."}, "name"),
        ({"timeout": math.inf}, "timeout"),
    ):
        name = options.pop("name", "options")
        with pytest.raises((ValueError, TypeError), match=field):
            client.experiment(
                name, "u", control=lambda: ran.append("c"), candidate=lambda: 1, **options
            )
    assert ran == []


# -- fork ----------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_runs_experiments_with_a_pool_of_its_own(lab: Lab) -> None:
    lab.flag("forked", ALL_ON)
    client = lab.client()
    assert client.experiment("forked", "parent", control=lambda: 1, candidate=lambda: 1) == 1
    assert wait_for(lambda: _idle(client), 10)
    laboratory = client._laboratory
    assert laboratory is not None
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with laboratory._lock:  # the pool's lock, held by a parent thread at the fork
            held.set()
            release.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(10)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            answers = [
                client.experiment("forked", f"child-{i}", control=lambda: 2, candidate=lambda: 3)
                for i in range(5)
            ]
            wait_for(lambda: _idle(client), 10)
            client.close()
            os.write(write_end, b"1" if answers == [2] * 5 else b"0")
        finally:
            os._exit(0)
    os.close(write_end)
    release.set()
    holder.join()
    try:
        answered, _, _ = select.select([read_end], [], [], 30)
        if not answered:
            os.kill(pid, signal.SIGKILL)
        assert answered, "the forked child hung on its parent's pool"
        assert os.read(read_end, 1) == b"1"
    finally:
        os.waitpid(pid, 0)
        os.close(read_end)
    _finish(client)
    assert lab.outcomes("forked") == Counter(match=1, mismatch=5)
    assert {e["context"] for e in lab.examples("forked")} == {f"child-{i}" for i in range(5)}


# -- the example of docs/dark-launches.md ------------------------------------------------------

DOC = Path(__file__).resolve().parent.parent / "docs" / "dark-launches.md"


def test_the_database_migration_example_of_the_docs_runs_as_written(
    lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    section = DOC.read_text(encoding="utf-8").split("## A complete example")[1]
    code = section.split("```python\n")[1].split("```")[0]
    written = 'Client("https://flags.example.com", sdk_key="unveil-sdk-...", redact=redact)'
    assert written in code
    code = code.replace(written, "make_client(redact=redact)")
    monkeypatch.chdir(tmp_path)
    old = sqlite3.connect("old.db")
    old.execute("CREATE TABLE orders (order_id, sku, quantity, mills, email)")
    old.executemany(
        "INSERT INTO orders VALUES (?, ?, ?, ?, ?)",
        [
            (1, "A", 2, 12500, "ann@example.com"),  # 12.50: in both
            (1, "B", 1, 3000, "ann@example.com"),
            (2, "A", 1, 1000, "bob@example.com"),  # not yet in the new store
            (3, "C", 1, 9994, "cy@example.com"),  # 9.994: rounded to 9.99 there
            (4, "D", 3, 5000, "di@example.com"),  # a real difference: the quantity
        ],
    )
    old.commit()
    new = sqlite3.connect("new.db")
    new.execute("CREATE TABLE order_lines (order_id, sku, quantity, amount, email)")
    new.executemany(
        "INSERT INTO order_lines VALUES (?, ?, ?, ?, ?)",
        [
            (1, "B", 1, "3.00", "ann@example.com"),  # another line order
            (1, "A", 2, "12.50", "ann@example.com"),
            (3, "C", 1, "9.99", "cy@example.com"),
            (4, "D", 2, "5.00", "di@example.com"),
        ],
    )
    new.commit()
    lab.flag("orders-from-new-store", ALL_ON)
    made: list[Client] = []

    def make_client(**options: Any) -> Client:
        made.append(lab.client(**options))
        return made[-1]

    namespace: dict[str, Any] = {"render": lambda order: order, "make_client": make_client}
    exec(compile(code, str(DOC), "exec"), namespace)  # the doc's own code, as written
    order_page, order_from_old = namespace["order_page"], namespace["order_from_old"]
    for order_id in (1, 2, 3, 4):
        assert order_page(order_id, f"customer-{order_id}") == order_from_old(order_id)
    with pytest.raises(KeyError):
        order_page(5, "customer-5")  # in neither: the caller gets the old database's KeyError
    (client,) = made
    _finish(client)
    assert lab.outcomes("orders-from-new-store") == Counter(match=2, error=1, ignored=1, mismatch=1)
    assert lab.errors("orders-from-new-store") == Counter(KeyError=1)
    (example,) = lab.examples("orders-from-new-store")
    assert example["context"] == "customer"  # redacted, as every value of the example
    assert example["control"] == [{"sku": "D", "quantity": 3, "amount": "***"}]
    assert example["candidate"] == [{"sku": "D", "quantity": 2, "amount": "***"}]
