"""Dark-launch experiments: the latest mismatch examples per environment and experiment.

The experiments' counts and durations need no table: they are kept in the
metric windows of 0006 (flag = the experiment, metrics named ``$experiment.*``),
with an index by environment and metric so that listing an environment's
experiments reads their windows only.
No foreign key, as for the other telemetry tables (0004, 0006). On SQLite
the table lives in the events file (created there by store/events.py); it is
made here too so that the schema stays the one tables.py describes.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    op.create_index(
        "metric_windows_by_metric", "metric_windows", ["environment_id", "metric", "start"]
    )
    op.create_table(
        "experiment_examples",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("environment_id", sa.Integer, nullable=False),
        sa.Column("experiment", sa.String(200), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("context", sa.String(200), nullable=True),
        sa.Column("control", sa.Text, nullable=False),
        sa.Column("candidate", sa.Text, nullable=False),
    )
    op.create_index(
        "experiment_examples_latest",
        "experiment_examples",
        ["environment_id", "experiment", "id"],
    )
