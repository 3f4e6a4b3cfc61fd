"""A server write is checked in proportion to the change, and as strictly as a whole reading.

``FlagService`` checks a flag or segment write as a patch against the
environment's validated flags it holds at the version read inside the
write's transaction (``unveil.service.documents``), and reads the whole
document only where that check cannot tell. These hold it to the whole
reading: on random environments and random single changes (new, changed and
removed flags and segments, broken bodies, unknown names, wrong variants,
cycles) a write is accepted with the same canonical entry, or refused with
the same problems, as ``parse_document`` of the whole changed document; and
the document the node keeps afterwards is the one a whole reading makes.
Other nodes' writes are caught up from the rows written since, and a rolled
back write leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event

from tests.server_process import migrated_engine
from tests.strategies import documents
from tests.test_incremental import patches
from unveil.core import InvalidDocument, Ruleset, document_to_data, parse_document
from unveil.core.patch import apply_patch
from unveil.service.access import AccessService
from unveil.service.errors import Invalid, NotFound
from unveil.service.flags import Change, FlagService
from unveil.store.unit import Store

WHO = Change("test")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FlagService, int]]:
    with migrated_engine("sqlite", tmp_path_factory.mktemp("write")) as engine:
        store = Store(engine)
        env_id = AccessService(store).ensure_environment("shop", "production")
        yield FlagService(store), env_id


def _one_change(data: st.DataObject, base: dict[str, Any]) -> tuple[str, str, Any]:
    patch = data.draw(patches(base))
    changes = [(part, k, v) for part in ("flags", "segments") for k, v in patch[part].items()]
    changes = [(p, k, v) for p, k, v in changes if v is not None or k in base[p]]
    if not changes:  # removing what is not there is a 404, not a validation
        return "flags", "flag-0", None
    return data.draw(st.sampled_from(changes))


def _write(flags: FlagService, part: Any, key: str, body: Any) -> Any:
    """The server's write; the canonical entry written, or the problems it was refused with."""
    current = flags.list_items(part, "shop", "production")
    version = next((item.version for item in current if item.key == key), None)
    try:
        if body is None:
            flags.delete_item(part, "shop", "production", key, WHO, version)
            return None
        return flags.put_item(part, "shop", "production", key, body, WHO, version).data
    except Invalid as exc:
        return exc.problems


def _whole(base: dict[str, Any], part: str, key: str, body: Any) -> tuple[Any, Any]:
    """The whole-document check: (entry written or None, new document) or (problems, None)."""
    changed = apply_patch(base, 1, {"previous": 1, part: {key: body}})
    try:
        document = parse_document(changed)
    except InvalidDocument as exc:
        return exc.problems, None
    entry = None if body is None else document_to_data(document).get(part, {}).get(key)
    return entry, document


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_write_is_accepted_and_refused_as_the_whole_document_check_would(
    node: tuple[FlagService, int], data: st.DataObject
) -> None:
    flags, env_id = node
    base = {"segments": {}, **document_to_data(parse_document(data.draw(documents())))}
    flags.apply_document("shop", "production", base, WHO)
    held = flags.documents.known(env_id)
    assert held is not None
    assert held.version == flags.version_of(env_id)
    part, key, body = _one_change(data, base)
    expected, whole = _whole(base, part, key, body)
    reads = flags.documents.whole_reads
    incremental = held.ruleset.patched({"flags": {}, "segments": {}, part: {key: body}})

    assert _write(flags, part, key, body) == expected
    if whole is None:
        assert incremental is None  # refused: only the whole reading names problems
        return
    assert flags.documents.whole_reads == reads  # the node never read the environment whole
    kept = flags.documents.known(env_id)
    assert kept is not None
    assert kept.version == flags.version_of(env_id)
    assert kept.ruleset.document == whole
    assert flags.snapshot("shop", "production").document == document_to_data(whole)


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[tuple[FlagService, FlagService, int]]:
    with migrated_engine("sqlite", tmp_path) as engine:
        store = Store(engine)
        env_id = AccessService(store).ensure_environment("shop", "production")
        yield FlagService(store), FlagService(Store(engine)), env_id


BASE = {
    "segments": {"beta": {"include": ["ann"]}, "old": {"include": ["bob"]}},
    "flags": {
        "a": {"default": "on"},
        "b": {"rules": [{"when": [{"segment": "beta"}], "serve": "on"}], "default": "off"},
        "c": {"prerequisites": [{"flag": "a", "variants": ["on"]}], "default": "on"},
    },
}


def test_another_nodes_writes_are_caught_up_from_the_rows_written_since(
    two_nodes: tuple[FlagService, FlagService, int],
) -> None:
    one, other, env_id = two_nodes
    one.apply_document("shop", "production", BASE, WHO)
    assert other.loaded(env_id).version == one.version_of(env_id)
    reads = other.documents.whole_reads
    a = one.get_item("flags", "shop", "production", "a")
    one.put_item("flags", "shop", "production", "a", {"default": "off"}, WHO, a.version)
    one.put_item("flags", "shop", "production", "d", {"default": "on"}, WHO, None)
    old = one.get_item("segments", "shop", "production", "old")
    one.delete_item("segments", "shop", "production", "old", WHO, old.version)

    caught = other.loaded(env_id)
    assert other.documents.whole_reads == reads  # caught up, not read whole
    assert caught.version == one.version_of(env_id)
    whole = parse_document(one.snapshot("shop", "production").document)
    assert caught.ruleset.document == whole
    assert caught.ruleset.value("a", {"key": "x"}) is False
    changes = other.documents.changes(env_id, caught.version - 3, caught.version)
    canonical = {k: one.get_item("flags", "shop", "production", k).data for k in ("a", "d")}
    assert changes == {"flags": canonical, "segments": {"old": None}}
    # and a write on the other node checks against what it caught up with
    c = other.get_item("flags", "shop", "production", "c")
    with pytest.raises(Invalid) as refused:  # a prerequisite on a flag that is not there
        other.put_item(
            "flags",
            "shop",
            "production",
            "c",
            {"prerequisites": [{"flag": "old-gone", "variants": ["on"]}], "default": "on"},
            WHO,
            c.version,
        )
    assert [p.path for p in refused.value.problems] == ["flags.c.prerequisites[0].flag"]
    assert other.documents.whole_reads == reads


ON = {"default": "on"}
NEEDS_E = {"prerequisites": [{"flag": "e", "variants": ["on"]}], "default": "on"}


def test_a_rolled_back_write_leaves_nothing_in_memory(
    two_nodes: tuple[FlagService, FlagService, int],
) -> None:
    flags, _, env_id = two_nodes
    flags.apply_document("shop", "production", BASE, WHO)
    before = flags.documents.known(env_id)
    assert before is not None

    class Boom(Exception):
        pass

    def two_writes_then_fail() -> None:
        with flags.store.unit_of_work() as work:
            flags.put_item("flags", "shop", "production", "e", ON, WHO, None, within=work)
            with pytest.raises(NotFound):  # another connection does not see it yet
                flags.get_item("flags", "shop", "production", "e")
            assert "e" not in flags.loaded(env_id).ruleset  # nor does the node's snapshot
            # the same transaction sees its own change: a second write builds on the first
            flags.put_item("flags", "shop", "production", "f", NEEDS_E, WHO, None, within=work)
            raise Boom

    with pytest.raises(Boom):
        two_writes_then_fail()
    assert flags.documents.known(env_id) is before
    assert "e" not in flags.loaded(env_id).ruleset
    # the next write at the same version is checked against the committed flags
    with pytest.raises(Invalid):
        flags.put_item("flags", "shop", "production", "g", NEEDS_E, WHO, None)
    written = flags.put_item("flags", "shop", "production", "e", {"default": "off"}, WHO, None)
    kept = flags.documents.known(env_id)
    assert kept is not None
    assert kept.version == written.version
    assert (
        kept.ruleset.document
        == Ruleset.from_data(flags.snapshot("shop", "production").document).document
    )


def test_large_changes_are_not_kept_twice_and_the_snapshot_is_rebuilt_whole(
    two_nodes: tuple[FlagService, FlagService, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    from unveil.server.hub import Hub
    from unveil.service import documents

    monkeypatch.setattr(documents, "HISTORY_ENTRIES", 3)
    flags, _, env_id = two_nodes
    hub = Hub(flags, check_interval=3600)
    flags.store.after_commit.append(hub.changed_here)
    flags.apply_document("shop", "production", BASE, WHO)
    first = hub.ready(env_id)
    many = {"flags": {f"x{i}": {"default": "on"} for i in range(5)}, "segments": {}}
    flags.apply_document("shop", "production", many, WHO)  # ten entries changed
    version = flags.version_of(env_id)
    assert flags.documents.changes(env_id, first.version, version) is None
    served = hub.ready(env_id)
    assert served.version == version
    whole = Hub(FlagService(flags.store), check_interval=3600).ready(env_id)
    assert served.body == whole.body
    flags.put_item("flags", "shop", "production", "x0", {"default": "off"}, WHO, version)
    assert flags.documents.changes(env_id, version, version + 1) is not None  # small: kept


def test_a_refused_write_reads_no_more_rows_than_an_accepted_one(tmp_path: Path) -> None:
    """A refusal used to read and check every row of the environment again, holding its
    write lock: a second per refusal at ten thousand flags, and every writer (on SQLite,
    of every environment) waited. It now reads what an accepted write reads."""
    with migrated_engine("sqlite", tmp_path) as engine:
        store = Store(engine)
        AccessService(store).ensure_environment("shop", "production")
        flags = FlagService(store)
        flags.apply_document(
            "shop",
            "production",
            {"flags": {f"f{i}": {"default": "off"} for i in range(200)}},
            WHO,
        )
        seen: list[str] = []

        def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            seen.append(statement)

        event.listen(engine, "before_cursor_execute", note)
        try:
            flags.put_item("flags", "shop", "production", "new", {"default": "on"}, WHO, None)
            accepted, seen[:] = list(seen), []
            refused = {
                "default": "off",
                "rules": [{"when": [{"segment": "nowhere"}], "serve": "on"}],
            }
            with pytest.raises(Invalid) as caught:
                flags.put_item("flags", "shop", "production", "bad", refused, WHO, None)
        finally:
            event.remove(engine, "before_cursor_execute", note)
    assert [p.message for p in caught.value.problems] == ["unknown segment 'nowhere'"]

    def whole_part_reads(statements: list[str]) -> list[str]:
        """Reads of a part's rows that do not pick one entry by its key."""
        parts = ("FROM flags", "FROM segments", "JOIN flags", "JOIN segments")
        reads = [x for x in statements if x.startswith("SELECT") and any(p in x for p in parts)]
        return [
            x for x in reads if '"key" = ?' not in x.split("FROM", 1)[1].split("JOIN projects")[-1]
        ]

    assert whole_part_reads(accepted) == []  # the measure sees what a write reads
    assert whole_part_reads(seen) == [], seen


def test_every_node_names_a_refusals_problems_in_one_order(tmp_path: Path) -> None:
    """A node keeps its keys in the order it learnt them; another, started later, reads
    them in key order from the rows. A refusal checked against either names its problems
    in key order, as a reading of the rows would."""
    versions = {"kind": "string", "variants": {"x": "x", "y": "y"}, "off_variant": "x"}
    needs = {"prerequisites": [{"flag": "p", "variants": ["y"]}], "default": "on"}
    with migrated_engine("sqlite", tmp_path) as engine:
        AccessService(Store(engine)).ensure_environment("shop", "production")
        one = FlagService(Store(engine))
        p = one.put_item(
            "flags", "shop", "production", "p", {**versions, "default": "y"}, WHO, None
        )
        one.put_item("flags", "shop", "production", "a", needs, WHO, None)
        one.put_item("flags", "shop", "production", "0", needs, WHO, None)
        two = FlagService(Store(engine))
        only_x = {"kind": "string", "variants": {"x": "x"}, "off_variant": "x", "default": "x"}
        named = []
        for node in (one, two):
            with pytest.raises(Invalid) as refused:
                node.put_item("flags", "shop", "production", "p", only_x, WHO, p.version)
            named.append([problem.path for problem in refused.value.problems])
    assert named[0] == named[1]
    assert named[0] == sorted(named[0])
    assert len(named[0]) == 2
