"""No server answer makes the CLI show a traceback: every one becomes words and an exit code.

The class of defect: a command that reads an answer assuming its shape (a
KeyError, a JSONDecodeError, a document re-validated out of its context).
Every server command is run against answers it cannot use: the real
server's refusals, nothing listening at all, and a real web server on
loopback that is not unveil (what a mistyped UNVEIL_URL or a proxy's error
page gives): HTML, JSON of another shape, failures.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from click.testing import CliRunner, Result

from tests.server_process import ADMIN_TOKEN, Server, database, start_server, stop
from unveil.cli.errors import EXIT_BAD_ANSWER, EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_USAGE
from unveil.cli.main import main

FLAGS_FILE = "flags:\n  dark-mode: {default: 'off'}\n"
UNLEASH_FILE = json.dumps({"version": 2, "features": [{"name": "u", "enabled": True}]})


def _commands(tmp: Path) -> list[list[str]]:
    """Every command that talks to a server, with arguments that are fine in themselves."""
    flags_file = tmp / "flags.yaml"
    flags_file.write_text(FLAGS_FILE)
    unleash_file = tmp / "features.json"
    unleash_file.write_text(UNLEASH_FILE)
    return [
        ["flags", "list", "-e", "staging"],
        ["flags", "show", "f", "-e", "staging"],
        ["flags", "create", "f", "-e", "staging"],
        ["flags", "enable", "f", "-e", "staging"],
        ["flags", "disable", "f", "-e", "staging"],
        ["flags", "rollout", "f", "10", "-e", "staging"],
        ["apply", "-f", str(flags_file), "-e", "staging"],
        ["apply", "-f", str(flags_file), "-e", "staging", "--dry-run"],
        ["export", "-e", "staging"],
        ["audit", "-e", "staging", "--since", "1h"],
        ["import", "unleash", str(unleash_file), "--env", "staging"],
    ]


class _NotUnveil(BaseHTTPRequestHandler):
    """Answers every request with the status, type and body chosen for the test."""

    answer: ClassVar[tuple[int, str, bytes]] = (200, "text/html", b"<html>hello</html>")

    def _reply(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        status, kind, body = self.answer
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.send_header("etag", '"1"')
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = _reply  # noqa: N815  (http.server names them so)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads the CLI's output, not this server's log."""


@pytest.fixture(scope="module")
def not_unveil() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotUnveil)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def unveil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with database("sqlite", tmp_path_factory.mktemp("answers")) as url:
        running = start_server(url)
        try:
            yield running
        finally:
            stop(running)


def _run(url: str, args: list[str], project: str = "shop") -> Result:
    env = {
        "UNVEIL_URL": url,
        "UNVEIL_TOKEN": ADMIN_TOKEN,
        "UNVEIL_PROJECT": project,
        "UNVEIL_CONFIG": "/nonexistent",
        "UNVEIL_DEBUG": "",
    }
    return CliRunner().invoke(main, args, env=env)


def _said_in_words(result: Result, codes: set[int]) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}"
    )
    assert "Traceback" not in result.output
    assert result.exit_code in codes, result.output
    assert result.output.strip(), "a failure must say something"


ODD_ANSWERS = {
    "html page": (200, "text/html", b"<html><body>It works!</body></html>"),
    "a JSON list": (200, "application/json", b"[1, 2, 3]"),
    "JSON of another shape": (200, "application/json", b'{"data": 3, "flags": {"x": 1}}'),
    "JSON of another shape, all through": (
        200,
        "application/json",
        b'{"data": [], "flags": 1, "version": "1", "entries": {}, "diff": {}, "changed": "yes"}',
    ),
    "an empty object": (200, "application/json", b"{}"),
    "a document the reader refuses": (
        200,
        "application/json",
        b'{"flags": {"f": {"rules": 3}}, "data": {}, "version": 1, "diff": [], "changed": 1}',
    ),
    "an apply answer with odd lists": (
        200,
        "application/json",
        b'{"diff": {"added": {"flags": 3}, "changed": {}, "removed": {"flags": [1]}}, '
        b'"changed": true, "version": 2, "entries": [3, {"before": "{"}]}',
    ),
    "a 500 page": (500, "text/html", b"<h1>Internal Server Error</h1>"),
    "a 502 from a proxy": (502, "text/plain", b"Bad Gateway"),
    "a 404 in another API's words": (404, "application/json", b'{"detail": "Not Found"}'),
    "a 403 with odd problems": (403, "application/json", b'{"error": 3, "problems": [1, "x"]}'),
}


@pytest.mark.parametrize("answer", list(ODD_ANSWERS), ids=list(ODD_ANSWERS))
def test_answers_of_a_server_that_is_not_unveil(
    not_unveil: str, tmp_path: Path, answer: str
) -> None:
    _NotUnveil.answer = ODD_ANSWERS[answer]
    for args in _commands(tmp_path):
        result = _run(not_unveil, args)
        status = ODD_ANSWERS[answer][0]
        # a 2xx answer may happen to have the promised shape: then the command succeeds
        allowed = {EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_BAD_ANSWER} | (
            {0} if status < 300 else set()
        )
        _said_in_words(result, allowed)
        if status >= 500:
            assert result.exit_code == EXIT_UNAVAILABLE, (args, result.output)
            assert str(status) in result.output
        elif status >= 400:
            assert result.exit_code == EXIT_REFUSED, (args, result.output)


def test_nothing_listening(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # the port is closed again: nothing listens there
    for args in _commands(tmp_path):
        result = _run(f"http://127.0.0.1:{port}", args)
        _said_in_words(result, {EXIT_UNAVAILABLE})
        assert "cannot reach" in result.output


def test_refusals_of_the_real_server(unveil: Server, tmp_path: Path) -> None:
    for args in _commands(tmp_path):
        missing_project = _run(unveil.url, args, project="nope")
        _said_in_words(missing_project, {EXIT_REFUSED})
        assert "404" in missing_project.output
        bad_token = CliRunner().invoke(
            main,
            args,
            env={"UNVEIL_URL": unveil.url, "UNVEIL_TOKEN": "x", "UNVEIL_CONFIG": "/none"},
        )
        _said_in_words(bad_token, {EXIT_REFUSED})
        assert "401" in bad_token.output
    unknown_flag = _run(unveil.url, ["flags", "show", "nope", "-e", "staging"])
    _said_in_words(unknown_flag, {EXIT_REFUSED})
    assert "404: no flag 'nope'" in unknown_flag.output


def test_usage_errors_are_exit_2(unveil: Server) -> None:
    result = _run(unveil.url, ["flags", "rollout", "f", "101", "-e", "staging"])
    _said_in_words(result, {EXIT_USAGE})
