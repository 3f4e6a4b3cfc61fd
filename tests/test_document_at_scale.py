"""Config as code at ten thousand flags, against real server processes.

``PUT .../document``, ``unveil apply`` and ``unveil export`` take an
environment of 10,000 flags (3.3 MB of JSON); the diff ``apply`` prints
stays a screenful (counts, then at most fifty keys of each kind and how
many more); and the document limit is its own, set by ``unveil serve
--document-limit`` or ``UNVEIL_DOCUMENT_LIMIT``: a document over it is
refused with 413 while it is still arriving, saying which limit it crossed.
"""

from __future__ import annotations

import json
import select
import socket
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server_process import ADMIN_TOKEN, Server, database, start_server, stop
from tests.test_cli_server import _cli
from unveil.cli.diff import KEYS_SHOWN
from unveil.core import document_to_data, parse_document

ROOT = Path(__file__).resolve().parent.parent
DOCUMENT = "/api/v1/projects/shop/environments/production/document"
MIB = 1 << 20


def _environment(size: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "bench"))
    from scale import environment  # the mix of shapes bench/scale.py measures

    return environment(size)


@pytest.fixture(scope="module")
def big() -> dict[str, Any]:
    return _environment(10_000)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with database("sqlite", tmp_path_factory.mktemp("scale")) as url:
        running = start_server(url)
        try:
            yield running
        finally:
            stop(running)


def test_apply_and_export_ten_thousand_flags(
    server: Server, big: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "flags.json"
    path.write_text(json.dumps(big), encoding="utf-8")
    assert len(path.read_bytes()) > 3 * MIB  # over the 1 MiB every other body may send

    first = _cli(server, "apply", "-f", str(path), "-e", "production")
    assert first.exit_code == 0, first.output[-2000:]
    lines = first.output.splitlines()
    assert lines[0] == "production: flags: 10000 added; segments: 500 added"
    assert f"… and {10_000 - KEYS_SHOWN} more flags added" in lines
    assert f"… and {500 - KEYS_SHOWN} more segments added" in lines
    assert sum(line.startswith("+ flag ") for line in lines) == KEYS_SHOWN
    assert len(lines) < 2 * KEYS_SHOWN + 10

    changed = {**big, "flags": {k: {**f, "description": "v2"} for k, f in big["flags"].items()}}
    path.write_text(json.dumps(changed), encoding="utf-8")
    second = _cli(server, "apply", "-f", str(path), "-e", "production", "--dry-run")
    assert second.exit_code == 0, second.output[-2000:]
    lines = second.output.splitlines()
    assert lines[0] == "production: flags: 10000 changed"
    assert f"… and {10_000 - KEYS_SHOWN} more flags changed" in lines
    assert not any("description" in line for line in lines)  # too many for field lines
    assert len(lines) < KEYS_SHOWN + 10

    exported = _cli(server, "export", "-e", "production", "--to", "json")
    assert exported.exit_code == 0, exported.output[-2000:]
    assert json.loads(exported.output) == document_to_data(parse_document(big))


def _send_chunked(server: Server, path: str, body: bytes) -> tuple[int, dict[str, Any], int]:
    """PUT ``body`` in 256 kB chunks, stopping once the server answers.

    The status, the answer's JSON, and how many body bytes had been sent
    when it came (the server cannot have read more).
    """
    head = [
        f"PUT {path} HTTP/1.1",
        f"Host: 127.0.0.1:{server.port}",
        f"Authorization: Bearer {ADMIN_TOKEN}",
        "Content-Type: application/json",
        "Transfer-Encoding: chunked",
    ]
    sent = 0
    answer = b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        while sent < len(body):
            readable, writable, _ = select.select([sock], [sock], [], 30)
            if readable:
                break
            if writable:
                chunk = body[sent : sent + 256 * 1024]
                try:
                    sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += len(chunk)
        else:
            sock.sendall(b"0\r\n\r\n")
        deadline = time.monotonic() + 120
        length: int | None = None
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
            head, _, rest = answer.partition(b"\r\n\r\n")
            if length is None and _:
                found = [h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length:")]
                length = int(found[0].split(b":")[1]) if found else None
            if length is not None and len(rest) >= length:
                break
    head, _, rest = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(rest), sent


def test_the_document_limit_is_set_by_serve_and_refuses_early(
    tmp_path: Path, big: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    body = json.dumps(big).encode()
    monkeypatch.setenv("UNVEIL_DOCUMENT_LIMIT", "1")  # MiB: a third of the document
    with database("sqlite", tmp_path) as url:
        small = start_server(url)
        try:
            # the document and then 64 MiB of blanks (valid JSON still): more than the
            # sockets between the two processes hold, so the answer must come mid-way
            padded = body + b" " * (64 * MIB)
            status, answer, sent = _send_chunked(small, DOCUMENT, padded)
            assert status == 413
            assert f"larger than {MIB} bytes" in answer["error"]
            assert "--document-limit" in answer["error"]
            assert sent < 32 * MIB, sent  # refused while most of it was still to come
            admin = httpx.Client(
                base_url=small.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
            )
            with admin:
                # nothing was applied; a one-flag document still fits
                assert admin.get(DOCUMENT).json()["flags"] == {}
                fits = admin.put(DOCUMENT, json={"flags": {"one": {"default": "off"}}})
                assert fits.status_code == 200, fits.text
            # the other routes keep their own 1 MiB limit
            flag = json.dumps({"default": "off", "salt": "y" * (MIB + 10)}).encode()
            status, answer, _ = _send_chunked(small, f"{DOCUMENT[:-8]}flags/one", flag)
            assert status == 413
            assert "the limit of one request here" in answer["error"]
        finally:
            stop(small)
    monkeypatch.delenv("UNVEIL_DOCUMENT_LIMIT")
    (tmp_path / "option").mkdir()
    with database("sqlite", tmp_path / "option") as url:
        roomy = start_server(url, None, True, "--document-limit", "8")
        try:
            status, answer, _ = _send_chunked(roomy, DOCUMENT, body)
            assert status == 200, answer
            assert answer["changed"] is True
        finally:
            stop(roomy)


def test_apply_of_ten_thousand_flags_can_be_scheduled(
    server: Server, big: dict[str, Any], tmp_path: Path
) -> None:
    # a scheduled apply carries the whole document too: it has the document's limit
    # (it once had the 1 MiB of one flag, and a 413 that pointed at PUT .../document)
    path = tmp_path / "flags.json"
    path.write_text(json.dumps(big), encoding="utf-8")
    at = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    scheduled = _cli(server, "apply", "-f", str(path), "-e", "staging", "--schedule", at)
    assert scheduled.exit_code == 0, scheduled.output[-2000:]
    listed = _cli(server, "schedules", "list", "-e", "staging")
    assert "pending" in listed.output, listed.output
    assert "(document)" in listed.output, listed.output
