"""The live client against a real server: stream, outages, disk cache, fork, events."""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server_process import Server, database, sdk_key, start_server, stop
from unveil import Client

FLAGS = "/api/v1/projects/shop/environments/production/flags"


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Server]:
    with database("sqlite", tmp_path) as url:
        server = start_server(url)
        try:
            yield server
        finally:
            stop(server)


def _put(server: Server, key: str, default: str, version: int | None = None) -> None:
    headers = {"If-Match": f'"{version}"'} if version else {}
    with server.client() as api:
        answer = api.put(f"{FLAGS}/{key}", json={"default": default}, headers=headers)
        assert answer.status_code in (200, 201), answer.text


class Changes:
    """Collects on_change calls; waits on them without sleeping."""

    def __init__(self, client: Client) -> None:
        self.keys: list[set[str]] = []
        self._event = threading.Condition()
        client.on_change(self._heard)

    def _heard(self, keys: set[str]) -> None:
        with self._event:
            self.keys.append(keys)
            self._event.notify_all()

    def wait_for(self, key: str, timeout: float = 15) -> bool:
        with self._event:
            return self._event.wait_for(lambda: any(key in k for k in self.keys), timeout)


def test_a_change_reaches_the_client_through_the_stream(running: Server, tmp_path: Path) -> None:
    _put(running, "checkout", "off")
    with Client(running.url, sdk_key(running.database_url), cache_dir=tmp_path) as client:
        assert client.wait_until_ready(15)
        assert client.status == "ready"
        assert client.enabled("checkout", {"key": "u"}) is False
        changes = Changes(client)
        _put(running, "checkout", "on", version=1)
        assert changes.wait_for("checkout")
        assert client.enabled("checkout", {"key": "u"}) is True
        assert changes.keys == [{"checkout"}]


def test_outage_memory_then_disk_cache_then_catching_up(running: Server, tmp_path: Path) -> None:
    key = sdk_key(running.database_url)
    _put(running, "checkout", "on")
    client = Client(running.url, key, cache_dir=tmp_path)
    assert client.wait_until_ready(15)
    running.kill()  # the server is gone
    assert client.enabled("checkout") is True  # memory
    client.close()

    restarted_client = Client(running.url, key, cache_dir=tmp_path, timeout=2)
    try:
        assert restarted_client.origin == "cache"  # disk, at once, with the server down
        assert restarted_client.status == "stale"
        assert restarted_client.enabled("checkout") is True
        assert restarted_client.is_ready is False

        back = start_server(running.database_url, port=running.port, seed=False)
        try:
            changes = Changes(restarted_client)
            _put(back, "checkout", "off", version=1)
            assert changes.wait_for("checkout", timeout=60)  # reconnects by itself
            assert restarted_client.enabled("checkout") is False
            assert restarted_client.origin == "server"
        finally:
            stop(back)
    finally:
        restarted_client.close()


class _Garbage(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html>definitely not flags</html>" if "snapshot" in self.path else b"{{{"
        self.send_response(200 if "snapshot" in self.path else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return


def test_a_server_answering_garbage_does_not_disturb_evaluation(tmp_path: Path) -> None:
    garbage = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
    threading.Thread(target=garbage.serve_forever, daemon=True).start()
    bootstrap = {"flags": {"checkout": {"default": "on"}}}
    url = f"http://127.0.0.1:{garbage.server_address[1]}"
    try:
        with Client(url, "k", cache_dir=tmp_path, bootstrap=bootstrap, events=False) as client:
            assert client.wait_until_ready(1.5) is False
            assert client.origin == "bootstrap"
            assert client.status == "stale"
            assert client.enabled("checkout") is True
            assert not list(tmp_path.iterdir())  # nothing bad was cached
    finally:
        garbage.shutdown()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_follows_changes_made_after_the_fork(
    running: Server, tmp_path: Path
) -> None:
    _put(running, "checkout", "off")
    client = Client(running.url, sdk_key(running.database_url), cache_dir=tmp_path)
    assert client.wait_until_ready(15)
    read_end, write_end = os.pipe()
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: like a gunicorn worker after --preload
        os.close(read_end)
        os.close(ready_read)
        seen = threading.Event()
        client.on_change(lambda keys: seen.set())
        os.write(ready_write, b"r")
        ok = seen.wait(20) and client.enabled("checkout") is True
        os.write(write_end, b"1" if ok else b"0")
        os._exit(0)
    os.close(write_end)
    os.close(ready_write)
    try:
        assert os.read(ready_read, 1) == b"r"
        _put(running, "checkout", "on", version=1)  # after the fork
        assert os.read(read_end, 1) == b"1"
    finally:
        os.waitpid(pid, 0)
        client.close()


def test_exposures_and_metrics_reach_the_server(running: Server, tmp_path: Path) -> None:
    _put(running, "checkout", "on")
    client = Client(running.url, sdk_key(running.database_url), cache_dir=tmp_path)
    assert client.wait_until_ready(15)
    for _ in range(100):
        client.enabled("checkout", {"key": "user-1"})  # one exposure: deduplicated
    client.enabled("checkout", {"key": "user-2"})
    client.track("conversion", {"key": "user-1"}, 2.5)
    client.close()  # flushes

    with running.client() as api:

        def counted() -> dict[tuple[str, str, str], Any]:
            url = "/api/v1/projects/shop/environments/production/events"
            rows = api.get(url, params={"flag": "checkout"}).json()["counts"]
            return {(r["variant"], r["metric"]): (r["count"], r["total"]) for r in rows}

        from tests.server_process import wait_for

        assert wait_for(lambda: len(counted()) == 2)
        assert counted() == {("on", "$exposure"): (2, 2.0), ("on", "conversion"): (1, 2.5)}


def test_the_event_buffer_is_bounded_and_counts_what_it_drops() -> None:
    from unveil.sdk.events import EventBuffer

    buffer = EventBuffer(capacity=3)
    for i in range(10):
        buffer.exposure("f", "on", f"u{i}")
    assert buffer.pending() == 3
    assert buffer.dropped == 7
    batch = buffer.take(2)
    buffer.track("m", {"key": "u0"})
    buffer.give_back(batch)  # room for one of the two
    assert buffer.pending() == 3
    assert buffer.dropped == 8


def test_a_client_needs_a_key_for_a_server() -> None:
    with pytest.raises(ValueError, match="sdk_key"):
        Client("http://127.0.0.1:9")
