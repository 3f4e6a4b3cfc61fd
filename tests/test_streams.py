"""Stream clients: bounded per client in bytes, cut off when behind, ended on revocation.

Against real server processes (raw sockets for clients that never read),
and the hub's first load of a snapshot with a write landing in the middle.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.event_flood import rss_bytes, wait_for
from tests.server_process import (
    EventStream,
    Server,
    database,
    postgres_database,
    sdk_key,
    start_server,
    stop,
)

FLAGS = "/api/v1/projects/shop/environments/production/flags"


def _big_flag(variant: int, keys: int = 10_000) -> dict[str, Any]:
    """A flag of about 280 kB: ten thousand individually targeted keys."""
    targets = [f"user-{variant:04d}-{i:015d}" for i in range(keys)]
    return {"kind": "boolean", "default": "off", "targets": {"on": targets}}


def _write_big_flag(server: Server, first: int, rounds: int) -> None:
    """Change big-0 ``rounds`` times (contents ``first`` on), each on the version it read."""
    with server.client() as api:
        etag = api.get(f"{FLAGS}/big-0").headers["etag"]
        for n in range(first, first + rounds):
            written = api.put(f"{FLAGS}/big-0", json=_big_flag(100 + n), headers={"If-Match": etag})
            assert written.status_code == 200
            etag = written.headers["etag"]


def _metric(server: Server, name: str) -> float:
    # 300 streams being opened on a busy two-core machine can hold a scrape past httpx's 5 s
    scraped = httpx.get(f"{server.url}/metrics", timeout=60).text
    found = re.search(rf"^{name} (\S+)$", scraped, re.M)
    assert found is not None, name
    return float(found.group(1))


def _raw_stream(server: Server, key: str) -> socket.socket:
    """A stream client that sends its request and then never reads."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the kernel holds little
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(
        f"GET /sdk/v1/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
    )
    return sock


class _Reader(threading.Thread):
    """A stream client that reads everything, as a healthy SDK does."""

    def __init__(self, server: Server, key: str) -> None:
        super().__init__(daemon=True)
        self.stream = EventStream(server, key)
        self.events: list[tuple[str, dict[str, object]]] = [self.stream.next_event()]
        self.ended = threading.Event()

    def run(self) -> None:
        try:
            while True:
                self.events.append(self.stream.next_event())
        except (EOFError, httpx.HTTPError):
            self.ended.set()


def test_clients_that_never_read_cost_bounded_memory_and_are_cut_off(tmp_path: Path) -> None:
    """Issue 10.5: 1,000 streams that never read and ten writes of a large flag took
    memory from 284 MB to 2.1 GB (each client held its own copy of each message)."""
    clients = 300
    with database("sqlite", tmp_path) as url:
        server = start_server(url)
        sockets: list[socket.socket] = []
        try:
            key = sdk_key(url)
            with server.client() as api:
                for n in range(8):  # a snapshot of about 2 MB
                    assert api.put(f"{FLAGS}/big-{n}", json=_big_flag(n)).status_code == 201
            reader = _Reader(server, key)
            reader.start()
            _write_big_flag(server, 0, rounds=10)  # the write path's own memory, first
            assert wait_for(lambda: len(reader.events) == 11)
            before = rss_bytes(server.process.pid)
            peak = before
            sampling = threading.Event()

            def sample() -> None:
                nonlocal peak
                while not sampling.is_set():
                    peak = max(peak, rss_bytes(server.process.pid))
                    sampling.wait(0.1)  # sampling memory, not waiting for anything

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            sockets = [_raw_stream(server, key) for _ in range(clients)]
            assert wait_for(lambda: _metric(server, "unveil_stream_clients") == clients + 1)
            _write_big_flag(server, 10, rounds=10)
            assert wait_for(lambda: len(reader.events) == 21)  # the snapshot and twenty patches
            sampling.set()
            sampler.join()
            growth = peak - before
            assert growth < 100 * 2**20, f"memory grew by {growth / 2**20:.0f} MB"
            assert [name for name, _ in reader.events] == ["snapshot"] + ["patch"] * 20
            # every client that never read fell behind and was cut off; the reader was not
            assert wait_for(lambda: _metric(server, "unveil_stream_cut_off_total") == clients)
            assert _metric(server, "unveil_stream_clients") == 1
            assert not reader.ended.is_set()
            # a cut-off client that reads at last finds its stream ended, not hanging
            late = sockets[0]
            late.settimeout(30)
            received = b""
            while not received.endswith(b"0\r\n\r\n"):
                chunk = late.recv(1 << 20)
                assert chunk, "the connection closed without ending the stream"
                received += chunk
            # and reconnecting resyncs: the whole snapshot, at the newest version
            again = EventStream(server, key)
            try:
                name, snapshot = again.next_event()
                assert name == "snapshot"
                assert snapshot["flags"]["big-0"]["targets"] == _big_flag(119)["targets"]  # type: ignore[index]
            finally:
                again.close()
            reader.stream.close()
        finally:
            for sock in sockets:
                sock.close()
            stop(server)


def _ends_within(stream: EventStream, seconds: float) -> bool:
    """Whether the stream ends before the time is up (heartbeats keep the loop turning)."""
    deadline = time.monotonic() + seconds
    try:
        for _line in stream._lines:  # the helper's own iterator over lines
            if time.monotonic() > deadline:
                return False
    except httpx.HTTPError:
        pass
    return True


def _token_ids(server: Server) -> list[int]:
    with server.client() as api:
        tokens = api.get("/api/v1/tokens").json()["tokens"]
    return [t["id"] for t in tokens if t["kind"] == "sdk"]


def test_revoking_a_key_ends_its_streams_on_every_node(tmp_path: Path) -> None:
    """Issue 10.6: a revoked SDK key's open stream kept receiving patches."""
    with postgres_database() as url:
        node_a = start_server(url)
        node_b = start_server(url, seed=False)
        streams: list[EventStream] = []
        try:
            revoked, kept = sdk_key(url), sdk_key(url)
            revoked_id = _token_ids(node_a)[0]  # the first SDK key made
            on_a, on_b, other = (
                EventStream(node_a, revoked),
                EventStream(node_b, revoked),
                EventStream(node_b, kept),
            )
            streams = [on_a, on_b, other]
            for stream in streams:
                assert stream.next_event()[0] == "snapshot"
            with node_a.client() as api:
                assert api.delete(f"/api/v1/tokens/{revoked_id}").status_code == 204
            started = time.monotonic()
            assert _ends_within(on_a, 2), "the revoking node kept the stream open"
            assert _ends_within(on_b, 12), "another node kept the stream open"  # its check: 5 s
            assert time.monotonic() - started < 12
            # the other key's stream is untouched and still follows changes
            with node_a.client() as api:
                assert api.put(f"{FLAGS}/after", json={"default": "off"}).status_code == 201
            name, patch = other.next_event()
            assert name == "patch"
            assert "after" in patch["flags"]  # type: ignore[operator]
            # and the revoked key opens no new stream
            with node_b.client(revoked) as sdk:
                assert wait_for(lambda: sdk.get("/sdk/v1/snapshot").status_code == 401, 10)
        finally:
            for stream in streams:
                stream.close()
            stop(node_a)
            stop(node_b)


def test_a_write_during_a_first_load_is_not_left_stale(tmp_path: Path) -> None:
    """Issue 9.2: a write committing while a node first loads an environment found no
    environment to refresh, and the node served the older snapshot for seconds."""
    from unveil.server.hub import Hub
    from unveil.service.access import AccessService
    from unveil.service.documents import Loaded
    from unveil.service.flags import Change, FlagService
    from unveil.store.database import make_engine, upgrade
    from unveil.store.unit import Store

    url = f"sqlite:///{tmp_path / 'unveil.db'}"
    upgrade(url)
    engine = make_engine(url)
    store = Store(engine)
    env_id = AccessService(store).ensure_environment("shop", "production")

    class WriteWhileLoading(FlagService):
        """The real service; one real write commits just after the first load read."""

        racing = True

        def loaded(self, environment_id: int) -> Loaded:
            read = super().loaded(environment_id)
            if self.racing:
                self.racing = False
                self.put_item(
                    "flags", "shop", "production", "late", {"default": "off"}, Change("t"), None
                )
            return read

    flags = WriteWhileLoading(store)
    hub = Hub(flags, check_interval=3600)  # no periodic check to catch up later
    store.after_commit.append(hub.changed_here)
    try:
        served = hub.current(env_id)
        assert "late" in served.ruleset
        cached = hub.cached(env_id)
        assert cached is not None
        assert cached.version == flags.version_of(env_id)
    finally:
        engine.dispose()


class _OfrepEvents:
    """A client of OFREP's change notices (GET /ofrep/v1/events): its lines as they come."""

    def __init__(self, server: Server, key: str) -> None:
        self._client = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        self._context = self._client.stream("GET", "/ofrep/v1/events")
        response = self._context.__enter__()
        assert response.status_code == 200
        self._lines = response.iter_lines()
        assert next(self._lines) == ": listening"

    def ends_within(self, seconds: float) -> bool:
        """Whether the stream ends before the time is up (heartbeats keep the loop turning)."""
        deadline = time.monotonic() + seconds
        try:
            for _line in self._lines:
                if time.monotonic() > deadline:
                    return False
        except httpx.HTTPError:
            pass
        return True

    def next_data(self) -> str:
        """The data of the next notice (heartbeats skipped)."""
        for line in self._lines:
            if line.startswith("data:"):
                return line.partition(":")[2].strip()
        raise EOFError("the stream ended")

    def close(self) -> None:
        self._context.__exit__(None, None, None)
        self._client.close()


def test_revoking_a_key_ends_its_ofrep_notices_on_every_node(tmp_path: Path) -> None:
    """Issue 10.6 for OFREP's stream too: the change notices of a revoked key end."""
    with postgres_database() as url:
        node_a = start_server(url)
        node_b = start_server(url, seed=False)
        streams: list[_OfrepEvents] = []
        try:
            revoked, kept = sdk_key(url), sdk_key(url)
            revoked_id = _token_ids(node_a)[0]  # the first SDK key made
            on_a, on_b, other = (
                _OfrepEvents(node_a, revoked),
                _OfrepEvents(node_b, revoked),
                _OfrepEvents(node_b, kept),
            )
            streams = [on_a, on_b, other]
            with node_a.client() as api:
                assert api.delete(f"/api/v1/tokens/{revoked_id}").status_code == 204
            started = time.monotonic()
            assert on_a.ends_within(2), "the revoking node kept the notices coming"
            assert on_b.ends_within(12), "another node kept the notices coming"  # its check: 5 s
            assert time.monotonic() - started < 12
            with node_a.client() as api:
                assert api.put(f"{FLAGS}/after", json={"default": "off"}).status_code == 201
            assert '"refetchEvaluation"' in other.next_data()  # the other key's still come
        finally:
            for stream in streams:
                stream.close()
            stop(node_a)
            stop(node_b)
