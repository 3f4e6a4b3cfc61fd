"""The guard in front of the routes, against a real server process over raw sockets.

Authentication comes before any body byte is read, every body limit holds
on the bytes as they arrive (chunked included), the Authorization scheme is
read as HTTP reads it, and JSON bodies are decoded strictly (duplicate keys
refused).
"""

from __future__ import annotations

import gzip
import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server_process import ADMIN_TOKEN, Server, sdk_key, start_server, stop

FLAGS = "/api/v1/projects/shop/environments/production/flags"
MIB = 1 << 20


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The guard does not depend on the database: one SQLite server for the module."""
    folder: Path = tmp_path_factory.mktemp("guard")
    running = start_server(f"sqlite:///{folder / 'unveil.db'}")
    try:
        yield running
    finally:
        stop(running)


def _rss_kib(server: Server) -> int:
    """The server process's resident memory, from the kernel."""
    status = Path(f"/proc/{server.process.pid}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1])


def _chunked_post(
    server: Server, method: str, path: str, headers: dict[str, str], total: int
) -> tuple[int, int]:
    """Send a chunked body of ``total`` bytes, stopping once the server answers.

    Returns the answer's status and how many body bytes had been sent when
    it came (the server cannot have read more than that).
    """
    head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}"]
    head += ["Content-Type: application/json", "Transfer-Encoding: chunked"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    chunk = b" " * MIB  # whitespace: still (the start of) a JSON body
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    answer = b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        while sent < total:
            readable, writable, _ = select.select([sock], [sock], [], 30)
            if readable:
                break
            if writable:
                try:
                    sock.sendall(frame)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += len(chunk)
        else:
            sock.sendall(b"0\r\n\r\n")
        deadline = time.monotonic() + 60
        while b"\r\n" not in answer and time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    status_line = answer.split(b"\r\n", 1)[0].decode()
    return int(status_line.split()[1]), sent


def test_a_100_mb_chunked_post_without_a_token_is_refused_before_it_is_read(
    sqlite_server: Server,
) -> None:
    before = _rss_kib(sqlite_server)
    status, sent = _chunked_post(sqlite_server, "POST", "/sdk/v1/events", {}, 100 * MIB)
    grown = _rss_kib(sqlite_server) - before
    assert status == 401
    # the answer came while the client was still sending, far before the end
    assert sent < 32 * MIB, sent
    assert grown < 16 * 1024, f"the server grew by {grown} KiB"


def test_a_wrong_token_is_refused_before_the_body_is_read(sqlite_server: Server) -> None:
    headers = {"Authorization": "Bearer not-a-token"}
    status, sent = _chunked_post(sqlite_server, "PUT", f"{FLAGS}/f", headers, 100 * MIB)
    assert status == 401
    assert sent < 32 * MIB, sent


@pytest.mark.parametrize(
    ("method", "path", "limit"),
    [
        ("PUT", f"{FLAGS}/f", MIB),
        ("POST", "/sdk/v1/events", MIB),
        ("PUT", "/api/v1/projects/shop/environments/production/document", 16 * MIB),
    ],
)
def test_an_oversize_chunked_body_gets_413_as_it_crosses_the_limit(
    sqlite_server: Server, method: str, path: str, limit: int
) -> None:
    token = sdk_key(sqlite_server.database_url) if path.startswith("/sdk") else ADMIN_TOKEN
    before = _rss_kib(sqlite_server)
    status, sent = _chunked_post(
        sqlite_server, method, path, {"Authorization": f"Bearer {token}"}, 100 * MIB
    )
    grown = _rss_kib(sqlite_server) - before
    assert status == 413
    assert limit <= sent < limit + 32 * MIB, sent
    assert grown < (limit >> 10) * 3 + 16 * 1024, f"the server grew by {grown} KiB"


def test_a_declared_length_over_the_limit_gets_413_without_reading(sqlite_server: Server) -> None:
    head = (
        f"PUT {FLAGS}/f HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {100 * MIB}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", sqlite_server.port), timeout=30) as sock:
        sock.sendall(head.encode())
        answer = sock.recv(65536)  # no body byte sent: the answer must come anyway
    assert answer.startswith(b"HTTP/1.1 413")


def test_a_chunked_body_within_the_limit_is_read_whole(sqlite_server: Server) -> None:
    flag = json.dumps({"description": "x" * 1000, "default": "off"}).encode()

    def pieces() -> Iterator[bytes]:
        for i in range(0, len(flag), 100):
            yield flag[i : i + 100]

    with sqlite_server.client() as api:
        created = api.put(  # httpx sends a generator chunked
            f"{FLAGS}/chunked", content=pieces(), headers={"Content-Type": "application/json"}
        )
        assert created.status_code == 201, created.text
        assert api.get(f"{FLAGS}/chunked").json()["data"]["description"] == "x" * 1000


@pytest.mark.parametrize(
    ("header", "status"),
    [
        ("Bearer {t}", 200),
        ("bearer {t}", 200),
        ("BEARER  {t}", 200),
        ("{t}", 401),  # no scheme: refused, not guessed
        ("Basic {t}", 401),
        ("Bearer", 401),
        ("Bearer {t} {t}", 401),
    ],
)
def test_the_authorization_scheme_is_case_insensitive_and_required(
    sqlite_server: Server, header: str, status: int
) -> None:
    answer = httpx.get(
        f"{sqlite_server.url}{FLAGS}", headers={"Authorization": header.format(t=ADMIN_TOKEN)}
    )
    assert answer.status_code == status, answer.text
    if status == 401:
        assert "Bearer" in answer.json()["error"] or "token" in answer.json()["error"]


@pytest.mark.parametrize(
    ("body", "key"),
    [
        (b'{"default": "off", "default": "on"}', "default"),
        (b'{"default": "off", "variants": {"on": true, "off": false, "on": false}}', "on"),
    ],
)
def test_duplicate_json_keys_are_refused_naming_the_key(
    sqlite_server: Server, body: bytes, key: str
) -> None:
    with sqlite_server.client() as api:
        answer = api.put(f"{FLAGS}/dup", content=body, headers={"Content-Type": "application/json"})
        assert answer.status_code == 400
        assert f"duplicate key '{key}'" in answer.json()["problems"][0]["message"]
        assert api.get(f"{FLAGS}/dup").status_code == 404


def test_duplicate_keys_are_refused_on_every_route(sqlite_server: Server) -> None:
    key = sdk_key(sqlite_server.database_url)
    document = b'{"version": 1, "flags": {"a": {"default": "off"}, "a": {"default": "on"}}}'
    with sqlite_server.client() as api:
        applied = api.put(
            "/api/v1/projects/shop/environments/production/document",
            content=document,
            headers={"Content-Type": "application/json"},
        )
        assert applied.status_code == 400
        assert "duplicate key 'a'" in applied.text
    events = httpx.post(
        f"{sqlite_server.url}/sdk/v1/events",
        content=b'{"events": [], "events": []}',
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    assert events.status_code == 400
    assert "duplicate key 'events'" in events.text


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000, b'{"default": NaN}', b'{"n": ' + b"9" * 5000 + b"}", b"\xff\xfe"],
)
def test_bodies_the_decoder_cannot_take_get_400_not_500(sqlite_server: Server, body: bytes) -> None:
    with sqlite_server.client() as api:
        answer = api.put(f"{FLAGS}/odd", content=body, headers={"Content-Type": "application/json"})
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] == "malformed request"


@pytest.mark.parametrize(
    ("part", "key"), [("flags", "a%2Fb"), ("flags", "%2E%2E"), ("segments", "%2E")]
)
def test_keys_urls_cannot_carry_are_refused_by_the_api(
    sqlite_server: Server, part: str, key: str
) -> None:
    url = f"/api/v1/projects/shop/environments/production/{part}/{key}"
    body = {"default": "off"} if part == "flags" else {}
    with sqlite_server.client() as api:
        answer = api.put(url, json=body)
        assert answer.status_code == 422, answer.text
        assert "must be 1-200 printable characters" in answer.text
        listed = api.get(f"/api/v1/projects/shop/environments/production/{part}").json()[part]
        assert not [item for item in listed if "/" in item["key"] or item["key"] in {".", ".."}]


def test_a_body_without_a_type_is_read_as_json_and_another_type_is_named(server: Server) -> None:
    url = f"{server.url}/api/v1/projects/shop/environments/production/flags/typed"
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    body = b'{"default": "off"}'
    untyped = httpx.put(url, content=body, headers=headers)  # httpx sends no type for bytes
    assert untyped.status_code == 201, untyped.text
    form = httpx.put(
        url.replace("typed", "form"),
        content=body,
        headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 415
    assert "Content-Type: application/json" in form.json()["error"]


def test_a_compressed_body_is_refused_naming_its_content_encoding(sqlite_server: Server) -> None:
    # a large document gzipped to fit the limit was answered "the body is not UTF-8"
    packed = gzip.compress(b'{"default": "off"}')
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
    with httpx.Client(base_url=sqlite_server.url, headers=headers) as api:
        refused = api.put(f"{FLAGS}/packed", content=packed, headers={"Content-Encoding": "gzip"})
        assert refused.status_code == 415, refused.text
        assert "Content-Encoding: gzip" in refused.json()["error"]
        assert "uncompressed" in refused.json()["error"]
        assert api.get(f"{FLAGS}/packed").status_code == 404  # nothing was written
        plain = b'{"default": "off"}'
        taken = api.put(f"{FLAGS}/packed", content=plain, headers={"Content-Encoding": "identity"})
        assert taken.status_code == 201, taken.text


def test_a_flag_or_segment_heavier_than_its_limit_is_refused_by_the_server(
    sqlite_server: Server,
) -> None:
    """Issue 10.1: an editor stored a 10 MB flag. A body within the request limit may still
    hold a flag or segment heavier than one may weigh (512 KiB): refused, nothing stored."""
    heavy = [f"user-{i:06d}-" + "x" * 60 for i in range(9_000)]  # about 640 KiB of keys
    document = "/api/v1/projects/shop/environments/production/document"
    with sqlite_server.client() as api:
        flag = api.put(f"{FLAGS}/heavy", json={"targets": {"on": heavy}, "default": "off"})
        assert flag.status_code == 422, flag.text[:300]
        assert flag.json()["problems"][0]["path"] == "flags.heavy"
        assert "weighs" in flag.json()["problems"][0]["message"]
        assert api.get(f"{FLAGS}/heavy").status_code == 404
        whole = api.put(
            document, json={"version": 1, "segments": {"many": {"include": heavy}}, "flags": {}}
        )
        assert whole.status_code == 422, whole.text[:300]
        assert [p["path"] for p in whole.json()["problems"]] == ["segments.many"]
        segment = api.put(
            "/api/v1/projects/shop/environments/production/segments/many", json={"include": heavy}
        )
        assert segment.status_code == 422, segment.text[:300]
        assert api.get(document).json().get("segments", {}) == {}


@pytest.fixture(scope="module")
def impatient_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that waits at most one second for a body that has stopped arriving."""
    folder: Path = tmp_path_factory.mktemp("impatient")
    running = start_server(f"sqlite:///{folder / 'unveil.db'}", None, True, "--body-timeout", "1")
    try:
        yield running
    finally:
        stop(running)


def _answer_to(server: Server, head: str, sent: bytes) -> tuple[bytes, float]:
    """The server's answer to a request whose body stops after ``sent``, and how long it took.

    The socket's own timeout only bounds a broken test: the answer is awaited, not slept for.
    """
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        started = time.monotonic()
        sock.sendall(head.encode() + sent)
        answer = sock.recv(65536)
        took = time.monotonic() - started
        while more := sock.recv(65536):  # to the end: the server closes the connection
            answer += more
    return answer, took


def test_a_declared_body_that_stops_arriving_gets_408(impatient_server: Server) -> None:
    """A token holder could declare 100 bytes, send 12, and hold the connection for good."""
    head = (
        f"PUT {FLAGS}/slow HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    )
    answer, took = _answer_to(impatient_server, head, b'{"default": ')
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"the body stopped arriving" in answer
    assert 0.9 < took < 20
    with impatient_server.client() as api:  # nothing was written
        assert api.get(f"{FLAGS}/slow").status_code == 404


def test_a_chunked_body_that_stops_arriving_gets_408(impatient_server: Server) -> None:
    head = (
        f"PUT {FLAGS}/slow HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    answer, _took = _answer_to(impatient_server, head, b'5\r\n{"def\r\n')
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]


def test_a_body_that_keeps_arriving_slowly_is_read_whole(impatient_server: Server) -> None:
    """The limit is on silence, not on the whole body's time: a slow link still gets through."""
    flag = json.dumps({"description": "slow but steady", "default": "off"}).encode()

    def pieces() -> Iterator[bytes]:
        for i in range(0, len(flag), 10):
            time.sleep(0.3)  # pacing the client, not waiting for the server
            yield flag[i : i + 10]

    with impatient_server.client() as api:
        answer = api.put(
            f"{FLAGS}/steady", content=pieces(), headers={"Content-Type": "application/json"}
        )
    assert answer.status_code == 201, answer.text


@pytest.mark.parametrize(
    ("method", "path", "named", "not_named"),
    [
        ("PUT", "/document", "the limit of a whole flags document", "deploy"),
        ("POST", "/schedules", "the limit of a scheduled change", "deploy"),
        (
            "POST",
            "/deploys",
            "the limit of a deploy with its code's references",
            "limit of a whole",
        ),
    ],
)
def test_a_413_names_the_request_whose_limit_it_crossed(
    sqlite_server: Server, method: str, path: str, named: str, not_named: str
) -> None:
    where = "/api/v1/projects/shop/environments/production" + path
    head = (
        f"{method} {where} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {100 * MIB}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", sqlite_server.port), timeout=30) as sock:
        sock.sendall(head.encode())
        answer = b""
        while b"}" not in answer:  # the JSON answer is short: one object
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    assert answer.startswith(b"HTTP/1.1 413")
    error = json.loads(answer.partition(b"\r\n\r\n")[2])["error"]
    assert named in error
    assert not_named not in error
    assert "--document-limit" in error


@pytest.mark.parametrize(("body", "message"), [(b"[]", "JSON object"), (b"", "Field required")])
def test_a_document_that_is_not_an_object_is_malformed_at_body(
    sqlite_server: Server, body: bytes, message: str
) -> None:
    """The document route takes the body the guard decoded (a 3 MB document is not parsed
    twice, the second time on the event loop): what is not an object is refused as before."""
    with sqlite_server.client() as api:
        answer = api.put(
            "/api/v1/projects/shop/environments/production/document",
            content=body,
            headers={"Content-Type": "application/json"},
        )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "malformed request"
    (problem,) = answer.json()["problems"]
    assert problem["path"] == "body"
    assert message in problem["message"]


def test_a_token_revoked_while_its_body_arrives_writes_nothing(sqlite_server: Server) -> None:
    """The token is checked when the headers come; a body may follow for as long as it
    never pauses for the body timeout. A revocation in between must hold."""
    with sqlite_server.client() as api:
        made = api.post(
            "/api/v1/tokens", json={"name": "revoked mid-body", "kind": "admin", "role": "editor"}
        ).json()
        body = json.dumps({"default": "on"}).encode()
        head = (
            f"PUT {FLAGS}/revoked-mid-body HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {made['secret']}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", sqlite_server.port), timeout=30) as sock:
            sock.sendall(head.encode() + body[:4])
            assert api.delete(f"/api/v1/tokens/{made['id']}").status_code == 204
            sock.sendall(body[4:])
            answer = sock.recv(65536)
            while b"\r\n\r\n" not in answer and (more := sock.recv(65536)):
                answer += more
        assert answer.startswith(b"HTTP/1.1 401"), answer[:300]
        assert api.get(f"{FLAGS}/revoked-mid-body").status_code == 404
