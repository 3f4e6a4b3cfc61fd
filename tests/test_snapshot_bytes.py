"""The snapshot a node serves, kept as bytes and moved by each change.

A snapshot is one fragment of bytes per flag and segment
(``unveil.server.snapshots``); a change re-encodes only what it changed.
These check that the body moved in place is, byte for byte, the body made
from the whole document (so the ETag is the same on every node for one
version), that the patch holds exactly the entries that changed, and that
the gzip form served is the body compressed.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.server_process import ADMIN_TOKEN, database, sdk_key, start_server, stop
from tests.strategies import documents
from tests.test_incremental import patches
from unveil.core import Ruleset, document_to_data
from unveil.core.incremental import entry_data
from unveil.server.etags import accepts_gzip
from unveil.server.hub import Hub
from unveil.server.snapshots import CachedSnapshot
from unveil.service.access import AccessService
from unveil.service.documents import Loaded
from unveil.service.flags import Change, FlagService
from unveil.store.database import make_engine, upgrade
from unveil.store.unit import Store


def _expected_body(document: Any, revision: int) -> bytes:
    """What the body must be: the canonical document, entries in key order, and its revision."""
    data = document_to_data(document)
    out: dict[str, Any] = {"version": data["version"]}
    if data.get("segments"):
        out["segments"] = dict(sorted(data["segments"].items()))
    out["flags"] = dict(sorted(data["flags"].items()))
    return json.dumps({**out, "revision": revision}, separators=(",", ":")).encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_snapshot_moved_by_a_change_is_the_one_made_whole(data: st.DataObject) -> None:
    base = data.draw(documents())
    patch = data.draw(patches(base))
    before = Ruleset.from_data(base)
    after = before.patched(patch)
    if after is None:
        return  # refused (or read whole by the node): no snapshot moves
    changes: dict[str, dict[str, Any]] = {"flags": {}, "segments": {}}
    for part in ("flags", "segments"):
        held = getattr(before.document, part)
        for key, body in patch[part].items():
            if body is not None:
                changes[part][key] = entry_data(after.document, part, key)
            elif key in held:
                changes[part][key] = None
    old = CachedSnapshot.whole(Loaded(1, 7, before))
    assert old.body == _expected_body(before.document, 7)
    moved, sections = old.moved(Loaded(1, 8, after), changes)
    whole = CachedSnapshot.whole(Loaded(1, 8, after))
    assert moved.body == whole.body == _expected_body(after.document, 8)
    assert moved.etag == whole.etag != old.etag
    assert gzip.decompress(moved.gzipped) == moved.body
    # the patch is exactly what differs, and the same when the node had to rebuild whole
    old_data, new_data = document_to_data(before.document), document_to_data(after.document)
    for part in ("flags", "segments"):
        was, now = old_data.get(part, {}), new_data.get(part, {})
        differing = {k: v for k, v in now.items() if was.get(k) != v}
        differing.update((k, None) for k in was if k not in now)
        assert sections[part] == differing
    rebuilt, rebuilt_sections = old.moved(Loaded(1, 8, after), None)
    assert rebuilt.body == whole.body
    assert rebuilt_sections == sections


@pytest.mark.parametrize(
    ("header", "taken"),
    [
        (None, False),
        ("", False),
        ("gzip", True),
        ("br, gzip;q=0.5", True),
        ("GZIP", True),
        ("deflate, br", False),
        ("gzip;q=0", False),
        ("gzip;q=0, *", False),
        ("*", True),
        ("*;q=0", False),
        ("identity", False),
        ("gzip;q=nope", False),
        ("x-gzip", True),
    ],
)
def test_accept_encoding_is_read_as_rfc_9110_says(header: str | None, taken: bool) -> None:
    assert accepts_gzip(header) is taken


def test_a_node_that_wrote_and_a_node_that_read_whole_serve_the_same_bytes(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'unveil.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        store = Store(engine)
        env_id = AccessService(store).ensure_environment("shop", "production")
        writer = FlagService(store)
        hub = Hub(writer, check_interval=3600)
        store.after_commit.append(hub.changed_here)
        who = Change("t")
        writer.put_item("flags", "shop", "production", "m", {"default": "on"}, who, None)
        first = hub.ready(env_id)
        writer.put_item("flags", "shop", "production", "b", {"default": "off"}, who, None)
        writer.put_item("segments", "shop", "production", "s", {"include": ["x"]}, who, None)
        m = writer.get_item("flags", "shop", "production", "m")
        writer.delete_item("flags", "shop", "production", "m", who, m.version)
        reads = writer.documents.whole_reads
        moved = hub.ready(env_id)
        assert writer.documents.whole_reads == reads  # moved by the writes, not read again
        assert moved.version == first.version + 3
        fresh = Hub(FlagService(Store(engine)), check_interval=3600).ready(env_id)
        assert moved.body == fresh.body
        assert moved.etag == fresh.etag
        served = json.loads(moved.body)
        assert (list(served["flags"]), list(served["segments"])) == (["b"], ["s"])
    finally:
        engine.dispose()


def test_the_snapshot_route_serves_the_prepared_forms(tmp_path: Path) -> None:
    with database("sqlite", tmp_path) as url:
        server = start_server(url)
        try:
            admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            flags = f"{server.url}/api/v1/projects/shop/environments/production/flags"
            many = {"description": "x" * 2000, "default": "on"}
            assert httpx.put(f"{flags}/f", json=many, headers=admin).status_code == 201
            auth = {"Authorization": f"Bearer {sdk_key(url)}"}
            target = f"{server.url}/sdk/v1/snapshot"
            same = ("content-type", "content-length", "etag", "vary", "content-encoding")
            with httpx.Client() as client:
                # the first of each is answered by the route, which prepares the forms;
                # the next by the shortcut, from the prepared bytes: the same answer
                for encoding in ("identity", "gzip"):
                    asked = {**auth, "Accept-Encoding": encoding}
                    by_route, by_shortcut = client.get(target, headers=asked), None
                    by_shortcut = client.get(target, headers=asked)
                    assert by_route.status_code == by_shortcut.status_code == 200
                    assert by_route.content == by_shortcut.content
                    for name in same:
                        assert by_route.headers.get(name) == by_shortcut.headers.get(name), name
                plain = client.get(target, headers={**auth, "Accept-Encoding": "identity"})
                assert "content-encoding" not in plain.headers
                packed = client.get(target, headers={**auth, "Accept-Encoding": "gzip"})
                assert packed.headers["content-encoding"] == "gzip"
                assert packed.headers["etag"] == plain.headers["etag"]
                assert "Accept-Encoding" in packed.headers["vary"]
                assert packed.content == plain.content  # httpx decoded it
                assert json.loads(plain.content)["flags"]["f"]["description"] == "x" * 2000
                etag = plain.headers["etag"]
                again = client.get(target, headers={**auth, "If-None-Match": f'W/{etag}, "x"'})
                assert again.status_code == 304
                assert again.headers["etag"] == etag
                # a 304 carries the Vary its 200 would have (RFC 9110, 15.4.5), so that
                # a cache between keeps the two forms apart when it revalidates
                assert again.headers.get("vary") == "Accept-Encoding"
                assert again.content == b""
                # what the shortcut does not answer, the route does, with its checks
                assert client.get(target).status_code == 401  # no key: no snapshot
                assert client.get(target, headers=admin).status_code == 403  # not an SDK key
                odd = client.get(target, params={"x": "\x01"}, headers=auth)
                assert odd.status_code == 422  # parameters are checked as on every route
                assert client.post(target, headers=auth).status_code == 405
                # a write moves the snapshot: a new tag, and the old one no longer matches
                assert httpx.put(f"{flags}/g", json=many, headers=admin).status_code == 201
                moved = client.get(target, headers={**auth, "If-None-Match": etag})
                assert moved.status_code == 200
                assert moved.headers["etag"] != etag
                assert "g" in json.loads(moved.content)["flags"]
        finally:
            stop(server)
