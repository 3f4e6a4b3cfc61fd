"""Event counts without a foreign key to environments.

Writing a count under that key locked the environment's row (KEY SHARE on
PostgreSQL), the row every flag write locks: a flood of events made kill
switches wait. On SQLite the counts now live in a file of their own (moved
there at start by store/events.py); the table here is rebuilt alike so the
schema stays the one tables.py describes.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"

_COLUMNS = "environment_id, minute, flag, variant, metric, count, total"


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for key in sa.inspect(bind).get_foreign_keys("event_counts"):
            if key["name"]:  # PostgreSQL names every constraint
                op.drop_constraint(key["name"], "event_counts", type_="foreignkey")
        return
    # SQLite cannot drop a constraint: build the table again without it
    op.create_table(
        "event_counts_new",
        sa.Column("environment_id", sa.Integer, nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("flag", sa.String(200), nullable=False),
        sa.Column("variant", sa.String(200), nullable=False),
        sa.Column("metric", sa.String(200), nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("total", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("environment_id", "minute", "flag", "variant", "metric"),
    )
    op.execute(f"INSERT INTO event_counts_new ({_COLUMNS}) SELECT {_COLUMNS} FROM event_counts")  # noqa: S608
    op.drop_table("event_counts")
    op.rename_table("event_counts_new", "event_counts")
