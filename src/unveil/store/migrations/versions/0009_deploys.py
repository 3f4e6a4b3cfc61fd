"""Deploys: services, their deploys per environment, and what a deploy rollback does.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    op.create_table(
        "services",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("project_id", sa.Integer, sa.ForeignKey("projects.id"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("project_id", "name"),
    )
    op.create_table(
        "deploys",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("environment_id", sa.Integer, sa.ForeignKey("environments.id"), nullable=False),
        sa.Column("service_id", sa.Integer, sa.ForeignKey("services.id"), nullable=False),
        sa.Column("version", sa.String(200), nullable=False),
        sa.Column("commit", sa.String(100), nullable=True),
        sa.Column("link", sa.String(2000), nullable=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("refs", sa.Text, nullable=False),
        sa.Column("rollback", sa.Boolean, nullable=False),
        sa.Column("previous_id", sa.Integer, nullable=True),
        sa.Column("verification", sa.Text, nullable=True),
        sa.Column("verified", sa.String(10), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("deploys_by_service", "deploys", ["environment_id", "service_id", "id"])
    with op.batch_alter_table("environment_settings") as batch:
        batch.add_column(sa.Column("on_deploy_rollback", sa.String(10), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("environment_settings") as batch:
        batch.drop_column("on_deploy_rollback")
    op.drop_index("deploys_by_service", "deploys")
    op.drop_table("deploys")
    op.drop_table("services")
