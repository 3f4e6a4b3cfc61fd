"""A write that waits for another writer's lock reads the item as that writer left it.

On PostgreSQL a locking SELECT that waited for a commit reads the locked row
again, and only that row: an item joined to it was as it had been before the
commit. Two writers with the same If-Match were then both accepted (the
second overwrote the first without ever having read it), and a flag created
meanwhile looked absent to the second writer.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from tests.server_process import access_service, migrated_engine, wait_for
from unveil.service.errors import Conflict, PreconditionFailed
from unveil.service.flags import Change, FlagService
from unveil.store.access import EnvironmentRepository
from unveil.store.items import ItemRepository
from unveil.store.unit import Store

FLAG = {"description": "x", "default": "off"}


@pytest.fixture
def pg_engine(tmp_path: Path) -> Iterator[Engine]:
    with migrated_engine("postgresql", tmp_path) as engine:
        yield engine


def _waiting_for_a_lock(engine: Engine) -> bool:
    with engine.connect() as conn:
        count = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        ).scalar_one()
    return bool(count)


def _second_writer_after_first(engine: Engine, first: Any, second: Any) -> Any:
    """Run ``first(work)`` in a transaction; ``second()`` waits for its lock; then commit."""
    store = Store(engine)
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(second())
        except Exception as exc:
            outcome.append(exc)

    with store.unit_of_work() as work:
        first(work)
        thread = threading.Thread(target=run)
        thread.start()
        assert wait_for(lambda: _waiting_for_a_lock(engine)), "the second writer never waited"
    thread.join(timeout=30)
    assert outcome, "the second writer did not finish"
    return outcome[0]


def test_a_stale_if_match_is_refused_after_waiting_for_the_writer_that_made_it_stale(
    pg_engine: Engine,
) -> None:
    access_service(pg_engine).ensure_environment("shop", "production")
    one, two = FlagService(Store(pg_engine)), FlagService(Store(pg_engine))
    made = one.put_item("flags", "shop", "production", "f", FLAG, Change("t"), None)
    first = {**FLAG, "description": "first"}
    second = {**FLAG, "description": "second"}
    result = _second_writer_after_first(
        pg_engine,
        lambda work: one.put_item(
            "flags", "shop", "production", "f", first, Change("t"), made.version, within=work
        ),
        lambda: two.put_item("flags", "shop", "production", "f", second, Change("t"), made.version),
    )
    assert isinstance(result, PreconditionFailed), result
    assert one.get_item("flags", "shop", "production", "f").data["description"] == "first"


def test_a_flag_created_while_a_creator_waited_is_not_created_twice(pg_engine: Engine) -> None:
    access_service(pg_engine).ensure_environment("shop", "production")
    one, two = FlagService(Store(pg_engine)), FlagService(Store(pg_engine))
    result = _second_writer_after_first(
        pg_engine,
        lambda work: one.put_item(
            "flags", "shop", "production", "f", FLAG, Change("t"), None, within=work
        ),
        lambda: two.put_item(
            "flags", "shop", "production", "f", FLAG, Change("t"), None, create_only=True
        ),
    )
    assert isinstance(result, Conflict), result  # "exists already", not a unique violation


def test_a_writer_of_one_environment_does_not_wait_for_another_environments(
    pg_engine: Engine,
) -> None:
    """A write holds its environment's row, not its project's: the locking statement
    found the environment by a join to the project, and locked that row too, so every
    writer of staging waited for a writer of production (a document applied there, say)."""
    access_service(pg_engine).ensure_environment("shop", "production")
    access_service(pg_engine).ensure_environment("shop", "staging")
    flags = FlagService(Store(pg_engine))
    with flags.store.unit_of_work() as work:
        flags.put_item("flags", "shop", "production", "f", FLAG, Change("t"), None, within=work)
        with pg_engine.connect() as conn, conn.begin():
            conn.execute(text("SET LOCAL lock_timeout = '50ms'"))  # a wait fails at once
            held = ItemRepository(conn, "flags").held("shop", "staging", "f")
            assert held is not None
            assert held[2] is None
            assert EnvironmentRepository(conn).id_of("shop", "staging", lock=True) == held[0]
            # the same environment is still held: the statement does wait for that one
            with pytest.raises(OperationalError):
                EnvironmentRepository(conn).held("shop", "production")
