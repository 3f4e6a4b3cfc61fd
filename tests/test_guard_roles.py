"""The largest bodies are refused before they are read from a token that may not send them.

A whole document may be 16 MiB (a deploy as much). A viewer's token is
valid, so authentication alone let it send one: the guard read it, decoded
it on the event loop (every other request waited), and only then did the
route answer 403. The role the route needs is checked first, as the token is.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.types import Message

from unveil.server.guard import Guard
from unveil.service.access import Principal

DOCUMENT = "/api/v1/projects/shop/environments/production/document"
DEPLOYS = "/api/v1/projects/shop/environments/production/deploys"


class _Metrics:
    def labels(self, *_labels: str) -> _Metrics:
        return self

    def inc(self) -> None:
        pass


def _call(principal: Principal, method: str, path: str) -> tuple[int, int, bool]:
    """The status, how many times the body was asked for, and whether the route ran."""
    services: Any = SimpleNamespace(
        access=SimpleNamespace(recall=lambda _secret: principal),
        metrics=SimpleNamespace(requests=_Metrics()),
    )
    ran = False

    async def app(_scope: Any, receive: Any, send: Any) -> None:
        nonlocal ran
        ran = True
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    received = 0

    async def receive() -> Message:
        nonlocal received
        received += 1
        return {"type": "http.request", "body": b'{"flags": {}}', "more_body": False}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [
            (b"authorization", b"Bearer some-token"),
            (b"content-type", b"application/json"),
            (b"content-length", b"13"),
        ],
    }
    asyncio.run(Guard(app, services)(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, received, ran


VIEWER = Principal("viewer", "admin", "viewer", None)
EDITOR = Principal("editor", "admin", "editor", None)
DEPLOYER = Principal("ci", "admin", "deployer", None)
SDK = Principal("sdk", "sdk", None, 1)


@pytest.mark.parametrize(
    ("who", "method", "path"),
    [
        (VIEWER, "PUT", DOCUMENT),
        (DEPLOYER, "PUT", DOCUMENT),
        (SDK, "PUT", DOCUMENT),
        (VIEWER, "POST", DEPLOYS),
        (SDK, "POST", DEPLOYS),
    ],
)
def test_a_token_without_the_role_is_refused_before_the_body_is_read(
    who: Principal, method: str, path: str
) -> None:
    status, received, ran = _call(who, method, path)
    assert (status, received, ran) == (403, 0, False)


@pytest.mark.parametrize(
    ("who", "method", "path"),
    [(EDITOR, "PUT", DOCUMENT), (EDITOR, "POST", DEPLOYS), (DEPLOYER, "POST", DEPLOYS)],
)
def test_a_token_with_the_role_sends_its_body_to_the_route(
    who: Principal, method: str, path: str
) -> None:
    status, received, ran = _call(who, method, path)
    assert (status, received, ran) == (200, 1, True)
