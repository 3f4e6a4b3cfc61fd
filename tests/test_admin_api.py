"""The admin API's resources, and who may use each of its endpoints."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from tests.server_process import Server, sdk_key

ENV = "/api/v1/projects/shop/environments/production"


def _token(server: Server, **body: Any) -> str:
    with server.client() as api:
        name = f"t {body.get('kind')} {body.get('role')} {len(body)}"  # names are unique
        made = api.post("/api/v1/tokens", json={"name": name, **body})
        assert made.status_code == 201, made.text
        return str(made.json()["secret"])


def test_projects_and_environments(server: Server) -> None:
    with server.client() as api:
        assert api.post("/api/v1/projects", json={"key": "web"}).status_code == 201
        assert api.post("/api/v1/projects", json={"key": "web"}).status_code == 409
        refused = api.post("/api/v1/projects", json={"key": "no spaces"})
        assert refused.status_code == 422
        assert refused.json()["problems"][0]["path"] == "key"
        made = api.post("/api/v1/projects/web/environments", json={"key": "qa"})
        assert made.status_code == 201
        missing = api.post("/api/v1/projects/nope/environments", json={"key": "qa"})
        assert missing.status_code == 404
        projects = {p["key"]: p for p in api.get("/api/v1/projects").json()["projects"]}
        assert [e["key"] for e in projects["web"]["environments"]] == ["qa"]


def test_segments_are_versioned_and_guarded_like_flags(server: Server) -> None:
    with server.client() as api:
        seg = {"include": ["user-1"]}
        assert api.put(f"{ENV}/segments/beta", json=seg).status_code == 201
        flag = {"rules": [{"when": [{"segment": "beta"}], "serve": "on"}], "default": "off"}
        assert api.put(f"{ENV}/flags/f", json=flag).status_code == 201
        # deleting a segment a flag uses would break the flag: refused, nothing changes
        refused = api.delete(f"{ENV}/segments/beta", headers={"If-Match": '"1"'})
        assert refused.status_code == 422
        assert "unknown segment 'beta'" in refused.text
        assert api.get(f"{ENV}/segments/beta").status_code == 200


def test_export_and_apply_are_idempotent_with_a_dry_run_diff(server: Server) -> None:
    document = {
        "flags": {"a": {"default": "on"}, "b": {"default": "off"}},
        "segments": {"s": {"include": ["k"]}},
    }
    with server.client() as api:
        api.put(f"{ENV}/flags/old", json={"default": "on"})
        dry = api.put(f"{ENV}/document", json=document, params={"dry_run": "true"})
        assert dry.json()["diff"] == {
            "added": {"flags": ["a", "b"], "segments": ["s"]},
            "changed": {"flags": [], "segments": []},
            "removed": {"flags": ["old"], "segments": []},
        }
        assert [f["key"] for f in api.get(f"{ENV}/flags").json()["flags"]] == ["old"]
        applied = api.put(f"{ENV}/document", json=document, params={"reason": "sync"})
        assert applied.json()["changed"] is True
        again = api.put(f"{ENV}/document", json=document)
        assert again.json()["changed"] is False
        assert again.json()["version"] == applied.json()["version"]
        exported = api.get(f"{ENV}/document")
        assert exported.headers["etag"] == f'"{applied.json()["version"]}"'
        assert set(exported.json()["flags"]) == {"a", "b"}
        stale = api.put(f"{ENV}/document", json={"flags": {}}, headers={"If-Match": '"1"'})
        assert stale.status_code == 412  # the environment moved on since version 1
        assert len(api.get(f"{ENV}/document").json()["flags"]) == 2
        bad = api.put(f"{ENV}/document", json={"flags": {"x": {}}})
        assert bad.status_code == 422
        assert any(p["path"] == "flags.x" for p in bad.json()["problems"])


def test_flag_metadata(server: Server) -> None:
    with server.client() as api:
        url = "/api/v1/projects/shop/flags/checkout/meta"
        assert api.get(url).status_code == 404
        put = api.put(url, json={"type": "release", "tags": ["payments"], "owner": "team-pay"})
        assert put.status_code == 200
        assert put.json()["lifetime_days"] == 40  # a release flag's default
        assert api.put(url, json={"type": "kill-switch"}).status_code == 428
        stale = api.put(url, json={"type": "kill-switch"}, headers={"If-Match": '"m-0"'})
        assert stale.status_code == 412
        ks = api.put(url, json={"type": "kill-switch"}, headers={"If-Match": put.headers["etag"]})
        assert ks.json()["lifetime_days"] is None
        bad = api.put(url, json={"type": "forever", "tags": "x", "colour": 1})
        assert bad.status_code == 422
        assert {p["path"] for p in bad.json()["problems"]} == {"type", "tags", "colour"}


def test_tokens_are_shown_once_and_can_be_revoked(server: Server) -> None:
    secret = _token(server, kind="sdk", project="shop", environment="production")
    with server.client() as api:
        listed = api.get("/api/v1/tokens").json()["tokens"]
        assert all("secret" not in t and "secret_hash" not in t for t in listed)
        token_id = next(t["id"] for t in listed if t["kind"] == "sdk")
        with server.client(secret) as sdk:
            assert sdk.get("/sdk/v1/snapshot").status_code == 200
            assert api.delete(f"/api/v1/tokens/{token_id}").status_code == 204
            assert sdk.get("/sdk/v1/snapshot").status_code == 401
        no_env = api.post("/api/v1/tokens", json={"name": "x", "kind": "sdk"})
        assert no_env.status_code == 422
        assert no_env.json()["problems"][0]["path"] == "environment"
        assert "needs its project and environment" in no_env.text


def test_changes_outside_environments_are_audited(server: Server) -> None:
    _token(server, kind="admin", role="viewer")
    with server.client() as api:
        api.post("/api/v1/projects", json={"key": "web"})
        assert (
            api.put("/api/v1/projects/web/flags/f/meta", json={"type": "experiment"}).status_code
            == 200
        )
        everything = api.get("/api/v1/audit").json()["entries"]
        assert everything[0]["actor"] == "system"  # the first admin token, at start
        mine = api.get("/api/v1/audit", params={"actor": "admin (UNVEIL_ADMIN_TOKEN)"})
        entries = mine.json()["entries"]
        assert [e["action"] for e in entries] == ["token.create", "project.create", "flag.meta"]
        assert "secret" not in json.dumps(everything)


def test_unknown_fields_are_refused(server: Server) -> None:
    with server.client() as api:
        project = api.post("/api/v1/projects", json={"key": "web", "colour": "red"})
        assert project.status_code == 400
        assert project.json()["problems"][0]["path"] == "body.colour"
        flag = api.put(f"{ENV}/flags/f", json={"default": "on", "colour": "red"})
        assert flag.status_code == 422
        assert flag.json()["problems"][0]["path"] == "flags.f.colour"
        assert flag.json()["problems"][0]["message"].startswith("unknown field")


def test_users_have_roles_and_hashed_passwords(server: Server) -> None:
    with server.client() as api:
        made = api.post(
            "/api/v1/users", json={"name": "ana", "role": "releaser", "password": "a" * 12}
        )
        assert made.status_code == 201
        short = api.post("/api/v1/users", json={"name": "ben", "role": "viewer", "password": "x"})
        assert short.status_code == 422
        assert short.json()["problems"][0]["path"] == "password"
        assert api.get("/api/v1/users").json()["users"][0]["name"] == "ana"
        assert "password" not in api.get("/api/v1/users").text


def test_audit_filters_by_time(server: Server) -> None:
    with server.client() as api:
        api.put(f"{ENV}/flags/a", json={"default": "on"})
        entries = api.get(f"{ENV}/audit").json()["entries"]
        at = entries[0]["at"]
        assert api.get(f"{ENV}/audit", params={"since": at}).json()["entries"] == entries
        assert api.get(f"{ENV}/audit", params={"until": at}).json()["entries"] == []
        bad = api.get(f"{ENV}/audit", params={"since": "yesterday"})
        assert bad.status_code == 422


# -- who may call what ----------------------------------------------------------------------

ADMIN_ONLY = re.compile(
    r"^/api/v1/(tokens|users|audit$)|^/api/v1/projects(/\{project\}/environments)?$"
)
ADMIN_ONLY_READS = re.compile(r"^/api/v1/(tokens|users|audit$)")


def _admin_operations(server: Server) -> list[tuple[str, str]]:
    spec = httpx.get(f"{server.url}/openapi.json").json()
    operations = []
    for path, methods in spec["paths"].items():
        if path.startswith("/api/v1"):
            operations.extend((method.upper(), path) for method in methods)
    return operations


def _fill(path: str) -> str:
    return (
        path.replace("{project}", "shop")
        .replace("{env}", "production")
        .replace("{key}", "f")
        .replace("{token_id}", "1")
        .replace("{release_id}", "r1")
        .replace("{schedule_id}", "s1")
        .replace("{change_id}", "c1")
        .replace("{webhook_id}", "1")
        .replace("{delivery_id}", "1")
    )


WEBHOOKS = re.compile(r"^/api/v1/projects/\{project\}/webhooks")
#: starting and moving a release on needs a releaser; stopping one only an editor
RELEASER = re.compile(
    r"/releases(/\{release_id\}/(resume|advance|approve|start|restart))?$"
    r"|/changes/\{change_id\}/(approve|reject)$"
)


def _needed_role(method: str, path: str) -> str:
    if method != "GET" and WEBHOOKS.search(path):
        return "admin"  # a subscription sends the project's changes where its maker says
    if ADMIN_ONLY.search(path) and (method != "GET" or ADMIN_ONLY_READS.search(path)):
        return "admin"
    if method == "POST" and RELEASER.search(path):
        return "releaser"
    if method == "PUT" and path.endswith("/settings"):
        return "admin"
    return "viewer" if method == "GET" else "editor"


def test_every_admin_endpoint_refuses_missing_invalid_and_weak_tokens(server: Server) -> None:
    operations = _admin_operations(server)
    assert len(operations) >= 20
    tokens = {
        "sdk": sdk_key(server.database_url),
        "viewer": _token(server, kind="admin", role="viewer"),
        "editor": _token(server, kind="admin", role="editor"),
    }
    weaker = {
        "viewer": [],
        "editor": ["viewer"],
        "releaser": ["viewer", "editor"],
        "admin": ["viewer", "editor"],
    }
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for method, path in operations:
            url = _fill(path)
            body = {} if method in ("PUT", "POST") else None
            where = f"{method} {path}"
            assert http.request(method, url, json=body).status_code == 401, where
            bad = {"Authorization": "Bearer not-a-token"}
            assert http.request(method, url, json=body, headers=bad).status_code == 401, where
            for name in ["sdk", *weaker[_needed_role(method, path)]]:
                auth = {"Authorization": f"Bearer {tokens[name]}"}
                got = http.request(method, url, json=body, headers=auth).status_code
                assert got == 403, f"{where} with a {name} token gave {got}"


def test_an_sdk_key_reads_only_its_own_environment(server: Server) -> None:
    with server.client() as api:
        api.put(f"{ENV}/flags/prod-only", json={"default": "on"})
    staging = sdk_key(server.database_url, "staging")
    with server.client(staging) as sdk:
        assert "prod-only" not in sdk.get("/sdk/v1/snapshot").json()["flags"]
        assert sdk.get(f"{ENV}/flags").status_code == 403
