"""Stale flags: a project's clean-up setting, and the flags found stale per environment.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"


def upgrade() -> None:
    op.create_table(
        "project_settings",
        sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id"), primary_key=True),
        sa.Column("stale_after_days", sa.Integer, nullable=False),
    )
    op.create_table(
        "stale_flags",
        sa.Column("environment_id", sa.Integer, sa.ForeignKey("environments.id"), nullable=False),
        sa.Column("flag", sa.String(200), nullable=False),
        sa.Column("reasons", sa.Text, nullable=False),
        sa.Column("found_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("environment_id", "flag"),
    )


def downgrade() -> None:
    op.drop_table("stale_flags")
    op.drop_table("project_settings")
