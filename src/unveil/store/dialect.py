"""The few places where SQLite and PostgreSQL differ, said once."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Select, Table
from sqlalchemy.dialects import postgresql, sqlite

__all__ = ["insert_or_ignore", "insert_or_update", "is_postgresql", "locked"]


def is_postgresql(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def insert_or_ignore(conn: Connection, table: Table, values: dict[str, Any]) -> bool:
    """Insert unless a row with the same unique key exists; True if this call inserted it."""
    insert = postgresql.insert if is_postgresql(conn) else sqlite.insert
    first = next(iter(table.primary_key.columns))
    # RETURNING, not rowcount: psycopg's rowcount says 1 for a row it did not insert
    statement = insert(table).values(**values).on_conflict_do_nothing().returning(first)
    return conn.execute(statement).first() is not None


def insert_or_update(
    conn: Connection,
    table: Table,
    values: dict[str, Any],
    keys: list[str],
    update: dict[str, Any],
) -> None:
    """Insert, or update the row that has the same ``keys`` with ``update``."""
    insert = postgresql.insert if is_postgresql(conn) else sqlite.insert
    statement = insert(table).values(**values)
    resolved = {k: (v(statement.excluded) if callable(v) else v) for k, v in update.items()}
    conn.execute(statement.on_conflict_do_update(index_elements=keys, set_=resolved))


def locked(conn: Connection, query: Select[Any], key_share: bool = True) -> Select[Any]:
    """The query with its rows locked for the transaction: every row it reads.

    On PostgreSQL ``FOR NO KEY UPDATE`` by default: it serialises writers of
    the row but does not conflict with the KEY SHARE lock a foreign key takes,
    so rows that merely refer to an environment never wait for its writers.
    SQLite needs nothing: a write transaction holds the whole database.

    Every row the query reads is locked, never only some (there is no ``of``): a
    lock that waited for another writer's commit reads again only the rows it
    locks, so a row joined without a lock would be read as it was before that
    commit (tests/test_held_item.py: two writers with one If-Match).
    """
    if is_postgresql(conn):
        return query.with_for_update(key_share=key_share)
    return query
