"""Flags and segments of environments: a key, its flags-file form, a version."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection, Table, and_, bindparam, delete, insert, select, update

from unveil.store import tables as t
from unveil.store.access import EnvironmentRepository, named_environment
from unveil.store.dialect import is_postgresql

__all__ = ["PARTS", "Item", "ItemRepository", "Part", "dumps"]

Part = Literal["flags", "segments"]
PARTS: dict[str, Table] = {"flags": t.flags, "segments": t.segments}


def dumps(value: Any) -> str:
    """Stored JSON: compact, and in the order given (rollouts follow variant order)."""
    return json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Item:
    """One flag or segment of one environment, as stored."""

    key: str
    data: dict[str, Any]
    version: int


class ItemRepository:
    """The flags (or segments) of environments, on one connection."""

    def __init__(self, conn: Connection, part: Part) -> None:
        self._conn = conn
        self._table = PARTS[part]

    def all(self, environment_id: int) -> list[Item]:
        table = self._table
        rows = self._conn.execute(
            select(table.c.key, table.c.data, table.c.version)
            .where(table.c.environment_id == environment_id)
            .order_by(table.c.key)
        )
        return [Item(r.key, json.loads(r.data), int(r.version)) for r in rows]

    def changed_since(self, environment_id: int, version: int) -> list[Item]:
        """The items written after the environment's ``version`` (an item's version is the
        environment's when it last changed): with ``keys``, what a node that holds the
        environment at ``version`` needs to catch up, without reading every row."""
        table = self._table
        rows = self._conn.execute(
            select(table.c.key, table.c.data, table.c.version).where(
                table.c.environment_id == environment_id, table.c.version > version
            )
        )
        return [Item(r.key, json.loads(r.data), int(r.version)) for r in rows]

    def keys(self, environment_id: int) -> set[str]:
        """The keys alone: what is gone since a version is what is no longer among them."""
        table = self._table
        rows = self._conn.execute(
            select(table.c.key).where(table.c.environment_id == environment_id)
        )
        return {r.key for r in rows}

    def get(self, environment_id: int, key: str) -> Item | None:
        table = self._table
        row = self._conn.execute(
            select(table.c.data, table.c.version).where(
                table.c.environment_id == environment_id, table.c.key == key
            )
        ).one_or_none()
        return None if row is None else Item(key, json.loads(row.data), int(row.version))

    def held(self, project: str, env: str, key: str) -> tuple[int, int, Item | None] | None:
        """The environment's id and version, its row held until the transaction ends, and
        its item ``key`` (None if it has none); None if there is no such environment.

        One statement for what every write of one item reads first, on SQLite
        (whose write transaction holds the whole database). On PostgreSQL the
        lock may wait for another writer's commit, and then only the locked
        row is read again: an item joined to it would be as it was before that
        commit (a stale If-Match would match, a flag just created would look
        absent). There the item is read after the row is held.
        """
        if is_postgresql(self._conn):
            found = EnvironmentRepository(self._conn).held(project, env)
            return None if found is None else (*found, self.get(found[0], key))
        table, environments = self._table, t.environments
        query = (
            select(
                environments.c.id,
                environments.c.version,
                table.c.data,
                table.c.version.label("item_version"),
            )
            .outerjoin(table, and_(table.c.environment_id == environments.c.id, table.c.key == key))
            .where(*named_environment(project, env))
        )
        row = self._conn.execute(query).one_or_none()  # SQLite: the transaction holds it all
        if row is None:
            return None
        item = None
        if row.data is not None:
            item = Item(key, json.loads(row.data), int(row.item_version))
        return int(row.id), int(row.version), item

    def put(self, environment_id: int, key: str, data: Any, version: int, exists: bool) -> None:
        """Write the item at ``version`` (the environment's version after this change)."""
        table = self._table
        if exists:
            self._conn.execute(
                update(table)
                .where(table.c.environment_id == environment_id, table.c.key == key)
                .values(data=dumps(data), version=version)
            )
        else:
            self._conn.execute(
                insert(table).values(
                    environment_id=environment_id, key=key, data=dumps(data), version=version
                )
            )

    def put_many(
        self, environment_id: int, entries: Mapping[str, Any], version: int, exists: bool
    ) -> None:
        """``put`` of many items in one statement executed for each (a whole document's)."""
        if not entries:
            return
        table = self._table
        rows: list[dict[str, Any]]
        if exists:
            statement: Any = (
                update(table)
                .where(
                    table.c.environment_id == environment_id,
                    table.c.key == bindparam("item_key"),
                )
                .values(data=bindparam("item_data"), version=version)
            )
            rows = [{"item_key": k, "item_data": dumps(v)} for k, v in entries.items()]
        else:
            statement = insert(table)
            rows = [
                {"environment_id": environment_id, "key": k, "data": dumps(v), "version": version}
                for k, v in entries.items()
            ]
        self._conn.execute(statement, rows)

    def remove_many(self, environment_id: int, keys: Collection[str]) -> None:
        """``remove`` of many items, one statement executed for each (no bound on a list)."""
        if keys:
            table = self._table
            self._conn.execute(
                delete(table).where(
                    table.c.environment_id == environment_id,
                    table.c.key == bindparam("item_key"),
                ),
                [{"item_key": k} for k in keys],
            )

    def remove(self, environment_id: int, key: str) -> None:
        table = self._table
        self._conn.execute(
            delete(table).where(table.c.environment_id == environment_id, table.c.key == key)
        )
