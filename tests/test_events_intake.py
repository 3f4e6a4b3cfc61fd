"""The events intake under floods and bad input, against real server processes.

Telemetry must never cost the flags: a flag write answers quickly however
many events arrive, memory stays bounded (the intake says 429 instead), a
202 is a promise that the events will be counted (even across a SIGTERM
under load), and one event the database refuses spoils nothing else.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.event_flood import EVENTS, flood, known_batch, rss_bytes, unique_batch, wait_for
from tests.server_process import Server, database, postgres_database, sdk_key, start_server, stop

FLAGS = "/api/v1/projects/shop/environments/production/flags"
COUNTS = "/api/v1/projects/shop/environments/production/events"
JSON = {"Content-Type": "application/json"}


def _counts(server: Server, flag: str | None = None) -> list[dict[str, Any]]:
    with server.client() as api:
        params = {"flag": flag} if flag else None
        return list(api.get(COUNTS, params=params).json()["counts"])


def _exposures(server: Server) -> int:
    return sum(c["count"] for c in _counts(server) if c["metric"] == "$exposure")


def test_a_flag_write_answers_within_two_seconds_during_an_events_flood(server: Server) -> None:
    """Issue 10.2: the flush held the flags' write lock (SQLite) or a lock on the
    environment's row through a foreign key (PostgreSQL) for minutes."""
    key = sdk_key(server.database_url)
    slowest = 0.0
    with server.client() as api, flood(server, key, senders=4, batch=unique_batch):
        time.sleep(4)  # let the flood build up what the old intake wrote in one transaction
        for i in range(8):
            started = time.monotonic()
            try:
                written = api.put(f"{FLAGS}/kill-{i}", json={"default": "off"}, timeout=30)
            except httpx.ReadTimeout:
                pytest.fail("a flag write waited more than 30 s behind events")
            slowest = max(slowest, time.monotonic() - started)
            assert written.status_code == 201
    assert slowest < 2.0, f"a flag write waited {slowest:.1f} s behind events"


def test_memory_stays_bounded_under_a_flood_and_the_intake_says_429(tmp_path: Path) -> None:
    """Issue 10.3: the queue was bounded in batches, so a flood grew memory by a gigabyte."""
    with database("sqlite", tmp_path) as url:
        server = start_server(url)
        try:
            key = sdk_key(url)
            with server.client(key) as sdk:  # warm up: every path has run once
                warm = sdk.post(EVENTS, content=known_batch(0, 0), headers=JSON)
                assert warm.status_code == 202
            before = rss_bytes(server.process.pid)
            peak = before
            with flood(server, key, senders=4, batch=unique_batch) as seen:
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    peak = max(peak, rss_bytes(server.process.pid))
                    time.sleep(0.2)  # sampling memory, not waiting for anything
            growth = peak - before
            assert seen.statuses[429] > 0, f"no 429 in {dict(seen.statuses)}"
            assert seen.statuses[500] == 0
            assert growth < 150 * 2**20, f"memory grew by {growth / 2**20:.0f} MB"
            # what was acknowledged is counted (429s are not)
            assert wait_for(lambda: _exposures(server) == seen.acknowledged + 1000, 60)
        finally:
            stop(server)


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
@pytest.mark.parametrize("names", ["known", "unique"])
def test_a_sigterm_under_load_writes_every_acknowledged_event(
    kind: str, names: str, tmp_path: Path
) -> None:
    """Issue 10.3: a 202 means the events will be counted, even when the server stops
    in the middle of a flood (of a few names, or of new names all the time: the old
    intake then had so much to write that it gave up after 30 s)."""
    batch = known_batch if names == "known" else unique_batch
    with database(kind, tmp_path) as url:
        server = start_server(url)
        key = sdk_key(url)
        try:
            with flood(server, key, senders=4, batch=batch, stop_on_error=True) as seen:
                time.sleep(3)  # under load: requests in flight, counts not yet written
                server.process.send_signal(signal.SIGTERM)
                server.process.wait(timeout=120)  # it stops by itself, however busy
        finally:
            stop(server)
        acknowledged = seen.acknowledged
        assert acknowledged > 0
        again = start_server(url, seed=False)
        try:
            assert _exposures(again) == acknowledged
        finally:
            stop(again)


# NUL and lone surrogates no body may carry anywhere: the one JSON decoder refuses them
# (400, naming the field) before the intake sees the batch; the rest the intake names (422).
BAD_TEXT = [
    ("flag", "a\x00b", "NUL character"),
    ("flag", "tab\there", "control characters"),
    ("variant", "line\nbreak", "control characters"),
    ("flag", "\ud800", "lone surrogate"),
    ("flag", "x" * 201, "1 to 200 characters"),
]
_DECODER_REFUSES = {"NUL character", "lone surrogate"}


@pytest.mark.parametrize(("field", "value", "message"), BAD_TEXT)
def test_invalid_text_is_refused_at_the_intake_and_counting_goes_on(
    field: str, value: str, message: str, tmp_path: Path
) -> None:
    """Issue 10.4: a NUL in a flag name was taken (202) and then failed every flush on
    PostgreSQL until restart."""
    with postgres_database() as url:
        server = start_server(url)
        try:
            key = sdk_key(url)
            event = {"kind": "exposure", "flag": "fine", "variant": "on", field: value}
            with server.client(key) as sdk:
                # as JSON escapes: a lone surrogate cannot be sent as UTF-8
                body = json.dumps({"events": [event]}).encode()
                refused = sdk.post(EVENTS, content=body, headers=JSON)
                by_decoder = message in _DECODER_REFUSES
                assert refused.status_code == (400 if by_decoder else 422)
                problems = refused.json()["problems"]
                path = f"events[0].{field}"
                assert [p["path"] for p in problems] == [path]
                assert message in problems[0]["message"]
                good = {"kind": "exposure", "flag": "after", "variant": "on"}
                assert sdk.post(EVENTS, json={"events": [good]}).status_code == 202
            assert wait_for(lambda: len(_counts(server, "after")) == 1)
            assert _counts(server, "fine") == []  # nothing of the refused batch was taken
        finally:
            stop(server)


REFUSE_POISON = """
CREATE FUNCTION refuse_poison() RETURNS trigger AS $$
BEGIN
    IF NEW.flag = 'poison' THEN RAISE EXCEPTION 'this database refuses %', NEW.flag; END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE TRIGGER refuse_poison BEFORE INSERT OR UPDATE ON event_counts
    FOR EACH ROW EXECUTE FUNCTION refuse_poison();
"""


def test_a_row_the_database_refuses_spoils_neither_its_flush_nor_later_ones() -> None:
    """Issue 10.4: the failed flush kept every count and retried them all together,
    forever; now the refused row is dropped and counted, the others written."""
    import psycopg

    with postgres_database() as url:
        server = start_server(url)
        try:
            with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
                conn.execute(REFUSE_POISON)
            key = sdk_key(url)
            with server.client(key) as sdk:
                batch = [
                    {"kind": "exposure", "flag": "poison", "variant": "on"},
                    *({"kind": "exposure", "flag": f"good-{i}", "variant": "on"} for i in range(5)),
                ]
                assert sdk.post(EVENTS, json={"events": batch}).status_code == 202
                assert wait_for(lambda: len(_counts(server)) == 5)
                later = {"kind": "exposure", "flag": "later", "variant": "on"}
                assert sdk.post(EVENTS, json={"events": [later]}).status_code == 202
                assert wait_for(lambda: len(_counts(server, "later")) == 1)
            assert {c["flag"] for c in _counts(server)} == {f"good-{i}" for i in range(5)} | {
                "later"
            }
            metrics = httpx.get(f"{server.url}/metrics").text
            assert "unveil_events_rejected_rows_total 1.0" in metrics
        finally:
            stop(server)


def test_counts_an_older_version_kept_in_the_flags_database_move_to_their_own(
    tmp_path: Path,
) -> None:
    """On SQLite the counts now live in a file of their own; none are left behind."""
    from datetime import UTC, datetime

    from alembic import command
    from alembic.config import Config
    from sqlalchemy import func, insert, select, text

    from unveil.store import tables as t
    from unveil.store.database import _MIGRATIONS, make_engine, upgrade
    from unveil.store.events import EventCounts, events_path

    url = f"sqlite:///{tmp_path / 'unveil.db'}"
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    command.upgrade(config, "0002")  # as an older version left it
    engine = make_engine(url)
    minute = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    row = {"environment_id": 1, "minute": minute, "flag": "f", "variant": "on", "metric": "m"}
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO projects (id, key, name) VALUES (1, 'p', 'p')"))
        conn.execute(
            text("INSERT INTO environments (id, project_id, key, version) VALUES (1, 1, 'e', 0)")
        )
        conn.execute(insert(t.event_counts).values(**row, count=3, total=3.0))
    engine.dispose()
    upgrade(url)
    engine = make_engine(url)
    store = EventCounts(engine)
    try:
        store.add([((1, int(minute.timestamp()), "f", "on", "m"), 2, 2.0)])
        assert [(c["flag"], c["count"], c["total"]) for c in store.read(1)] == [("f", 5, 5.0)]
        assert events_path(tmp_path / "unveil.db").name == "unveil-events.db"
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(t.event_counts)).scalar() == 0
    finally:
        store.close()
        engine.dispose()


@pytest.mark.parametrize(
    ("at", "taken"),
    [
        ("9999-12-31T23:59:59Z", False),  # a broken clock: a window no judge will ever read
        ("1970-01-02T00:00:00Z", False),
        (time.time() + 3600, False),
        (time.time() - 3600, True),  # held through an hour's outage: still counted
    ],
)
def test_an_event_time_far_from_the_servers_is_refused(
    server: Server, at: Any, taken: bool
) -> None:
    with server.client(sdk_key(server.database_url)) as sdk:
        event = {"kind": "exposure", "flag": "timed", "variant": "on", "at": at}
        answer = sdk.post(EVENTS, json={"events": [event]})
    if taken:
        assert answer.status_code == 202
    else:
        assert answer.status_code == 422
        assert answer.json()["problems"][0]["path"] == "events[0].at"


def test_new_series_beyond_the_bound_wait_for_the_next_minute_per_environment(
    tmp_path: Path,
) -> None:
    """Issue 10.3: the intake is bounded by the cardinality of names per environment and
    minute too (``--events-series``): new names beyond it are 429 until the next minute,
    while names already seen are still taken, and another environment has its own bound."""

    def batch(prefix: str, size: int) -> dict[str, Any]:
        return {
            "events": [
                {"kind": "exposure", "flag": f"{prefix}-{i}", "variant": "on"} for i in range(size)
            ]
        }

    with database("sqlite", tmp_path) as url:
        server = start_server(url, None, True, "--events-series", "50")
        try:
            production, staging = sdk_key(url), sdk_key(url, "staging")
            if time.time() % 60 > 50:  # the bound is per minute: start well inside one
                time.sleep(61 - time.time() % 60)
            with server.client(production) as sdk:
                assert sdk.post(EVENTS, json=batch("seen", 40)).status_code == 202
                refused = sdk.post(EVENTS, json=batch("new", 20))  # 60 series: over 50
                assert refused.status_code == 429, refused.text
                assert 1 <= int(refused.headers["retry-after"]) <= 60
                assert "new series" in refused.json()["error"]
                assert sdk.post(EVENTS, json=batch("seen", 40)).status_code == 202
            with server.client(staging) as other:
                assert other.post(EVENTS, json=batch("new", 20)).status_code == 202
            assert wait_for(lambda: _exposures(server) == 80)
            assert {c["flag"] for c in _counts(server)} == {f"seen-{i}" for i in range(40)}
        finally:
            stop(server)
