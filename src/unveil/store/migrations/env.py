"""Alembic's entry: run migrations against the configured URL."""

from __future__ import annotations

from alembic import context

from unveil.store.database import make_engine
from unveil.store.tables import metadata

config = context.config
engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
