"""Background work runs once: jobs fenced by compare-and-set and the leadership epoch."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, text

from tests.server_process import (
    Server,
    access_service,
    postgres_database,
    start_server,
    stop,
    wait_for,
)
from unveil.core import UnveilError
from unveil.service.flags import FlagService
from unveil.service.jobs import JobService
from unveil.service.metrics import GuardReader
from unveil.service.releases import ReleaseService
from unveil.service.schedules import SCHEDULE_RUN, ScheduleRequest, ScheduleService
from unveil.store import tables as t
from unveil.store.database import make_engine, upgrade
from unveil.store.events import EventCounts
from unveil.store.unit import Store

FLAG = {"description": "scheduled", "default": "on"}


def _services(store: Store, node: str) -> tuple[JobService, ScheduleService]:
    """A node's jobs, running scheduled changes (the work these tests watch) as the server does."""
    jobs = JobService(store, node)
    flags = FlagService(store)
    releases = ReleaseService(store, flags, jobs, GuardReader(EventCounts(store.engine)))
    schedules = ScheduleService(store, flags, releases)
    jobs.register(SCHEDULE_RUN, schedules.handler())
    return jobs, schedules


def _jobs(store: Store, node: str) -> JobService:
    return _services(store, node)[0]


def _schedule(store: Store, key: str, seconds: float = 0) -> tuple[str, int]:
    """A change of flag ``key`` scheduled ``seconds`` from now: the schedule's id and its job's."""
    from datetime import UTC, datetime, timedelta

    _, schedules = _services(store, "test")
    at = (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()
    made = schedules.create(
        "shop", "production", ScheduleRequest("flag.put", at, key=key, data=FLAG), "test"
    )
    with store.reading() as r:
        (job,) = [j for j in r.jobs.by_kind(SCHEDULE_RUN) if j.key == f"schedule:{made.row.id}"]
    return made.row.id, job.id


def _applied(engine: Engine, schedule_id: str) -> list[str]:
    return _audit_actions(engine, f"schedule:{schedule_id}")


def _epoch(store: Store, node: str) -> int:
    with store.unit_of_work() as work:
        from datetime import UTC, datetime

        return work.leadership.take(node, datetime.now(UTC))


def _audit_actions(engine: Engine, actor: str) -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(select(t.audit.c.action).where(t.audit.c.actor == actor))
        return [r.action for r in rows]


def test_a_job_taken_over_by_a_new_leader_is_applied_once(engine: Engine) -> None:
    """Node A claims a job and loses the lead before finishing; B re-claims and runs it.

    A's run, coming late, is fenced: its effect is rolled back with its finish.
    """
    store = Store(engine)
    access_service(engine).ensure_environment("shop", "production")
    a, b = _jobs(store, "node-a"), _jobs(store, "node-b")
    schedule_id, job_id = _schedule(store, "late")

    epoch_a = _epoch(store, "node-a")
    with store.unit_of_work() as work:
        from datetime import UTC, datetime

        (claimed_by_a,) = work.jobs.claim(datetime.now(UTC), "node-a", epoch_a)
    epoch_b = _epoch(store, "node-b")  # A lost the lock; B leads now
    assert b.run_due(epoch_b) == 1  # B re-claims the job A left running, and applies it
    assert a._run(claimed_by_a) is False  # A's late run changes nothing
    assert a.fenced == 1

    assert _applied(engine, schedule_id) == ["flag.create", "schedule.applied"]
    job = b.get(job_id)
    assert (job.state, job.owner, job.epoch) == ("done", "node-b", epoch_b)
    assert b.run_due(epoch_b) == 0  # and it never runs again


def test_a_job_of_a_stale_epoch_is_fenced_even_before_anyone_reclaims_it(engine: Engine) -> None:
    store = Store(engine)
    access_service(engine).ensure_environment("shop", "production")
    a = _jobs(store, "node-a")
    schedule_id, _ = _schedule(store, "x")
    epoch_a = _epoch(store, "node-a")
    with store.unit_of_work() as work:
        from datetime import UTC, datetime

        (claimed,) = work.jobs.claim(datetime.now(UTC), "node-a", epoch_a)
    _epoch(store, "node-b")  # a new leadership, which has not looked at jobs yet
    assert a._run(claimed) is False
    assert _applied(engine, schedule_id) == []


def test_a_refused_change_fails_the_job_at_once_and_keeps_the_reason(engine: Engine) -> None:
    store = Store(engine)
    jobs = _jobs(store, "n")

    def refuse(_job: Any, _work: Any) -> None:
        raise UnveilError("flags.b.default: 'nowhere' is not a variant")

    jobs.register("test.refused", refuse)
    job_id = jobs.enqueue("test.refused", {})
    assert job_id is not None
    assert jobs.run_due(_epoch(store, "n")) == 0
    job = jobs.get(job_id)
    assert job.state == "failed"
    assert job.last_error is not None
    assert "default" in job.last_error


def test_one_unfinished_job_per_key(engine: Engine) -> None:
    jobs = _jobs(Store(engine), "n")
    jobs.register("test.keyed", lambda _job, _work: None)
    assert jobs.enqueue("test.keyed", {}, key="release:1:step") is not None
    assert jobs.enqueue("test.keyed", {}, key="release:1:step") is None


# -- real server processes --------------------------------------------------------------


def _cluster(server: Server) -> dict[str, Any]:
    with server.client() as api:
        found: dict[str, Any] = api.get("/api/v1/cluster").json()
        return found


def _job_row(engine: Engine, job_id: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(t.jobs).where(t.jobs.c.id == job_id)).one()


def test_two_leaders_at_once_on_postgresql_apply_a_job_once() -> None:
    """Force two leaders: the leader's lock session is killed while its job is mid-way.

    A test connection holds the environment's row, so the leader's job blocks
    inside its effect; then the leader's advisory-lock session is terminated,
    the other node takes the lead and re-claims the job, and the row is let go.
    Both nodes now try to write the job's effect; exactly one succeeds.
    """
    with postgres_database() as url:
        nodes = [start_server(url, None, True, "--worker-interval", "0.1")]
        nodes.append(start_server(url, None, False, "--worker-interval", "0.1"))
        engine = make_engine(url)
        holder = engine.connect()
        try:
            assert wait_for(lambda: sum(_cluster(n)["leading"] for n in nodes) == 1)
            first = next(n for n in nodes if _cluster(n)["leading"])
            first_node = _cluster(first)["node"]
            store = Store(engine)
            environment = access_service(engine).environment_of("shop", "production")

            # made first (making it holds the environment's row too), due once the row is held
            schedule_id, job_id = _schedule(store, "once", seconds=3)
            blocker = holder.begin()
            holder.execute(
                select(t.environments.c.id)
                .where(t.environments.c.id == environment)
                .with_for_update()
            )
            assert _job_row(engine, job_id).owner is None  # not yet claimed: it was not due
            assert wait_for(lambda: _job_row(engine, job_id).owner == first_node)
            first_epoch = _job_row(engine, job_id).epoch

            with engine.connect() as conn:  # the leader's lock session dies under it
                killed = conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_locks "
                        "WHERE locktype = 'advisory' AND granted "
                        "AND database = (SELECT oid FROM pg_database "
                        "WHERE datname = current_database())"
                    )
                ).all()
            assert killed == [(True,)]
            assert wait_for(
                lambda: (
                    _job_row(engine, job_id).epoch > first_epoch
                    and _job_row(engine, job_id).owner != first_node
                )
            )  # the new leader has re-claimed the job while the old one is still in it
            blocker.rollback()  # both now race to write the effect

            assert wait_for(lambda: _job_row(engine, job_id).state == "done")
            assert _applied(engine, schedule_id) == ["flag.create", "schedule.applied"]
            with engine.connect() as conn:
                versions = conn.execute(select(t.environments.c.version)).scalars().all()
            assert sorted(versions) == [0, 1]  # production moved once; staging not at all
            with first.client() as api:  # the fenced attempt is counted where it happened
                assert wait_for(lambda: "unveil_jobs_fenced_total 1.0" in api.get("/metrics").text)
        finally:
            holder.close()
            engine.dispose()
            for node in nodes:
                stop(node)


def test_a_second_process_on_one_sqlite_folder_follows_and_takes_over(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'unveil.db'}"
    nodes = [start_server(url, None, True, "--worker-interval", "0.1")]
    nodes.append(start_server(url, None, False, "--worker-interval", "0.1"))
    engine = make_engine(url)
    try:
        assert wait_for(lambda: sum(_cluster(n)["leading"] for n in nodes) == 1)
        assert sum(_cluster(n)["leading"] for n in nodes) == 1  # one, not two
        leader = next(n for n in nodes if _cluster(n)["leading"])
        follower = next(n for n in nodes if n is not leader)
        leader_node, follower_node = _cluster(leader)["node"], _cluster(follower)["node"]
        store = Store(engine)
        made = [_schedule(store, f"f{i}") for i in range(5)]
        ids = [job_id for _, job_id in made]
        assert wait_for(lambda: all(_job_row(engine, i).state == "done" for i in ids))
        assert {_job_row(engine, i).owner for i in ids} == {leader_node}
        assert all(_applied(engine, s) == ["flag.create", "schedule.applied"] for s, _ in made)

        leader.kill()
        assert wait_for(lambda: _cluster(follower)["leading"])
        _, later = _schedule(store, "after")
        assert wait_for(lambda: _job_row(engine, later).state == "done")
        assert _job_row(engine, later).owner == follower_node
        listed = {n["node"]: n["leading"] for n in _cluster(follower)["nodes"]}
        assert listed[follower_node] is True  # recorded before its first job ran
        assert listed.get(leader_node) is not True  # and the dead one no longer leads
    finally:
        engine.dispose()
        for node in nodes:
            stop(node)


def test_recurring_clean_up_runs_as_a_job_on_the_leader(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'unveil.db'}"
    server = start_server(url, None, True, "--worker-interval", "0.1")
    engine = make_engine(url)
    try:

        def recurring() -> set[str]:
            with engine.connect() as conn:
                rows = conn.execute(select(t.jobs.c.kind, t.jobs.c.attempts)).all()
            return {r.kind for r in rows if r.attempts >= 1}

        assert wait_for(lambda: {"nodes.forget_stale", "outbox.prune"} <= recurring())
    finally:
        engine.dispose()
        stop(server)


def test_a_new_leader_takes_jobs_in_order_even_while_an_old_one_holds_the_first() -> None:
    """The old leader is still in its last transaction on the earliest job; the new
    leader must wait for it, not skip it and apply the later jobs first."""
    from datetime import UTC, datetime

    with postgres_database() as url:
        upgrade(url)
        engine = make_engine(url)
        try:
            store = Store(engine)
            access_service(engine).ensure_environment("shop", "production")
            ids = [_schedule(store, f"o{i}")[1] for i in range(3)]
            old = _epoch(store, "old")
            with store.unit_of_work() as work:
                work.jobs.claim(datetime.now(UTC), "old", old, limit=1)  # the first job
            holder = engine.connect()
            held = holder.begin()
            holder.execute(select(t.jobs).where(t.jobs.c.id == ids[0]).with_for_update())
            new = _epoch(store, "new")
            claimed: list[int] = []

            def claim() -> None:
                with store.unit_of_work() as work:
                    claimed.extend(j.id for j in work.jobs.claim(datetime.now(UTC), "new", new))

            thread = threading.Thread(target=claim)
            thread.start()
            thread.join(timeout=1.0)
            assert thread.is_alive()  # it waits for the held row rather than skipping it
            held.rollback()
            holder.close()
            thread.join(timeout=30)
            assert claimed == ids  # the earliest first, then the rest, in order
        finally:
            engine.dispose()


def test_one_link_reconnects_for_both_change_notices_and_leadership() -> None:
    """Issue 9, 1: change notification and leadership share one connection and one
    reconnect loop. Killing the session that holds the advisory lock also ends the
    LISTEN (the link resyncs with ``on_change(None)``); the loop comes back for both:
    it leads again under a new epoch and hears notices again."""
    from unveil.store.link import PostgresLink
    from unveil.store.unit import CHANNEL

    with postgres_database() as url:
        upgrade(url)
        engine = make_engine(url)
        heard: list[int | None] = []
        link = PostgresLink(Store(engine), "n", heard.append, interval=0.1)

        def notify(payload: str) -> None:
            with engine.begin() as conn:
                conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": CHANNEL, "p": payload})

        link.start()
        try:
            assert wait_for(lambda: link.leading.is_set() and link.epoch is not None)
            first = link.epoch
            assert first is not None
            notify("7")
            assert wait_for(lambda: 7 in heard)
            heard.clear()

            with engine.connect() as conn:  # the session holding the lock, and only it
                killed = conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_locks "
                        "WHERE locktype = 'advisory' AND granted "
                        "AND database = (SELECT oid FROM pg_database "
                        "WHERE datname = current_database())"
                    )
                ).all()
            assert killed == [(True,)]
            # the LISTEN was on that session: the loop reconnects and checks everything
            assert wait_for(lambda: None in heard)
            assert wait_for(lambda: link.epoch is not None and link.epoch > first)
            assert link.leading.is_set()
            notify("8")  # and notices are heard again on the new connection
            assert wait_for(lambda: 8 in heard)
        finally:
            link.stop()
            engine.dispose()
