"""A real ``unveil serve`` process on loopback, over SQLite or PostgreSQL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

ADMIN_TOKEN = "unveil-admin-test-" + "x" * 24
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """One server process and how to reach it."""

    url: str
    database_url: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path | None = None  # where the process's stderr (its JSON log lines) goes

    def client(self, token: str = ADMIN_TOKEN) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def kill(self) -> None:
        """kill -9: no chance to flush or close anything."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)


def wait_for(condition: Any, timeout: float = 30) -> bool:
    """Whether ``condition()`` became true within ``timeout`` seconds.

    For another process's state, which sends no event to await: it is polled.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def _wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # waiting for the port to open: there is no event to await
    raise RuntimeError("the server did not become ready")


def start_server(
    database_url: str,
    port: int | None = None,
    seed: bool = True,
    *extra: str,
    heartbeat: float = 0.5,
) -> Server:
    port = port or _free_port()
    env = {**os.environ, "UNVEIL_ADMIN_TOKEN": ADMIN_TOKEN}
    args = [sys.executable, "-m", "unveil.cli.main", "serve", "--port", str(port)]
    args += ["--database-url", database_url, "--stream-heartbeat", str(heartbeat), *extra]
    # the log goes to a file: a pipe nobody reads fills up and stops the server
    log = tempfile.NamedTemporaryFile(prefix="unveil-server-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=log)
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(url, process)
    except BaseException:  # a server that never came up must not outlive the test
        process.kill()
        process.wait(timeout=30)
        raise
    server = Server(url, database_url, process, port, Path(log.name))
    if seed:
        _seed(database_url)
    return server


def access_service(engine: Any) -> Any:
    """The access use cases over an engine, as the server builds them."""
    from unveil.service.access import AccessService
    from unveil.store.unit import Store

    return AccessService(Store(engine))


def _seed(database_url: str) -> None:
    from unveil.store.database import make_engine

    engine = make_engine(database_url)
    try:
        access_service(engine).ensure_environment("shop", "production")
        access_service(engine).ensure_environment("shop", "staging")
    finally:
        engine.dispose()


def stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    try:
        import psycopg

        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except Exception as exc:
        if os.environ.get("UNVEIL_TEST_REQUIRE_SERVICES"):
            pytest.fail(f"PostgreSQL is required here and unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    name = f"unveil_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@contextmanager
def migrated_engine(kind: str, tmp_path: Path) -> Iterator[Any]:
    """An engine on a fresh, migrated database of the kind, disposed afterwards."""
    from unveil.store.database import make_engine, upgrade

    with database(kind, tmp_path) as url:
        upgrade(url)
        engine = make_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


@contextmanager
def database(kind: str, tmp_path: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'unveil.db'}"
    else:
        with postgres_database() as url:
            yield url


def sdk_key(database_url: str, env: str = "production") -> str:
    """A new SDK key for an environment of project shop."""
    from unveil.store.database import make_engine

    engine = make_engine(database_url)
    try:
        access = access_service(engine)
        environment = access.environment_of("shop", env)
        name = f"sdk {env} {uuid.uuid4().hex[:8]}"  # token names are unique
        return access.create_token(name, "sdk", environment_id=environment)
    finally:
        engine.dispose()


class EventStream:
    """A server-sent-events client: one connection, events read as they come."""

    def __init__(self, server: Server, key: str) -> None:
        self._client = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        self._context = self._client.stream("GET", "/sdk/v1/stream")
        self.response = self._context.__enter__()
        self._lines = self.response.iter_lines()

    def next_event(self) -> tuple[str, dict[str, object]]:
        """The next event (heartbeats skipped): its name and JSON data."""
        import json

        name, data = "message", ""
        for line in self._lines:
            if line.startswith(":"):
                continue
            if line.startswith("event:"):
                name = line.partition(":")[2].strip()
            elif line.startswith("data:"):
                data += line.partition(":")[2].strip()
            elif line == "" and data:
                return name, json.loads(data)
        raise EOFError("the stream ended")

    def close(self) -> None:
        self._context.__exit__(None, None, None)
        self._client.close()
