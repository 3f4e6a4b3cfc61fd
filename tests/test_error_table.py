"""The server maps errors in one place (issue 9, 3): every refusal through server/errors.py's
table, anything unexpected a JSON 500 that tells nothing of its cause, never a traceback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.server_process import access_service
from unveil.core import InvalidDocument, Problem, UnveilError
from unveil.release.errors import CommandRefused, InvalidState
from unveil.server.app import create_app
from unveil.server.errors import STATUS, error_response
from unveil.service import errors
from unveil.store.database import make_engine, upgrade

PROBLEM = (Problem("flags.f.default", "'nowhere' is not a variant"),)

#: one of each kind of refusal, and the status the table gives it
REFUSALS: list[tuple[UnveilError, int]] = [
    (errors.BadRequest("If-Match must be an ETag"), 400),
    (errors.Unauthenticated("the token is not valid"), 401),
    (errors.Forbidden("viewers may not change flags"), 403),
    (errors.NotFound("no project 'x'"), 404),
    (errors.Conflict("project 'x' exists"), 409),
    (errors.PreconditionFailed(7), 412),
    (errors.Invalid(PROBLEM), 422),
    (InvalidDocument(PROBLEM), 422),
    (InvalidState(PROBLEM), 422),  # stored state that does not read back: named, not a 500
    (errors.StoredInvalid(PROBLEM), 422),  # stored flags under older rules: named, not a 500
    (errors.PreconditionRequired("If-Match is needed"), 428),
    (errors.Overloaded("busy", retry_after=3), 429),
    (CommandRefused("resume", "rolled_back", "it has ended"), 409),
]


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[TestClient, Any, dict[str, str]]]:
    url = f"sqlite:///{tmp_path / 'u.db'}"
    upgrade(url)
    engine = make_engine(url)
    token = access_service(engine).create_token("t", "admin", "admin")
    made = create_app(engine)
    try:
        with TestClient(made, raise_server_exceptions=False) as client:
            yield client, made.state.services, {"Authorization": f"Bearer {token}"}
    finally:
        engine.dispose()


def test_the_table_names_every_refusal_the_services_raise() -> None:
    refusals = {c for c in vars(errors).values() if isinstance(c, type)}
    refusals = {c for c in refusals if issubclass(c, UnveilError) and c is not UnveilError}
    assert refusals - {errors.Fenced} <= set(STATUS)  # Fenced stays inside the job runner
    assert {type(e) for e, _ in REFUSALS} >= set(STATUS)


@pytest.mark.parametrize(("refusal", "status"), REFUSALS, ids=lambda v: type(v).__name__)
def test_a_refusal_raised_in_a_use_case_answers_its_status(
    app: tuple[TestClient, Any, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    refusal: UnveilError,
    status: int,
) -> None:
    client, svc, headers = app

    def refuse() -> None:
        raise refusal

    monkeypatch.setattr(svc.access, "projects", refuse)
    answer = client.get("/api/v1/projects", headers=headers)
    assert answer.status_code == status
    body = answer.json()
    assert body["error"] == str(refusal)
    if isinstance(refusal, errors.Invalid | InvalidDocument):
        assert body["problems"] == [{"path": p.path, "message": p.message} for p in PROBLEM]
    if isinstance(refusal, errors.Overloaded):
        assert answer.headers["retry-after"] == "3"


@pytest.mark.parametrize(
    "unexpected",
    [RuntimeError("secret detail"), KeyError("secret detail"), UnveilError("secret detail")],
    ids=["RuntimeError", "KeyError", "UnveilError outside the table"],
)
def test_anything_unexpected_is_a_json_500_telling_nothing_of_its_cause(
    app: tuple[TestClient, Any, dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    unexpected: Exception,
) -> None:
    client, svc, headers = app

    def fail() -> None:
        raise unexpected

    monkeypatch.setattr(svc.access, "projects", fail)
    answer = client.get("/api/v1/projects", headers=headers)
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {"error": "internal error; the server log has the details"}
    assert "secret detail" not in answer.text
    assert "secret detail" in caplog.text  # the log has it, with its traceback


@pytest.mark.parametrize("kind", [errors.Invalid, InvalidDocument])
def test_a_refusal_of_many_problems_names_a_few_and_lists_them_all(kind: type) -> None:
    """A document of 2,371 wrong flags answered a 165 KB ``error``: every problem twice."""
    many = tuple(Problem(f"flags.f{i}.default", "'nowhere' is not a variant") for i in range(500))
    body = json.loads(error_response(kind(many)).body)
    assert len(body["problems"]) == 500
    assert body["error"].startswith("500 problems, every one in 'problems'; the first 10: ")
    assert "flags.f9.default" in body["error"]
    assert "flags.f10.default" not in body["error"]
    assert len(body["error"]) < 1000
    few = json.loads(error_response(kind(many[:3])).body)
    assert "flags.f2.default" in few["error"]  # a few are named as they were
