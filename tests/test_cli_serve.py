"""``unveil serve`` (and so ``make run``) on a port someone else holds."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.server_process import ADMIN_TOKEN, database, start_server, stop
from unveil.cli.errors import EXIT_UNAVAILABLE


def _serve(port: int, data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("UNVEIL_ADMIN_TOKEN", "UNVEIL_DATABASE_URL")
    }
    args = [sys.executable, "-m", "unveil.cli.main", "serve", "--port", str(port)]
    args += ["--data-dir", str(data_dir), *extra]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_a_taken_port_is_said_and_nothing_is_minted(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        for extra in (("--demo",), ()):
            result = _serve(port, data_dir, *extra)
            assert result.returncode == EXIT_UNAVAILABLE, result.stderr
            assert f"port {port} is taken" in result.stderr
            assert "--port" in result.stderr
            assert "token" not in result.stderr.lower()
            assert "serving on" not in result.stderr
            assert "Traceback" not in result.stderr
    assert not data_dir.exists()  # no database made, no migration run, no token stored


def test_a_port_it_may_not_use_is_said_too(tmp_path: Path) -> None:
    result = _serve(8400, tmp_path, "--host", "192.0.2.1")  # an address this machine has not
    assert result.returncode == EXIT_UNAVAILABLE, result.stderr
    assert "cannot listen on 192.0.2.1:8400" in result.stderr
    assert "token" not in result.stderr.lower()


def test_the_port_is_held_from_the_check_to_serving(tmp_path: Path) -> None:
    """The server answers on the port it bound first, and a second server there is refused."""
    with database("sqlite", tmp_path) as url:
        running = start_server(url)
        try:
            with httpx.Client(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
                assert client.get(f"{running.url}/api/v1/projects").status_code == 200
            second = _serve(running.port, tmp_path / "other")
            assert second.returncode == EXIT_UNAVAILABLE
            assert f"port {running.port} is taken" in second.stderr
        finally:
            stop(running)


def _access_lines(log: Path) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("logger") == "uvicorn.access"]


def test_the_access_log_is_off_unless_asked_for(tmp_path: Path) -> None:
    """Every answer is counted in /metrics; a log line per request only with --access-log."""
    with database("sqlite", tmp_path) as url:
        for extra, expected in (((), 0), (("--access-log",), 3)):
            running = start_server(url, None, False, *extra)
            try:
                assert running.log is not None
                before = len(_access_lines(running.log))  # the readiness checks of the start
                with httpx.Client(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
                    for _ in range(3):
                        assert client.get(f"{running.url}/api/v1/projects").status_code == 200
            finally:
                stop(running)  # the log is complete once the process has ended
            lines = _access_lines(running.log)
            assert len(lines) - before == expected
            if expected:
                assert all("/api/v1/projects" in str(line["message"]) for line in lines[-3:])
