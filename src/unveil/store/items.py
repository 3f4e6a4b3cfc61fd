"""Flags and segments of environments: a key, its flags-file form, a version."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Connection, Table, delete, insert, select, update

from unveil.store import tables as t

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

    def remove(self, environment_id: int, key: str) -> None:
        table = self._table
        self._conn.execute(
            delete(table).where(table.c.environment_id == environment_id, table.c.key == key)
        )
