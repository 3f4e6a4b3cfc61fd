"""The first schema: projects, environments, flags, segments, audit, tokens.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

from unveil.store.tables import metadata

revision = "0001"
down_revision = None


def upgrade() -> None:
    # The first revision creates the tables exactly as tables.py describes them;
    # later revisions change them step by step.
    metadata.create_all(op.get_bind())
