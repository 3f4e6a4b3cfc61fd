"""NUL characters and over-long text in every parameter of every operation, on PostgreSQL.

PostgreSQL refuses NUL in text and every column has a length: a value that
reaches the database unchecked becomes a 500. Every operation of the
OpenAPI document is called with each of its string parameters (path and
query) and each string field of its body made bad in turn; every answer
must be a 4xx, and nothing may be written.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import func, select

from tests.server_process import ADMIN_TOKEN, Server, postgres_database, sdk_key, start_server, stop
from unveil.store import tables as t
from unveil.store.database import make_engine

BAD = {"NUL": "a\x00b", "control": "a\x1bb", "over-long": "k" * 5000}
VALID_PATH = {
    "project": "shop",
    "env": "production",
    "key": "k",
    "token_id": "1",
    "release_id": "r1",
    "schedule_id": "s1",
    "change_id": "c1",
    "webhook_id": "1",
    "delivery_id": "1",
    "name": "k",
    "deploy_id": "d1",
    "launch_id": "l1",
}
#: For bodies the schema leaves open: the string fields people send.
OPEN_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("put", "/api/v1/projects/{project}/environments/{env}/flags/{key}"): {
        "description": "x",
        "default": "off",
    },
    ("put", "/api/v1/projects/{project}/environments/{env}/segments/{key}"): {
        "description": "x",
        "include": ["u"],
    },
    ("put", "/api/v1/projects/{project}/flags/{key}/meta"): {"owner": "x", "type": "release"},
}


@pytest.fixture(scope="module")
def running() -> Iterator[Server]:
    with postgres_database() as url:
        server = start_server(url)
        try:
            yield server
        finally:
            stop(server)


def _audit_count(server: Server) -> int:
    engine = make_engine(server.database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(t.audit)).scalar_one())
    finally:
        engine.dispose()


def _schema_of(spec: dict[str, Any], operation: dict[str, Any]) -> dict[str, Any] | None:
    content = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if not content:
        return None
    schema: dict[str, Any] = content["schema"]
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _valid_body(schema: dict[str, Any] | None, open_body: dict[str, Any] | None) -> Any:
    if open_body is not None:
        return open_body
    if schema is None or "properties" not in schema:
        return None
    body: dict[str, Any] = {}
    for name, prop in schema["properties"].items():
        if prop.get("type") == "string" or "anyOf" in prop:
            body[name] = "x"
    return body


def _cases(spec: dict[str, Any]) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """(method, path, what is bad, request arguments) for every string input."""
    for path, operations in spec["paths"].items():
        if path == "/sdk/v1/stream":
            continue  # never ends by design; its only input is the key
        for method, operation in operations.items():
            params = operation.get("parameters", [])
            schema = _schema_of(spec, operation)
            body = _valid_body(schema, OPEN_BODIES.get((method, path)))
            for bad_name, bad in BAD.items():
                for param in params:
                    if param["in"] == "header":
                        continue  # HTTP clients refuse control characters in headers
                    values = dict(VALID_PATH)
                    query: dict[str, str] = {}
                    if param["in"] == "path":
                        values[param["name"]] = bad
                    else:
                        query[param["name"]] = bad
                    url = path.format(**{k: quote(v, safe="") for k, v in values.items()})
                    yield (
                        method,
                        path,
                        f"{bad_name} in {param['name']}",
                        {
                            "url": url,
                            "params": query,
                            "json": body,
                        },
                    )
                if isinstance(body, dict):
                    for field in body:
                        if not isinstance(body[field], str):
                            continue
                        url = path.format(**VALID_PATH)
                        yield (
                            method,
                            path,
                            f"{bad_name} in body.{field}",
                            {
                                "url": url,
                                "params": {},
                                "json": {**body, field: bad},
                            },
                        )


def test_no_bad_text_anywhere_gets_a_500_or_changes_anything(running: Server) -> None:
    spec = httpx.get(f"{running.url}/openapi.json").json()
    sdk = sdk_key(running.database_url)
    before = _audit_count(running)
    tried = 0
    failures = []
    with httpx.Client(base_url=running.url, timeout=30) as http:
        for method, path, what, request in _cases(spec):
            token = sdk if path.startswith(("/sdk/", "/ofrep/")) else ADMIN_TOKEN
            answer = http.request(
                method.upper(),
                request["url"],
                params=request["params"],
                json=request["json"],
                headers={"Authorization": f"Bearer {token}", "If-Match": '"1"'},
            )
            tried += 1
            if not 400 <= answer.status_code < 500:
                failures.append(f"{method.upper()} {path} ({what}): {answer.status_code}")
    assert failures == []
    assert tried >= 100
    assert _audit_count(running) == before  # nothing bad was written


@pytest.mark.parametrize(
    "since",
    ["0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59+00:00", "9999-12-31T23:59:59-23:59"],
)
def test_audit_filters_at_the_edges_of_the_calendar_are_answered(
    running: Server, since: str
) -> None:
    with running.client() as api:
        for name in ("since", "until"):
            answer = api.get(
                "/api/v1/projects/shop/environments/production/audit", params={name: since}
            )
            assert answer.status_code in {200, 422}, answer.text


@pytest.mark.parametrize("etag", ['"\u0661"', '"1\u00b2"', '"99999999999999999999"', "W/"])
def test_if_match_that_no_server_gave_is_refused_as_such(running: Server, etag: str) -> None:
    with running.client() as api:
        answer = api.put(
            "/api/v1/projects/shop/environments/production/flags/k",
            json={"default": "off"},
            headers={"If-Match": etag.encode()},  # the bytes as a client sends them
        )
        assert answer.status_code == 400, answer.text
        assert "If-Match" in answer.json()["error"]


#: Bodies whose strings hold what no database column or UTF-8 answer can carry.
UNCARRIABLE_BODIES = [
    (
        "put",
        "/api/v1/projects/shop/environments/production/flags/s1",
        '{"default":"on","description":"\\ud800"}',
    ),
    ("put", "/api/v1/projects/shop/environments/production/segments/g1", '{"include":["\\ud800"]}'),
    ("put", "/api/v1/projects/shop/flags/m1/meta", '{"type":"release","owner":"a\\u0000b"}'),
    ("put", "/api/v1/projects/shop/flags/m2/meta", '{"type":"release","tags":["\\ud800"]}'),
    ("post", "/api/v1/projects", '{"key":"p1","name":"\\ud800"}'),
    ("post", "/api/v1/users", '{"name":"u","role":"viewer","password":"\\ud800aaaaaaaaaaaa"}'),
    ("post", "/api/v1/tokens", '{"name":"t","kind":"sdk","project":"\\u0000","environment":"p"}'),
    (
        "put",
        "/api/v1/projects/shop/environments/production/document",
        '{"version":1,"flags":{"\\ud800":{"default":"on"}}}',
    ),
]


@pytest.mark.parametrize(("method", "path", "body"), UNCARRIABLE_BODIES)
def test_a_lone_surrogate_or_nul_in_any_body_string_is_refused_and_nothing_written(
    running: Server, method: str, path: str, body: str
) -> None:
    before = _audit_count(running)
    with running.client() as api:
        answer = api.request(
            method.upper(), path, content=body, headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 400, answer.text
        assert "JSON body" in answer.json()["problems"][0]["message"]
        flags = api.get("/api/v1/projects/shop/environments/production/flags")
        assert flags.status_code == 200  # the environment still reads
    assert _audit_count(running) == before


def test_an_empty_prefix_plus_json_type_is_read_strictly(running: Server) -> None:
    with running.client() as api:
        answer = api.put(
            "/api/v1/projects/shop/environments/production/flags/ct1",
            content=b'{"default":"on","default":"off"}',
            headers={"Content-Type": "application/+json"},
        )
    assert answer.status_code == 400
    assert "duplicate key" in answer.json()["problems"][0]["message"]


@pytest.mark.parametrize("token_id", ["9223372036854775808", "100000000000000000000000", "0"])
def test_a_token_id_no_row_can_have_is_not_found(running: Server, token_id: str) -> None:
    with running.client() as api:
        answer = api.delete(f"/api/v1/tokens/{token_id}")
    assert answer.status_code in {404, 422}, answer.text


#: An integer of 400 digits is valid JSON (Python reads up to 4,300 digits) but no float
#: holds it: every place that reads a number as a time must refuse it, not raise.
HUGE = 10**400


def _when(op: str) -> list[dict[str, Any]]:
    return [{"when": [{"attr": "now", "op": op, "values": [HUGE]}], "serve": "on"}]


@pytest.mark.parametrize(
    ("method", "path", "body", "where"),
    [
        (
            "put",
            "/api/v1/projects/shop/environments/production/flags/t1",
            {"rules": _when("after"), "default": "off"},
            "flags.t1.rules[0].when[0].values[0]",
        ),
        (
            "put",
            "/api/v1/projects/shop/environments/production/segments/t2",
            {"rules": [{"when": _when("before")[0]["when"]}]},
            "segments.t2.rules[0].when[0].values[0]",
        ),
        (
            "put",
            "/api/v1/projects/shop/environments/production/document",
            {"version": 1, "flags": {"t3": {"rules": _when("after"), "default": "off"}}},
            "flags.t3.rules[0].when[0].values[0]",
        ),
        (
            "post",
            "/sdk/v1/events",
            {"events": [{"kind": "exposure", "flag": "f", "variant": "on", "at": HUGE}]},
            "events[0].at",
        ),
        (
            "post",
            "/sdk/v1/events",
            {"events": [{"kind": "metric", "metric": "m", "value": HUGE}]},
            "events[0].value",
        ),
    ],
    ids=["flag-after", "segment-before", "document", "event-at", "metric-value"],
)
def test_an_integer_no_float_can_hold_is_refused_naming_it(
    running: Server, method: str, path: str, body: dict[str, Any], where: str
) -> None:
    """Issue 10, 9: an integer metric value of 10^400 answered 500; so did one as a time."""
    token = sdk_key(running.database_url) if path.startswith("/sdk/") else ADMIN_TOKEN
    before = _audit_count(running)
    with running.client(token) as http:
        answer = http.request(method.upper(), path, json=body)  # json.dumps writes all digits
    assert answer.status_code == 422, answer.text
    assert where in [p["path"] for p in answer.json()["problems"]], answer.text
    assert _audit_count(running) == before


def test_a_context_time_no_float_can_hold_is_outside_the_rule(running: Server) -> None:
    """The same integer in an OFREP context is no time: the rule does not match, no error."""
    flag = {
        "rules": [{"when": [{"attr": "now", "op": "after", "values": [0]}], "serve": "on"}],
        "default": "off",
    }
    with running.client() as api:
        made = api.put("/api/v1/projects/shop/environments/production/flags/t4", json=flag)
        assert made.status_code in {200, 201}, made.text
    with running.client(sdk_key(running.database_url)) as sdk:
        context = {"targetingKey": "u", "now": HUGE}
        answer = sdk.post("/ofrep/v1/evaluate/flags/t4", json={"context": context})
    assert answer.status_code == 200, answer.text
    assert (answer.json()["value"], answer.json()["variant"]) == (False, "off")


@pytest.mark.parametrize("bucketing", [{}, [], ["murmur3"]], ids=["object", "empty-list", "list"])
def test_a_bucketing_that_is_not_a_name_is_refused_not_a_500(
    running: Server, bucketing: object
) -> None:
    """A scheme name looked up as given: an object or a list raised TypeError (unhashable)."""
    with running.client() as api:
        answer = api.put(
            "/api/v1/projects/shop/environments/production/flags/b1",
            json={"default": "on", "bucketing": bucketing},
        )
    assert answer.status_code == 422, answer.text
    assert [p["path"] for p in answer.json()["problems"]] == ["flags.b1.bucketing"]
