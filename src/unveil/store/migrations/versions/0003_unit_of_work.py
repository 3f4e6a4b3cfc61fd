"""The outbox, jobs, the leadership epoch; unique token names kept after revoking; longer targets.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("audit_id", sa.Integer, sa.ForeignKey("audit.id"), nullable=False, unique=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(50), nullable=False),
        sa.Column("environment_id", sa.Integer, nullable=True),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(100), nullable=False),
        sa.Column("key", sa.String(300), nullable=True, unique=True),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("epoch", sa.BigInteger, nullable=True),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("jobs_due", "jobs", ["state", "run_at"])
    op.create_table(
        "leadership",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("node", sa.String(64), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("audit") as batch:  # "project/flag" targets fit
        batch.alter_column("target", type_=sa.String(400), existing_nullable=False)
    # Token names become unique: older duplicates are told apart by their id.
    tokens = sa.table("tokens", sa.column("id", sa.Integer), sa.column("name", sa.String))
    connection = op.get_bind()
    seen: set[str] = set()
    for row in connection.execute(sa.select(tokens.c.id, tokens.c.name).order_by(tokens.c.id)):
        name = row.name
        if name in seen:
            name = f"{row.name[:180]} #{row.id}"
            connection.execute(tokens.update().where(tokens.c.id == row.id).values(name=name))
        seen.add(name)
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_unique_constraint("uq_tokens_name", ["name"])


def downgrade() -> None:
    with op.batch_alter_table("audit") as batch:
        batch.alter_column("target", type_=sa.String(200), existing_nullable=False)
    with op.batch_alter_table("tokens") as batch:
        batch.drop_constraint("uq_tokens_name", type_="unique")
        batch.drop_column("revoked_at")
    op.drop_table("leadership")
    op.drop_index("jobs_due", "jobs")
    op.drop_table("jobs")
    op.drop_table("outbox")
