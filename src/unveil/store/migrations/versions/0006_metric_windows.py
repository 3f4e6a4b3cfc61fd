"""The judge's metrics: counts, sums and histogram buckets per 10-second window.

No foreign keys, as for event_counts (0004): telemetry never locks the
environment's row. On SQLite the tables live in the events file (created
there by store/events.py); they are made here too so that the schema stays
the one tables.py describes.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"

_KEY = ["environment_id", "flag", "metric", "seconds", "start", "variant"]


def _key_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("environment_id", sa.Integer, nullable=False),
        sa.Column("flag", sa.String(200), nullable=False),
        sa.Column("metric", sa.String(200), nullable=False),
        sa.Column("seconds", sa.Integer, nullable=False),
        sa.Column("start", sa.BigInteger, nullable=False),
        sa.Column("variant", sa.String(200), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "metric_windows",
        *_key_columns(),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("total", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint(*_KEY),
    )
    op.create_index("metric_windows_by_age", "metric_windows", ["seconds", "start"])
    op.create_table(
        "metric_buckets",
        *_key_columns(),
        sa.Column("bucket", sa.Integer, nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint(*_KEY, "bucket"),
    )
    op.create_index("metric_buckets_by_age", "metric_buckets", ["seconds", "start"])
