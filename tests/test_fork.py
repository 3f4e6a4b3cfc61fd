"""A forked child never deadlocks on a lock its parent held at the fork (issue 9, 4).

Both ways an application forks: a bare ``os.fork`` and gunicorn with
``--preload``, each with a parent thread holding the client's event buffer
lock at the moment of the fork, against a real server.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server_process import Server, database, sdk_key, start_server, stop, wait_for
from unveil import Client

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")

FLAGS = "/api/v1/projects/shop/environments/production/flags"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Server]:
    with database("sqlite", tmp_path) as url:
        server = start_server(url)
        try:
            with server.client() as api:
                api.put(f"{FLAGS}/checkout", json={"default": "on"}).raise_for_status()
            yield server
        finally:
            stop(server)


def _counts(server: Server) -> dict[tuple[str, str], int]:
    with server.client() as api:
        url = "/api/v1/projects/shop/environments/production/events"
        rows = api.get(url, params={"flag": "checkout"}).json()["counts"]
    return {(r["variant"], r["metric"]): r["count"] for r in rows}


def _metric_count(server: Server, metric: str) -> int:
    with server.client() as api:
        url = "/api/v1/projects/shop/environments/production/events"
        rows = api.get(url).json()["counts"]
    return sum(r["count"] for r in rows if r["metric"] == metric)


def test_a_child_forked_while_a_parent_thread_holds_the_event_lock(
    running: Server, tmp_path: Path
) -> None:
    client = Client(
        running.url, sdk_key(running.database_url), cache_dir=tmp_path, flush_interval=0.2
    )
    assert client.wait_until_ready(15)
    assert client.events is not None
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        assert client.events is not None
        with client.events._lock:
            held.set()
            release.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(10)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the lock was held by a thread that does not exist here
        try:
            os.close(read_end)
            ok = client.enabled("checkout", {"key": "child-user"}) is True
            client.track("from-the-child", {"key": "child-user"})
            client.close()  # sends the child's events
            os.write(write_end, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write_end)
    release.set()
    holder.join()
    try:
        answered, _, _ = select.select([read_end], [], [], 30)
        if not answered:
            os.kill(pid, signal.SIGKILL)
        assert answered, "the forked child hung on a lock its parent held"
        assert os.read(read_end, 1) == b"1"
    finally:
        os.waitpid(pid, 0)
        os.close(read_end)
        client.close()
    # the child's exposure and metric reached the server (the parent evaluated nothing)
    assert wait_for(lambda: _counts(running).get(("on", "$exposure")) == 1)
    assert wait_for(lambda: _metric_count(running, "from-the-child") == 1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str, **params: Any) -> dict[str, Any]:
    answer = httpx.get(url, params=params, timeout=25)
    answer.raise_for_status()
    return dict(answer.json())


def test_gunicorn_preload_workers_serve_and_follow_changes(running: Server, tmp_path: Path) -> None:
    pytest.importorskip("gunicorn")
    port = _free_port()
    env = {
        **os.environ,
        "UNVEIL_URL": running.url,
        "UNVEIL_SDK_KEY": sdk_key(running.database_url),
        "UNVEIL_CACHE_DIR": str(tmp_path / "cache"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    log = (tmp_path / "gunicorn.log").open("wb")
    args = ["--preload", "--workers", "2", "--bind", f"127.0.0.1:{port}", "--timeout", "60"]
    master = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", *args, "tests.wsgi_app:app"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,  # its own process group: workers are ended with it
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        assert wait_for(lambda: _answers(url, master), timeout=30), (
            tmp_path / "gunicorn.log"
        ).read_text()
        first = _get(url)  # before: the worker hung here, on the lock the master's thread held
        assert first["checkout"] is True
        assert first["pid"] != master.pid
        with running.client() as api:
            flag = api.get(f"{FLAGS}/checkout")
            body = {**flag.json()["data"], "default": "off"}
            changed = api.put(
                f"{FLAGS}/checkout", json=body, headers={"If-Match": flag.headers["etag"]}
            )
            assert changed.status_code == 200, changed.text
        later = _get(url, until="off")  # a worker follows the change made after the fork
        assert later["checkout"] is False
        assert wait_for(lambda: _metric_count(running, "served") >= 2)  # workers send events
    finally:
        master.terminate()
        try:
            master.wait(timeout=30)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(master.pid, signal.SIGKILL)  # a worker left hanging, if any
        log.close()


def _answers(url: str, master: subprocess.Popen[bytes]) -> bool:
    if master.poll() is not None:
        raise RuntimeError(f"gunicorn exited with {master.returncode}")
    try:
        return httpx.get(url, timeout=25).status_code == 200
    except httpx.TransportError:
        return False
