"""Every change is one transaction: state, version, audit entry, outbox row and notice."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select, text

from tests.server_process import Server, access_service, database, wait_for
from unveil.service.access import AccessService
from unveil.service.flags import Change, FlagService
from unveil.service.meta import MetaService
from unveil.store import tables as t
from unveil.store.database import make_engine, upgrade
from unveil.store.unit import Store

ENV = "/api/v1/projects/shop/environments/production"
FLAG = {"description": "x", "default": "off"}


def _counts(engine: Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        audit = conn.execute(select(func.count()).select_from(t.audit)).scalar_one()
        outbox = conn.execute(select(func.count()).select_from(t.outbox)).scalar_one()
        unlinked = conn.execute(
            select(func.count())
            .select_from(t.outbox)
            .outerjoin(t.audit, t.audit.c.id == t.outbox.c.audit_id)
            .where(t.audit.c.id.is_(None))
        ).scalar_one()
    assert unlinked == 0
    return int(audit), int(outbox)


def _token_id(api: Any, name: str) -> int:
    tokens = api.get("/api/v1/tokens").json()["tokens"]
    return int(next(k["id"] for k in tokens if k["name"] == name))


def _etag(api: Any, path: str) -> str:
    return str(api.get(path).headers["etag"])


RELEASES = "/api/v1/projects/{project}/environments/{env}/releases"
WEBHOOKS = "/api/v1/projects/{project}/webhooks"
HOOKS = "/api/v1/projects/shop/webhooks"


def _redeliver_first(api: Any) -> Any:
    """Redeliver the first webhook's first delivery, once the leader has made it."""
    hook = api.get(HOOKS).json()["webhooks"][0]["id"]
    deliveries = f"{HOOKS}/{hook}/deliveries"
    assert wait_for(lambda: api.get(deliveries).json()["deliveries"] != [])
    delivery = api.get(deliveries).json()["deliveries"][0]["id"]

    def resting() -> bool:
        return bool(api.get(deliveries).json()["deliveries"][0]["state"] != "sending")

    for _ in range(20):  # 409 while an attempt is in flight: wait for it to end, again
        assert wait_for(resting)
        answer = api.post(f"{deliveries}/{delivery}/redeliver")
        if answer.status_code != 409:
            break
    return answer


def _plan(flag: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    steps = [{"percent": 10, "hold": "1h"}, {"percent": 100}]
    return {
        "flag": flag,
        "control": "off",
        "treatment": "on",
        "steps": steps,
        **({"options": options} if options else {}),
    }


#: Every state-changing operation of the admin API, and a call that makes it succeed.
CALLS: list[tuple[str, str, Callable[[Any], Any]]] = [
    ("POST", "/api/v1/projects", lambda api: api.post("/api/v1/projects", json={"key": "web"})),
    (
        "POST",
        "/api/v1/projects/{project}/environments",
        lambda api: api.post("/api/v1/projects/web/environments", json={"key": "qa"}),
    ),
    (
        "PUT",
        "/api/v1/projects/{project}/environments/{env}/segments/{key}",
        lambda api: api.put(f"{ENV}/segments/beta", json={"include": ["u1"]}),
    ),
    (
        "PUT",
        "/api/v1/projects/{project}/environments/{env}/flags/{key}",
        lambda api: api.put(f"{ENV}/flags/f", json=FLAG),
    ),
    (
        "PUT",
        "/api/v1/projects/{project}/environments/{env}/flags/{key}",
        lambda api: api.put(
            f"{ENV}/flags/f",
            json={**FLAG, "enabled": False},
            headers={"If-Match": _etag(api, f"{ENV}/flags/f")},
        ),
    ),
    (
        "DELETE",
        "/api/v1/projects/{project}/environments/{env}/flags/{key}",
        lambda api: api.delete(
            f"{ENV}/flags/f", headers={"If-Match": _etag(api, f"{ENV}/flags/f")}
        ),
    ),
    (
        "DELETE",
        "/api/v1/projects/{project}/environments/{env}/segments/{key}",
        lambda api: api.delete(
            f"{ENV}/segments/beta", headers={"If-Match": _etag(api, f"{ENV}/segments/beta")}
        ),
    ),
    (
        "PUT",
        "/api/v1/projects/{project}/environments/{env}/document",
        lambda api: api.put(f"{ENV}/document", json={"version": 1, "flags": {"g": FLAG}}),
    ),
    (
        "PUT",
        "/api/v1/projects/{project}/flags/{key}/meta",
        lambda api: api.put("/api/v1/projects/shop/flags/g/meta", json={"type": "release"}),
    ),
    *[
        ("POST", RELEASES + path, call)
        for path, call in [
            ("", lambda api: api.post(f"{ENV}/releases", json={"plan": _plan("g")})),
            ("/{release_id}/pause", lambda api: api.post(f"{ENV}/releases/r1/pause")),
            ("/{release_id}/resume", lambda api: api.post(f"{ENV}/releases/r1/resume")),
            ("/{release_id}/advance", lambda api: api.post(f"{ENV}/releases/r1/advance")),
            ("/{release_id}/abort", lambda api: api.post(f"{ENV}/releases/r1/abort")),
            ("/{release_id}/restart", lambda api: api.post(f"{ENV}/releases/r1/restart")),
        ]
    ],
    (
        "PUT",
        "/api/v1/projects/{project}/environments/{env}/flags/{key}",
        lambda api: api.put(f"{ENV}/flags/h", json=FLAG),
    ),
    (
        "POST",
        RELEASES,
        lambda api: api.post(
            f"{ENV}/releases", json={"plan": _plan("h", {"require_approval": True})}
        ),
    ),
    (
        "POST",
        RELEASES + "/{release_id}/approve",
        lambda api: _as_second(api, "POST", f"{ENV}/releases/r3/approve"),
    ),
    (
        "PUT",
        "/api/v1/projects/{project}/environments/{env}/flags/{key}",
        lambda api: api.put(f"{ENV}/flags/k", json=FLAG),
    ),
    (
        "POST",
        RELEASES,
        lambda api: api.post(
            f"{ENV}/releases", json={"plan": _plan("k"), "start_at": "2030-01-01T00:00:00Z"}
        ),
    ),
    ("POST", RELEASES + "/{release_id}/start", lambda api: api.post(f"{ENV}/releases/r4/start")),
    (
        "POST",
        "/api/v1/projects/{project}/environments/{env}/schedules",
        lambda api: api.post(
            f"{ENV}/schedules",
            json={"action": "flag.put", "key": "g", "data": FLAG, "at": "2030-01-01T00:00:00Z"},
        ),
    ),
    (
        "POST",
        "/api/v1/projects/{project}/environments/{env}/schedules/{schedule_id}/cancel",
        lambda api: api.post(f"{ENV}/schedules/s1/cancel"),
    ),
    (
        "POST",
        "/api/v1/tokens",
        lambda api: api.post(
            "/api/v1/tokens", json={"name": "ci", "kind": "admin", "role": "viewer"}
        ),
    ),
    (
        "DELETE",
        "/api/v1/tokens/{token_id}",
        lambda api: api.delete(
            "/api/v1/tokens/"
            + str(
                next(
                    k["id"] for k in api.get("/api/v1/tokens").json()["tokens"] if k["name"] == "ci"
                )
            )
        ),
    ),
    (
        "POST",
        WEBHOOKS,
        lambda api: api.post(
            HOOKS, json={"url": "http://127.0.0.1:9/nobody", "events": ["flag.changed"]}
        ),
    ),
    (
        "PUT",
        "/api/v1/projects/{project}/environments/{env}/flags/{key}",
        lambda api: api.put(f"{ENV}/flags/w", json=FLAG),
    ),
    ("POST", WEBHOOKS + "/{webhook_id}/deliveries/{delivery_id}/redeliver", _redeliver_first),
    (
        "DELETE",
        WEBHOOKS + "/{webhook_id}",
        lambda api: api.delete(f"{HOOKS}/{api.get(HOOKS).json()['webhooks'][0]['id']}"),
    ),
    (
        "POST",
        "/api/v1/users",
        lambda api: api.post(
            "/api/v1/users", json={"name": "ada", "role": "editor", "password": "x" * 12}
        ),
    ),
]

#: a second person, for the calls of approvals (nobody approves their own request)
SECOND: dict[str, str] = {}
CHANGES = "/api/v1/projects/{project}/environments/{env}/changes/{change_id}"


def _as_second(api: Any, method: str, path: str, **kwargs: Any) -> Any:
    return api.request(method, path, headers={"Authorization": f"Bearer {SECOND['token']}"},
                       **kwargs)  # fmt: skip


def _ask(api: Any, description: str) -> Any:
    etag = _etag(api, f"{ENV}/flags/g")
    return api.request(
        "PUT",
        f"{ENV}/flags/g",
        json={**FLAG, "description": description},
        headers={"If-Match": etag, "Authorization": f"Bearer {SECOND['token']}"},
    )


#: Approvals go last: once the environment requires them, changes there become requests.
CALLS += [
    (
        "PUT",
        "/api/v1/projects/{project}/environments/{env}/settings",
        lambda api: api.put(f"{ENV}/settings", json={"requires_approval": True}),
    ),
    (
        "PUT",
        "/api/v1/projects/{project}/environments/{env}/flags/{key}",
        lambda api: _ask(api, "c1"),
    ),
    (
        "POST",
        CHANGES + "/comments",
        lambda api: api.post(f"{ENV}/changes/c1/comments", json={"text": "looks right"}),
    ),
    ("POST", CHANGES + "/approve", lambda api: api.post(f"{ENV}/changes/c1/approve")),
    (
        "PUT",
        "/api/v1/projects/{project}/environments/{env}/flags/{key}",
        lambda api: _ask(api, "c2"),
    ),
    ("POST", CHANGES + "/reject", lambda api: api.post(f"{ENV}/changes/c2/reject")),
    (
        "PUT",
        "/api/v1/projects/{project}/environments/{env}/flags/{key}",
        lambda api: _ask(api, "c3"),
    ),
    (
        "POST",
        CHANGES + "/withdraw",
        lambda api: _as_second(api, "POST", f"{ENV}/changes/c3/withdraw"),
    ),
]

#: deploys: a service, a deploy, its verification, what a rollback does (docs/deploys.md)
CALLS += [
    (
        "PUT",
        "/api/v1/projects/{project}/services/{name}",
        lambda api: api.put("/api/v1/projects/shop/services/api", json={"owner": "team"}),
    ),
    (
        "POST",
        "/api/v1/projects/{project}/environments/{env}/deploys",
        lambda api: api.post(f"{ENV}/deploys", json={"service": "api", "version": "1.0.0"}),
    ),
    (
        "POST",
        "/api/v1/projects/{project}/environments/{env}/deploys/{deploy_id}/verification",
        lambda api: api.post(
            f"{ENV}/deploys/d1/verification",
            json={"result": "passed", "checks": [{"name": "smoke", "passed": True}]},
        ),
    ),
    (
        "PUT",
        "/api/v1/projects/{project}/environments/{env}/deploy-settings",
        lambda api: api.put(f"{ENV}/deploy-settings", json={"on_deploy_rollback": "ask"}),
    ),
]


#: launches, promotions, templates and the stale-flag setting (docs/launches.md,
#: docs/code-references.md)
PROJECT = "/api/v1/projects/shop"
LAUNCHES = "/api/v1/projects/{project}/launches"
CALLS += [
    (
        "PUT",
        "/api/v1/projects/{project}/environments/{env}/flags/{key}",
        lambda api: api.put("/api/v1/projects/shop/environments/staging/flags/promoted", json=FLAG),
    ),
    (
        "POST",
        "/api/v1/projects/{project}/promotions",
        lambda api: api.post(
            f"{PROJECT}/promotions",
            json={"source": "staging", "target": "production", "flags": ["promoted"]},
        ),
    ),
    (
        "PUT",
        "/api/v1/projects/{project}/templates/{name}",
        lambda api: api.put(
            f"{PROJECT}/templates/careful",
            json={
                "plan": {
                    "control": "off",
                    "treatment": "on",
                    "steps": [{"percent": 10, "hold": "1h"}, {"percent": 100}],
                }
            },
        ),
    ),
    (
        "DELETE",
        "/api/v1/projects/{project}/templates/{name}",
        lambda api: api.delete(f"{PROJECT}/templates/careful"),
    ),
    (
        "PUT",
        "/api/v1/projects/{project}/settings",
        lambda api: api.put(f"{PROJECT}/settings", json={"stale_after_days": 45}),
    ),
    (
        "POST",
        LAUNCHES,
        lambda api: api.post(
            f"{PROJECT}/launches",
            json={
                "name": "Launch",
                "notes": "It is here.",
                "changes": [{"environment": "staging", "flag": "promoted", "enabled": False}],
            },
        ),
    ),
    ("POST", LAUNCHES + "/{launch_id}/start", lambda api: api.post(f"{PROJECT}/launches/l1/start")),
    ("POST", LAUNCHES + "/{launch_id}/stop", lambda api: api.post(f"{PROJECT}/launches/l1/stop")),
]
#: calls that change several things, each with its own entry and outbox row: a release's
#: move (its decision and the flag change), a promotion (the copy and its record), a
#: launch's start and stop (the launch and each flag it changes)
SEVERAL = (RELEASES, "/api/v1/projects/{project}/promotions", LAUNCHES + "/{launch_id}/")


#: On PostgreSQL, triggers note the transaction (txid) that wrote each audit entry, each
#: outbox row and each bump of an environment's version, so the test can see which writes
#: shared a transaction (the tables' own xmin moves when a row is updated later).
_NOTE_WRITES = [
    "CREATE TABLE test_writes (kind text, audit_id bigint, environment_id bigint, "
    "version bigint, xid bigint)",
    """CREATE FUNCTION test_note_write() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_TABLE_NAME = 'audit' THEN
        INSERT INTO test_writes
        VALUES ('audit', NEW.id, NEW.environment_id, NEW.environment_version, txid_current());
      ELSIF TG_TABLE_NAME = 'outbox' THEN
        INSERT INTO test_writes VALUES ('outbox', NEW.audit_id, NULL, NULL, txid_current());
      ELSE
        INSERT INTO test_writes VALUES ('version', NULL, NEW.id, NEW.version, txid_current());
      END IF;
      RETURN NULL;
    END $$""",
    "CREATE TRIGGER test_audit AFTER INSERT ON audit "
    "FOR EACH ROW EXECUTE FUNCTION test_note_write()",
    "CREATE TRIGGER test_outbox AFTER INSERT ON outbox "
    "FOR EACH ROW EXECUTE FUNCTION test_note_write()",
    "CREATE TRIGGER test_version AFTER UPDATE OF version ON environments FOR EACH ROW "
    "WHEN (NEW.version IS DISTINCT FROM OLD.version) EXECUTE FUNCTION test_note_write()",
]


def _note_writes(engine: Engine) -> None:
    with engine.begin() as conn:
        for statement in _NOTE_WRITES:
            conn.execute(text(statement))


def _apart(engine: Engine) -> list[Any]:
    """Audit entries whose outbox row, or whose environment's version bump, was written
    by another transaction than the entry itself (or not at all)."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT a.audit_id, a.environment_id, a.version FROM test_writes a "
                    "WHERE a.kind = 'audit' AND (NOT EXISTS (SELECT 1 FROM test_writes o "
                    "  WHERE o.kind = 'outbox' AND o.audit_id = a.audit_id AND o.xid = a.xid) "
                    "OR (a.version IS NOT NULL AND NOT EXISTS (SELECT 1 FROM test_writes v "
                    "  WHERE v.kind = 'version' AND v.environment_id = a.environment_id "
                    "  AND v.version = a.version AND v.xid = a.xid)))"
                )
            ).all()
        )


def test_every_state_changing_call_leaves_one_audit_entry_and_one_outbox_row(
    server: Server,
) -> None:
    engine = make_engine(server.database_url)
    SECOND["token"] = access_service(engine).create_token("second person", "admin", "releaser")
    same_transaction = engine.dialect.name == "postgresql"
    if same_transaction:
        _note_writes(engine)
    audited_before = _counts(engine)[0]
    try:
        with server.client() as api:
            spec = api.get("/openapi.json").json()
            changing = {
                (method.upper(), path)
                for path, operations in spec["paths"].items()
                if path.startswith("/api/v1")
                for method in operations
                if method in {"post", "put", "delete", "patch"}
            }
            covered = {(method, path) for method, path, _ in CALLS}
            assert changing == covered  # a new endpoint needs its case here
            for method, path, call in CALLS:
                before = _counts(engine)
                answer = call(api)
                assert answer.status_code < 300, (method, path, answer.text)
                after = _counts(engine)
                audited, announced = after[0] - before[0], after[1] - before[1]
                if path.startswith(SEVERAL) or path.endswith("/approve"):
                    # a release's move is its decision and the flag change it makes:
                    # several entries, each with its outbox row
                    assert audited == announced >= 1, (method, path)
                else:
                    assert (audited, announced) == (1, 1), (method, path)
                if same_transaction:  # each entry, its outbox row and its version: one commit
                    assert _apart(engine) == [], (method, path)
        if same_transaction:
            with engine.connect() as conn:
                noted = conn.execute(
                    text("SELECT count(*) FROM test_writes WHERE kind = 'audit'")
                ).scalar_one()
            assert noted == _counts(engine)[0] - audited_before  # they saw every entry
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    with database(request.param, tmp_path) as url:
        upgrade(url)
        engine = make_engine(url)
        access_service(engine).ensure_environment("shop", "production")
        try:
            yield Store(engine)
        finally:
            engine.dispose()


class _Transactions:
    """What each transaction on the engine wrote, told apart by the connection's begin."""

    def __init__(self, engine: Engine) -> None:
        self.done: list[list[str]] = []
        self._open: dict[int, list[str]] = {}
        event.listen(engine, "begin", self._begin)
        event.listen(engine, "commit", self._commit)
        event.listen(engine, "rollback", self._rollback)
        event.listen(engine, "before_cursor_execute", self._execute)

    def _begin(self, conn: Any) -> None:
        self._open[id(conn.connection)] = []

    def _commit(self, conn: Any) -> None:
        self.done.append(self._open.pop(id(conn.connection), []))

    def _rollback(self, conn: Any) -> None:
        self._open.pop(id(conn.connection), None)

    def _execute(self, conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen = self._open.setdefault(id(conn.connection), [])
        words = statement.replace("(", " ").split()
        # every write the statement makes: one, or several (WITH ... INSERT ... INSERT ...)
        for i, word in enumerate(words[:-2]):
            verb = word.upper()
            if verb in {"INSERT", "DELETE"} and words[i + 1].upper() in {"INTO", "FROM"}:
                seen.append(verb + " " + words[i + 2].strip('"'))
            elif verb == "UPDATE" and (i == 0 or words[i - 1].upper() not in {"KEY", "FOR", "DO"}):
                seen.append(verb + " " + words[i + 1].strip('"'))
        if "pg_notify" in statement:  # on its own, or with the version's bump
            seen.append("NOTIFY")

    def writes(self) -> list[list[str]]:
        return [w for w in self.done if w]


def test_a_flag_change_is_one_transaction_holding_all_of_it(store: Store) -> None:
    seen = _Transactions(store.engine)
    FlagService(store).put_item("flags", "shop", "production", "f", FLAG, Change("me"), None)
    (only,) = seen.writes()  # one transaction wrote anything
    assert "INSERT flags" in only
    assert "UPDATE environments" in only  # the version
    assert "INSERT audit" in only
    assert "INSERT outbox" in only
    if store.engine.dialect.name == "postgresql":
        assert "NOTIFY" in only  # sent at commit, with the rest


@pytest.mark.parametrize(
    "use_case",
    [
        lambda s: FlagService(s).put_item(
            "flags", "shop", "production", "f", FLAG, Change("me"), None
        ),
        lambda s: FlagService(s).apply_document(
            "shop", "production", {"version": 1, "flags": {"f": FLAG}}, Change("me")
        ),
        lambda s: AccessService(s).create_project("web"),
        lambda s: AccessService(s).create_token("t", "admin", "viewer"),
        lambda s: MetaService(s).put("shop", "f", {"type": "release"}),
    ],
)
def test_a_failing_announcement_leaves_nothing_behind(store: Store, use_case: Any) -> None:
    """If the last write of a change fails, the state, version and audit are rolled back too."""
    before = _snapshot(store.engine)

    def fail_on_outbox(_c: Any, _cur: Any, statement: str, *_a: Any) -> None:
        if "INSERT INTO outbox" in statement:  # alone, or with its audit entry
            raise RuntimeError("the disk is full")

    event.listen(store.engine, "before_cursor_execute", fail_on_outbox)
    with pytest.raises(Exception, match="the disk is full"):
        use_case(store)
    event.remove(store.engine, "before_cursor_execute", fail_on_outbox)
    assert _snapshot(store.engine) == before


def _snapshot(engine: Engine) -> dict[str, Any]:
    tables = [
        t.flags,
        t.segments,
        t.audit,
        t.outbox,
        t.projects,
        t.environments,
        t.tokens,
        t.flag_meta,
    ]
    with engine.connect() as conn:
        return {table.name: conn.execute(select(table)).all() for table in tables}
