"""The live client over an in-memory transport (httpx.MockTransport), no sockets.

The server side is tests/memory_server.py; each test makes it answer what a
real server only answers in a bad moment: an older revision, a refused key,
a broken stream. The client is the real one, threads and all.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.memory_server import MemoryServer
from unveil import Client, ErrorCode

URL = "http://unveil.test"


class Heard:
    """Collects a client's on_change and on_status calls; waits on them without sleeping."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self.changes: list[set[str]] = []
        self.statuses: list[tuple[str, str | None]] = []
        self._condition = threading.Condition()
        client.on_change(self._changed)
        client.on_status(self._status)

    def _changed(self, keys: set[str]) -> None:
        with self._condition:
            self.changes.append(keys)
            self._condition.notify_all()

    def _status(self, status: str, problem: str | None) -> None:
        with self._condition:
            self.statuses.append((status, problem))
            self._condition.notify_all()

    def change_of(self, key: str, timeout: float = 10) -> bool:
        with self._condition:
            return self._condition.wait_for(lambda: any(key in c for c in self.changes), timeout)

    def status(self, status: str, timeout: float = 10) -> bool:
        """Wait for the client to be in ``status`` (it may have been before we listened)."""
        with self._condition:
            return self._condition.wait_for(
                lambda: self._client.status == status or any(s == status for s, _ in self.statuses),
                timeout,
            )


@pytest.fixture
def server() -> Iterator[MemoryServer]:
    memory = MemoryServer({"checkout": {"default": "on"}, "banner": {"default": "off"}})
    yield memory
    memory.close()


def _client(server: MemoryServer, tmp_path: Path, **options: Any) -> Client:
    options.setdefault("flush_interval", 0.05)
    return Client(URL, "sdk-key", cache_dir=tmp_path, transport=server.transport(), **options)


def _cache_file(tmp_path: Path) -> Path:
    files = [p for p in tmp_path.iterdir() if p.suffix == ".json"]
    assert len(files) == 1
    return files[0]


def test_snapshot_and_patches_arrive_without_a_socket(server: MemoryServer, tmp_path: Path) -> None:
    with _client(server, tmp_path) as client:
        heard = Heard(client)
        assert client.wait_until_ready(10)
        assert (client.status, client.origin, client.revision) == ("ready", "server", 1)
        assert client.enabled("checkout", {"key": "u"}) is True
        server.publish({"checkout": {"default": "off"}})
        assert heard.change_of("checkout")
        assert client.enabled("checkout", {"key": "u"}) is False
        assert client.revision == 2


# -- issue 10, 13: revisions only go forward ------------------------------------------------


def test_an_older_polled_snapshot_after_a_stream_break_is_not_installed(
    server: MemoryServer, tmp_path: Path
) -> None:
    with _client(server, tmp_path) as client:
        heard = Heard(client)
        assert client.wait_until_ready(10)
        server.publish({"checkout": {"default": "off"}})  # revision 2
        assert heard.change_of("checkout")
        older = server.snapshot()
        older.update(revision=1, flags={**older["flags"], "checkout": {"default": "on"}})
        server.polled = older  # a lagging node answers the poll
        server.streamed = older  # and the stream's first snapshot
        polls = server.count("GET /sdk/v1/snapshot")
        server.break_streams()
        assert server.wait_for(lambda: server.count("GET /sdk/v1/snapshot") > polls)
        streams = server.count("GET /sdk/v1/stream")
        assert server.wait_for(lambda: server.count("GET /sdk/v1/stream") > streams)
        server.polled = server.streamed = None
        assert client.revision == 2
        assert client.enabled("checkout", {"key": "u"}) is False
        assert heard.changes == [{"checkout"}]  # never went back and forth


def test_a_disk_cache_newer_than_the_server_gives_way_to_the_server(
    server: MemoryServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with _client(server, tmp_path, events=False) as first:
        assert first.wait_until_ready(10)
    cache = _cache_file(tmp_path)
    cached = json.loads(cache.read_text())
    cached.update(revision=10, flags={**cached["flags"], "checkout": {"default": "off"}})
    cache.write_text(json.dumps(cached))  # the server's database is then restored to revision 1
    with caplog.at_level(logging.WARNING, "unveil.sdk"):
        client = _client(server, tmp_path, events=False)
        try:
            assert client.wait_until_ready(10)  # before: never ready, the server ignored
            assert (client.status, client.origin, client.revision) == ("ready", "server", 1)
            assert client.enabled("checkout") is True
            heard = Heard(client)
            server.publish({"checkout": {"default": "off"}})  # revision 2 follows as usual
            assert heard.change_of("checkout")
            assert client.revision == 2
        finally:
            client.close()
    assert "older than the disk cache's 10" in caplog.text


# -- issue 10, 15: a refused key ----------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_is_reported_as_refused_and_backed_off(
    server: MemoryServer, tmp_path: Path, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    server.refuse = status
    with caplog.at_level(logging.WARNING, "unveil.sdk"):
        client = _client(server, tmp_path, events=False)
        heard = Heard(client)
        try:
            assert heard.status("refused")
            assert client.status == "refused"
            assert client.problem is not None
            assert f"refused the SDK key ({status}" in client.problem
            # backed off: no poll after the refused stream, and no second try within 2 s
            assert not server.wait_for(lambda: len(server.requests) > 1, timeout=2)
            assert server.requests == ["GET /sdk/v1/stream"]
        finally:
            client.close()
    assert "refused the SDK key" in caplog.text
    assert "bad answer" not in caplog.text


def test_a_key_accepted_again_clears_refused(server: MemoryServer, tmp_path: Path) -> None:
    from unveil.sdk import sync

    server.refuse = 401
    original = sync._FIRST_REFUSED_PAUSE
    sync._FIRST_REFUSED_PAUSE = 0.1  # so that the retry comes within the test
    try:
        with _client(server, tmp_path, events=False) as client:
            heard = Heard(client)
            assert heard.status("refused")
            server.refuse = None
            assert client.wait_until_ready(10)
            assert heard.status("ready")
            assert (client.status, client.problem) == ("ready", None)
    finally:
        sync._FIRST_REFUSED_PAUSE = original


# -- issue 10, 14: nothing a caller passes stops the background threads -------------------


@pytest.mark.parametrize(
    ("metric", "value"),
    [
        ("latency", math.nan),
        ("latency", math.inf),
        ("latency", -math.inf),
        ("latency", 10**400),
        ("latency", 1.7e308),  # finite, but two of them add up to infinity
        ("latency", -1e201),
        ("latency", "12"),
        ("latency", True),
        ("", 1.0),
        ("a" * 201, 1.0),
        ("bad\x00name", 1.0),
        (None, 1.0),
    ],
)
def test_a_bad_metric_is_refused_at_the_call_and_the_sender_keeps_going(
    server: MemoryServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    metric: Any,
    value: Any,
) -> None:
    client = _client(server, tmp_path)
    assert client.wait_until_ready(10)
    with caplog.at_level(logging.WARNING, "unveil.sdk"):
        client.track(metric, {"key": "user-1"}, value)  # never raises
        client.track("after", {"key": "user-1"}, 2.0)
        # before: the sender thread died on NaN, and nothing was sent again
        assert server.wait_for(lambda: any(e.get("metric") == "after" for e in server.events))
        client.close()  # and closing does not raise either
    assert all(e.get("metric") != metric for e in server.events)
    assert client.events is not None
    assert client.events.refused == 1
    assert "refused" in caplog.text


def test_the_sender_survives_an_event_it_cannot_encode(
    server: MemoryServer, tmp_path: Path
) -> None:
    from unveil.sdk.events import encode_events

    body, kept = encode_events([{"value": math.nan}, {"value": 1.0}, {"value": object()}])
    assert json.loads(body) == {"events": [{"value": 1.0}]}
    assert kept == [{"value": 1.0}]


def test_track_takes_a_targeting_key_and_attributes_it(
    server: MemoryServer, tmp_path: Path
) -> None:
    with _client(server, tmp_path) as client:
        assert client.wait_until_ready(10)
        assert client.enabled("checkout", {"key": "user-1"}) is True
        client.track("conversion", "user-1", 3.0)
        assert client.events is not None
        assert client.events.refused == 0
        assert server.wait_for(lambda: any(e["kind"] == "metric" for e in server.events))
    metric = next(e for e in server.events if e["kind"] == "metric")
    assert (metric["metric"], metric["value"], metric["variants"]) == (
        "conversion",
        3.0,
        {"checkout": "on"},
    )


def test_track_refuses_a_context_that_is_neither_mapping_nor_key(
    server: MemoryServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with _client(server, tmp_path) as client, caplog.at_level(logging.WARNING, "unveil.sdk"):
        client.track("m", 42)  # type: ignore[arg-type]
        assert client.events is not None
        assert client.events.refused == 1
    assert "a context must be a mapping or a targeting key, not int" in caplog.text


class _Exploding(dict[str, Any]):
    """A mapping that raises on every read, as a broken ORM proxy might."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("boom")

    def get(self, key: str, default: Any = None) -> Any:
        raise RuntimeError("boom")

    def keys(self) -> Any:
        raise RuntimeError("boom")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("boom")


def test_a_context_that_raises_gives_the_default_with_an_error_code(
    server: MemoryServer, tmp_path: Path
) -> None:
    with _client(server, tmp_path) as client:
        assert client.wait_until_ready(10)
        context = _Exploding(key="u")
        assert client.enabled("checkout", context, default=False) is False
        assert client.value("checkout", context, "x") == "x"
        result = client.evaluate("checkout", context, None)
        assert result.error_code is ErrorCode.INVALID_CONTEXT
        assert "boom" in (result.error_message or "")
        client.track("m", context)  # attributed to nobody, not an exception
    offline = Client.from_file({"flags": {"f": {"default": "on"}}})
    assert offline.enabled("f", _Exploding(), default=False) is False
    assert offline.evaluate("f", _Exploding()).error_code is ErrorCode.INVALID_CONTEXT


def test_a_deeply_nested_disk_cache_is_ignored(
    server: MemoryServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with _client(server, tmp_path, events=False) as first:
        assert first.wait_until_ready(10)
    cache = _cache_file(tmp_path)
    cache.write_text("[" * 200_000 + "]" * 200_000)
    server.refuse = 503  # the server away: the cache is all there is
    with caplog.at_level(logging.WARNING, "unveil.sdk"):
        client = _client(server, tmp_path, events=False)  # before: RecursionError here
        client.close()
    assert client.origin == "none"
    assert "ignoring the disk cache" in caplog.text


# -- issue 9, 4: the exposure window is per flag ---------------------------------------------


def _exposures(server: MemoryServer, flag: str) -> int:
    return sum(1 for e in server.events if e["kind"] == "exposure" and e["flag"] == flag)


def test_a_change_of_an_unrelated_flag_keeps_the_exposure_window(
    server: MemoryServer, tmp_path: Path
) -> None:
    with _client(server, tmp_path) as client:
        heard = Heard(client)
        assert client.wait_until_ready(10)
        for _ in range(3):
            client.enabled("checkout", {"key": "user-1"})
        assert server.wait_for(lambda: _exposures(server, "checkout") == 1)

        server.publish({"banner": {"default": "on"}})  # another flag changes
        assert heard.change_of("banner")
        client.enabled("checkout", {"key": "user-1"})
        client.enabled("banner", {"key": "user-1"})  # a marker that the batch after went out
        assert server.wait_for(lambda: _exposures(server, "banner") == 1)
        assert _exposures(server, "checkout") == 1  # before: sent again

        server.publish({"checkout": {"default": "off"}})  # the flag itself changes
        assert heard.change_of("checkout")
        client.enabled("checkout", {"key": "user-1"})
        assert server.wait_for(lambda: _exposures(server, "checkout") == 2)


def test_a_new_window_reports_every_key_again(server: MemoryServer, tmp_path: Path) -> None:
    with _client(server, tmp_path) as client:
        assert client.wait_until_ready(10)
        assert client.events is not None
        client.value("checkout", {"key": "user-1"})
        client.value("checkout", {"key": "user-1"})
        client.value("checkout", {})  # keyless contexts: once per flag and variant too
        client.value("checkout", {"key": 7})
        assert server.wait_for(lambda: _exposures(server, "checkout") == 2)
        client.events.new_window()
        client.evaluate("checkout", {"key": "user-1"})
        assert server.wait_for(lambda: _exposures(server, "checkout") == 3)
