"""Every OFREP answer checked against the protocol, against a real server process.

The checks below are our own reading of the OFREP OpenAPI document, version
0.3.0 (open-feature/protocol, service/openapi.yaml), written out as plain
code: no package ships that document, and it is not copied here. Where the
document says nothing (the bodies of 401, 403, 413, 429), nothing is checked
but the status and the headers it names.

Our reading, in short:
- a success has ``key`` (text) and ``reason`` (one of STATIC,
  TARGETING_MATCH, SPLIT, DISABLED, UNKNOWN); ``variant`` is text; ``value``
  is a boolean, text, a number or an object, or is absent (use the code's
  default); ``metadata`` maps names to booleans, text or numbers only;
- a failure inside an evaluation has ``key`` and ``errorCode`` (one of
  PARSE_ERROR, TARGETING_KEY_MISSING, INVALID_CONTEXT, GENERAL), optional
  text ``errorDetails`` and ``metadata``; a missing flag answers 404 with
  ``key`` and ``errorCode`` FLAG_NOT_FOUND;
- the bulk answer has ``flags`` (each a success or a failure), optional
  ``metadata``, optional ``eventStreams``: each with a text ``type``, exactly
  one of ``url`` and ``endpoint`` (whose ``requestUri`` starts with ``/`` and
  whose optional ``origin`` is a URI), and ``inactivityDelaySec`` a whole
  number of at least 1; a failed bulk request answers an object with a text
  ``errorCode``; 304 has no body;
- 429 carries Retry-After, a number of seconds or a date-time;
- an event stream sends events whose ``data`` is JSON with a text ``type``
  (``refetchEvaluation``), optional text ``etag``; the envelope's ``event``
  is ``message``.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server_process import ADMIN_TOKEN, Server, sdk_key, start_server, stop

PROTOCOL = "0.3.0"
REASONS = {"STATIC", "TARGETING_MATCH", "SPLIT", "DISABLED", "UNKNOWN"}
FAILURE_CODES = {"PARSE_ERROR", "TARGETING_KEY_MISSING", "INVALID_CONTEXT", "GENERAL"}
DOCUMENT = "/api/v1/projects/shop/environments/production/document"
ONE = "/ofrep/v1/evaluate/flags/{}"
BULK = "/ofrep/v1/evaluate/flags"

FLAGS: dict[str, Any] = {
    "version": 1,
    "segments": {"staff": {"include": ["staff-1"]}},
    "flags": {
        "plain": {"description": "Always on", "default": "on"},
        "targeted": {
            "targets": {"on": ["user-1"]},
            "rules": [{"when": [{"attr": "plan", "op": "eq", "values": ["pro"]}], "serve": "on"}],
            "default": "off",
        },
        "split": {"default": {"rollout": {"on": 50, "off": 50}}},
        "split-by-org": {"default": {"rollout": {"on": 50, "off": 50}, "by": "org"}},
        "off": {"enabled": False, "default": "on"},
        "needs-off": {"prerequisites": [{"flag": "off", "variants": ["on"]}], "default": "on"},
        "colour": {
            "kind": "string",
            "variants": {"red": "red", "blue": "blue"},
            "off_variant": "red",
            "rules": [{"when": [{"segment": "staff"}], "serve": "blue"}],
            "default": "red",
        },
        "limit": {
            "kind": "number",
            "variants": {"low": 10, "high": 2.5},
            "off_variant": "low",
            "default": "high",
        },
        "settings": {
            "kind": "json",
            "variants": {"a": {"x": 1, "y": [1, 2]}, "b": {}},
            "off_variant": "b",
            "default": "a",
        },
        "listy": {"kind": "json", "variants": {"l": [1, 2]}, "off_variant": "l", "default": "l"},
    },
}


# -- the checks, in our words ------------------------------------------------------------


def _text(value: object, where: str) -> None:
    assert isinstance(value, str), f"{where} must be text, not {value!r}"


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_metadata(metadata: object, where: str) -> None:
    assert isinstance(metadata, Mapping), f"{where} must be an object"
    for name, value in metadata.items():
        assert isinstance(value, bool | str) or _number(value), f"{where}.{name}: {value!r}"


def check_success(answer: Mapping[str, Any], where: str = "success") -> None:
    _text(answer.get("key"), f"{where}.key")
    assert answer.get("reason") in REASONS, f"{where}.reason {answer.get('reason')!r}"
    if "variant" in answer:
        _text(answer["variant"], f"{where}.variant")
    if "value" in answer:  # absent: the code default
        value = answer["value"]
        assert isinstance(value, bool | str | Mapping) or _number(value), f"{where}.value"
    if "metadata" in answer:
        check_metadata(answer["metadata"], f"{where}.metadata")
    assert "errorCode" not in answer


def check_failure(answer: Mapping[str, Any], where: str = "failure") -> None:
    _text(answer.get("key"), f"{where}.key")
    assert answer.get("errorCode") in FAILURE_CODES, f"{where}.errorCode {answer!r}"
    if "errorDetails" in answer:
        _text(answer["errorDetails"], f"{where}.errorDetails")
    if "metadata" in answer:
        check_metadata(answer["metadata"], f"{where}.metadata")


def check_not_found(answer: Mapping[str, Any]) -> None:
    _text(answer.get("key"), "notFound.key")
    assert answer.get("errorCode") == "FLAG_NOT_FOUND"
    if "errorDetails" in answer:
        _text(answer["errorDetails"], "notFound.errorDetails")


def check_event_stream(stream: Mapping[str, Any]) -> None:
    _text(stream.get("type"), "eventStreams[].type")
    assert ("url" in stream) != ("endpoint" in stream), "exactly one of url and endpoint"
    if "url" in stream:
        assert re.match(r"^[a-z][a-z0-9+.-]*://", stream["url"])
    else:
        endpoint = stream["endpoint"]
        _text(endpoint.get("requestUri"), "endpoint.requestUri")
        assert endpoint["requestUri"].startswith("/")
        if "origin" in endpoint:
            assert re.match(r"^[a-z][a-z0-9+.-]*://", endpoint["origin"])
    if "inactivityDelaySec" in stream:
        delay = stream["inactivityDelaySec"]
        assert isinstance(delay, int)
        assert not isinstance(delay, bool)
        assert delay >= 1


def check_bulk(answer: Mapping[str, Any]) -> None:
    assert isinstance(answer.get("flags"), list)
    for i, item in enumerate(answer["flags"]):
        (check_failure if "errorCode" in item else check_success)(item, f"flags[{i}]")
    if "metadata" in answer:
        check_metadata(answer["metadata"], "metadata")
    for stream in answer.get("eventStreams", []):
        check_event_stream(stream)


def check_bulk_failure(answer: Mapping[str, Any]) -> None:
    _text(answer.get("errorCode"), "errorCode")
    if "errorDetails" in answer:
        _text(answer["errorDetails"], "errorDetails")


def check_retry_after(value: str) -> None:
    if not value.isdigit():
        datetime.fromisoformat(value.replace("Z", "+00:00"))


def check_sse_event(fields: Mapping[str, str]) -> dict[str, Any]:
    assert fields.get("event", "message") == "message"
    data = json.loads(fields["data"])
    _text(data.get("type"), "data.type")
    if "etag" in data:
        _text(data["etag"], "data.etag")
    if "lastModified" in data:
        assert isinstance(data["lastModified"], int | str)
    return data  # type: ignore[no-any-return]


# -- the server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ofrep_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    folder: Path = tmp_path_factory.mktemp("ofrep")
    running = start_server(f"sqlite:///{folder / 'unveil.db'}")
    try:
        with running.client() as api:
            assert api.put(DOCUMENT, json=FLAGS).status_code == 200
        yield running, sdk_key(running.database_url)
    finally:
        stop(running)


def _post(server: Server, key: str, path: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
    return httpx.post(f"{server.url}{path}", headers=headers, timeout=30, **kwargs)


CONTEXTS = [
    {"targetingKey": "user-1"},
    {"targetingKey": "user-2", "plan": "pro", "org": "acme"},
    {"targetingKey": "staff-1", "org": 7},
    {"targetingKey": "user-3", "org": 1.5},
    {},
]


@pytest.mark.parametrize("context", CONTEXTS)
def test_every_single_flag_answer_follows_the_protocol(
    ofrep_server: tuple[Server, str], context: dict[str, Any]
) -> None:
    server, key = ofrep_server
    seen: set[int] = set()
    for flag in FLAGS["flags"]:
        answer = _post(server, key, ONE.format(flag), json={"context": context})
        seen.add(answer.status_code)
        if answer.status_code == 200:
            check_success(answer.json(), flag)
        else:
            assert answer.status_code == 400, (flag, answer.text)
            check_failure(answer.json(), flag)
    assert 200 in seen


def test_the_answers_say_what_unveil_means_in_metadata(ofrep_server: tuple[Server, str]) -> None:
    server, key = ofrep_server
    body = {"context": {"targetingKey": "user-9"}}

    def one(flag: str) -> dict[str, Any]:
        answer: dict[str, Any] = _post(server, key, ONE.format(flag), json=body).json()
        return answer

    plain = one("plain")
    assert (plain["reason"], plain["metadata"]["unveilReason"]) == ("STATIC", "DEFAULT")
    assert plain["metadata"]["description"] == "Always on"
    fell_through = one("targeted")
    assert (fell_through["reason"], fell_through["metadata"]["unveilReason"]) == (
        "UNKNOWN",
        "DEFAULT",
    )
    needs = one("needs-off")
    assert (needs["reason"], needs["metadata"]["unveilReason"]) == (
        "DISABLED",
        "PREREQUISITE_FAILED",
    )
    assert "unveilReason" not in one("off")["metadata"]  # DISABLED is the protocol's word too
    listy = one("listy")
    assert (listy["errorCode"], listy["metadata"]["unveilErrorCode"]) == (
        "GENERAL",
        "TYPE_MISMATCH",
    )
    no_key = _post(server, key, ONE.format("split"), json={"context": {}}).json()
    assert no_key["errorCode"] == "TARGETING_KEY_MISSING"
    bad_org = _post(
        server, key, ONE.format("split-by-org"), json={"context": {"targetingKey": "u", "org": 1.5}}
    ).json()
    assert bad_org["errorCode"] == "INVALID_CONTEXT"


@pytest.mark.parametrize("context", CONTEXTS)
def test_the_bulk_answer_follows_the_protocol_and_offers_our_stream(
    ofrep_server: tuple[Server, str], context: dict[str, Any]
) -> None:
    server, key = ofrep_server
    answer = _post(server, key, BULK, json={"context": context})
    assert answer.status_code == 200
    check_bulk(answer.json())
    assert answer.headers["etag"]
    streams = answer.json()["eventStreams"]
    assert [s["endpoint"]["requestUri"] for s in streams] == ["/ofrep/v1/events"]


def test_a_missing_flag_answers_the_protocols_404(ofrep_server: tuple[Server, str]) -> None:
    server, key = ofrep_server
    answer = _post(server, key, ONE.format("nope"), json={"context": {"targetingKey": "u"}})
    assert answer.status_code == 404
    check_not_found(answer.json())
    assert answer.json()["key"] == "nope"


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"{not json", "PARSE_ERROR"),
        (b'{"context": {}, "context": {}}', "PARSE_ERROR"),
        (b"[1, 2]", "PARSE_ERROR"),
        (b'{"context": "nope"}', "INVALID_CONTEXT"),
    ],
)
def test_bad_requests_answer_the_protocols_400(
    ofrep_server: tuple[Server, str], content: bytes, code: str
) -> None:
    server, key = ofrep_server
    headers = {"Content-Type": "application/json"}
    one = _post(server, key, ONE.format("plain"), content=content, headers=headers)
    assert one.status_code == 400
    check_failure(one.json())
    assert (one.json()["key"], one.json()["errorCode"]) == ("plain", code)
    bulk = _post(server, key, BULK, content=content, headers=headers)
    assert bulk.status_code == 400
    check_bulk_failure(bulk.json())
    assert bulk.json()["errorCode"] == code


def test_refused_keys_answer_401_and_403(ofrep_server: tuple[Server, str]) -> None:
    server, _ = ofrep_server
    for path in (ONE.format("plain"), BULK):
        assert _post(server, "not-a-key", path, json={"context": {}}).status_code == 401
        assert httpx.post(f"{server.url}{path}", json={"context": {}}).status_code == 401
        assert _post(server, ADMIN_TOKEN, path, json={"context": {}}).status_code == 403


def test_the_protocols_api_key_header_is_accepted(ofrep_server: tuple[Server, str]) -> None:
    server, key = ofrep_server
    answer = httpx.post(
        f"{server.url}{BULK}", json={"context": {}}, headers={"X-API-Key": key}, timeout=30
    )
    assert answer.status_code == 200
    check_bulk(answer.json())


@pytest.mark.parametrize(
    "form",
    ["{tag}", "W/{tag}", '"x", {tag}', 'W/"x",W/{tag}', "*", '"a,b" , {tag}'],
)
def test_if_none_match_is_read_as_http_reads_it(
    ofrep_server: tuple[Server, str], form: str
) -> None:
    server, key = ofrep_server
    body = {"context": {"targetingKey": "user-1"}}
    first = _post(server, key, BULK, json=body)
    again = _post(
        server,
        key,
        BULK,
        json=body,
        headers={"If-None-Match": form.format(tag=first.headers["etag"])},
    )
    assert again.status_code == 304
    assert again.content == b""  # the protocol: no body
    assert again.headers["etag"] == first.headers["etag"]
    other = _post(server, key, BULK, json=body, headers={"If-None-Match": '"x", W/"y"'})
    assert other.status_code == 200
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as sdk:
        tag = sdk.get("/sdk/v1/snapshot").headers["etag"]
        header = form.format(tag=tag)
        assert sdk.get("/sdk/v1/snapshot", headers={"If-None-Match": header}).status_code == 304
        assert sdk.get("/sdk/v1/snapshot", headers={"If-None-Match": '"x"'}).status_code == 200


def test_the_event_stream_tells_of_changes_in_the_protocols_form(
    ofrep_server: tuple[Server, str],
) -> None:
    server, key = ofrep_server
    bulk = _post(server, key, BULK, json={"context": {"targetingKey": "u"}}).json()
    path = bulk["eventStreams"][0]["endpoint"]["requestUri"]
    events: list[dict[str, str]] = []
    listening = threading.Event()

    def listen() -> None:
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.stream("GET", f"{server.url}{path}", headers=headers, timeout=30) as stream:
            fields: dict[str, str] = {}
            for line in stream.iter_lines():
                if line.startswith(":"):
                    listening.set()
                elif line == "":
                    if fields:
                        events.append(fields)
                        return
                else:
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")

    listener = threading.Thread(target=listen)
    listener.start()
    assert listening.wait(30)
    with server.client() as api:
        changed = api.put(
            "/api/v1/projects/shop/environments/production/flags/fresh", json={"default": "on"}
        )
        assert changed.status_code == 201
    listener.join(30)
    assert events, "no event came"
    data = check_sse_event(events[0])
    assert data["type"] == "refetchEvaluation"
    assert events[0]["id"].isdigit()
    refetched = _post(
        server,
        key,
        BULK,
        json={"context": {"targetingKey": "u"}},
        params={"flagConfigEtag": data["etag"]},
    )
    assert "fresh" in {f["key"] for f in refetched.json()["flags"]}


def test_overload_answers_429_per_application(tmp_path: Path) -> None:
    """The admission count belongs to one application: another one in the process is free."""
    from fastapi.testclient import TestClient

    from tests.server_process import access_service
    from unveil.server.app import create_app
    from unveil.store.database import make_engine, upgrade

    url = f"sqlite:///{tmp_path / 'u.db'}"
    upgrade(url)
    engine = make_engine(url)
    access = access_service(engine)
    key = access.create_token("k", "sdk", environment_id=access.ensure_environment("p", "e"))
    headers = {"Authorization": f"Bearer {key}"}
    busy = create_app(engine)
    busy.state.services.ofrep.limit = 0
    with TestClient(busy) as full, TestClient(create_app(engine)) as free:
        refused = full.post(ONE.format("x"), json={"context": {}}, headers=headers)
        assert refused.status_code == 429
        check_retry_after(refused.headers["retry-after"])
        assert free.post(ONE.format("x"), json={"context": {}}, headers=headers).status_code == 404
        assert free.app.state.services.ofrep.in_flight == 0  # type: ignore[attr-defined]


def test_the_protocol_version_is_the_one_the_server_names() -> None:
    from unveil.server import ofrep

    assert ofrep.PROTOCOL_VERSION == PROTOCOL
